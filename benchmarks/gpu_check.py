"""The GPU path, measured: bf16 SFT/DPO with MFU, harness vs TRL, vLLM vs transformers, QLoRA, a vLLM judge.

Usage:
    python benchmarks/gpu_check.py --out DIR            # on a CUDA machine (about 5 minutes on one H200)
    python benchmarks/gpu_check.py --cpu-smoke --out DIR  # every part at toy size on CPU (runs in make test)

The parent builds one random-init Llama of the "0.5B" shape (hidden 1024, 24 layers, 16 heads,
intermediate 4096, vocab 32k; about 0.47B parameters) with the toy tokenizer, and generated data,
all saved locally (no downloads).  Each part runs in a child process of its own, so one part's
failure or GPU memory does not touch another, and writes one JSON line:

1. ``sft`` and ``dpo``: harness's own stage (``harness.train.stages.train_stage``) in bf16 autocast
   with fp32 master weights; steady-state step time, tokens/s and MFU.  MFU = model FLOPs of the
   training step / (step time x the device's dense bf16 peak), with the model FLOPs of a sequence of
   T tokens taken as 6·N·T + 12·L·d·T² (PaLM, Chowdhery et al. 2022, appendix B: N the parameters of
   the matrix multiplies, lm_head included, L layers, d the model width); padding is not counted.
   DPO counts the policy's chosen and rejected sequences; harness computes the reference once up front
   (timed separately, ``reference_s``).  ``first_loss`` at policy = reference must be ln 2.
   ``dpo`` runs ``train.pair_forward: auto`` (the shared-prompt rows under sdpa, whose 4D mask rules out
   the flash kernels on CUDA); ``dpo_padded`` the same stage with ``padded`` rows (the prompt computed
   twice): which layout is faster on the GPU is their step-time ratio.
2. ``trl_dpo``: TRL's DPOTrainer on the same model, data, batch and precision (it runs the reference
   forward inside every step, its default); ``ratio`` = TRL step time / harness step time.
3. ``generate``: 512 prompts x 128 new tokens through harness's generation backends: transformers
   ``generate`` (bf16 weights, batches of 64) and vLLM when it is installed; tokens/s and the ratio.
4. ``agreement``: greedy outputs of vLLM and transformers on the same prompts, token by token.
5. ``qlora``: a DPO stage with ``lora.quantize: nf4`` (and the same stage with bf16 LoRA for
   comparison): peak memory and step time.  On CPU it must be refused with one line.
6. ``judge``: ``harness judge`` with ``judge.backend: vllm`` (the random model as judge) on 64
   pairwise prompts: wall time and judged prompts per second.  Needs the ``vllm`` command.

Results: ``DIR/gpu_check.json`` and the markdown table ``DIR/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Dense bf16 peak by device name (vendor data sheets, SXM parts, no sparsity), in FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}
CPU_PEAK_NOTE = "no bf16 peak on CPU: MFU not defined"

SIZES = {  # model shape, data and step counts per mode
    "gpu": {"hidden": 1024, "layers": 24, "heads": 16, "intermediate": 4096, "vocab": 32000, "words": (20, 80),
            "pairs": 512, "sft_batch": 32, "dpo_batch": 16, "steps": 12, "prompts": 512, "new_tokens": 128,
            "gen_batch": 64, "judge_prompts": 64, "max_length": 512},
    "cpu": {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128, "vocab": 512, "words": (4, 8),
            "pairs": 24, "sft_batch": 4, "dpo_batch": 4, "steps": 3, "prompts": 8, "new_tokens": 8, "gen_batch": 4,
            "judge_prompts": 4, "max_length": 96},
}
WORDS = ["alpha", "bravo", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "jasper", "kelp",
         "lumen", "maple", "nectar", "opal", "prism", "quartz", "river", "sable", "tundra"]


# ---------------------------------------------------------------- the world: model and data on disk

def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build_world(out: Path, size: dict) -> dict:
    """A random-init Llama with the toy tokenizer, SFT rows, DPO pairs and eval prompts, saved under ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=size["vocab"], hidden_size=size["hidden"],
                         intermediate_size=size["intermediate"], num_hidden_layers=size["layers"],
                         num_attention_heads=size["heads"], num_key_value_heads=size["heads"],
                         max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model_dir = out / "model"
    model = LlamaForCausalLM(config)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rng = random.Random(0)
    lo, hi = size["words"]
    pairs = [{"prompt": _text(rng, lo), "chosen": _text(rng, hi), "rejected": _text(rng, hi)}
             for _ in range(size["pairs"])]
    sft = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    prompts = [{"id": str(i), "instruction": _text(rng, lo)} for i in range(size["prompts"])]
    files = {"pairs": pairs, "sft": sft, "prompts": prompts}
    for name, rows in files.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    n_matmul = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and p.dim() == 2)
    return {"model_dir": str(model_dir), "dir": str(out), "params": sum(p.numel() for p in model.parameters()),
            "matmul_params": n_matmul}


# ---------------------------------------------------------------- measuring

def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mib() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_flops() -> tuple[float | None, str]:
    import torch

    if not torch.cuda.is_available():
        return None, "cpu"
    name = torch.cuda.get_device_name()
    for key, flops in PEAK_BF16.items():
        if key in name:
            return flops, name
    return None, name


def sequence_flops(lengths: list[int], world: dict, size: dict) -> float:
    """Training FLOPs of sequences of these lengths: sum of 6·N·T + 12·L·d·T² (PaLM, appendix B)."""
    n, layers, d = world["matmul_params"], size["layers"], size["hidden"]
    return float(sum(6 * n * t + 12 * layers * d * t * t for t in lengths))


def step_seconds(times: list[float], steps: list[int] | None = None) -> float:
    """Steady-state seconds per step from the times at which steps ended (the first one is warm-up).

    ``steps`` numbers the steps timed (default 1..N): harness logs (and syncs) only at steps 1,
    N-1 and N (``train.log_every``), so that the per-step logged metrics (entropy) do not slow the rest.
    """
    steps = steps or list(range(1, len(times) + 1))
    return (times[-1] - times[0]) / (steps[-1] - steps[0])


def _stage(world: dict, size: dict, method: str, batch: int, precision: str, lora: dict | None = None,
           checkpointing: bool = False, pair_forward: str = "auto"):
    from harness.config.grid import resolve_stages
    from harness.config.spec import validate_spec

    data = f"{world['dir']}/{'pairs' if method == 'dpo' else 'sft'}.jsonl"
    spec = validate_spec({
        "name": "gpu-check", "model": world["model_dir"], "method": {"name": method},
        "data": {"train": data, "filter": {"drop_identical_pairs": False}},
        "train": {"batch_size": batch, "max_steps": size["steps"], "lr": 1e-6, "scheduler": "constant",
                  "warmup_ratio": 0.0, "max_length": size["max_length"], "log_every": size["steps"] - 1,
                  "save": "none",
                  "precision": precision, "gradient_checkpointing": checkpointing,
                  **({"pair_forward": pair_forward} if method == "dpo" else {})},
        "lora": lora or {"rank": 0},
    })
    (stage,) = resolve_stages(spec)
    return stage


def run_harness(world: dict, size: dict, method: str, precision: str, lora: dict | None = None,
                checkpointing: bool = False, keep: list | None = None, pair_forward: str = "auto") -> dict:
    """One stage through harness's own path, timed by when each step's metrics were logged.

    ``keep`` (a list) receives the trained model.
    """
    import torch

    from harness.train.stages import train_stage

    batch = size["dpo_batch" if method == "dpo" else "sft_batch"]
    stage = _stage(world, size, method, batch, precision, lora, checkpointing, pair_forward)
    lengths = _lengths(stage, world)  # per sequence; a DPO pair is two
    ends, steps, losses, marks = [], [], [], {}

    def log(metrics: dict, step: int) -> None:
        if "train/loss" in metrics:
            _sync()
            ends.append(time.perf_counter())
            steps.append(step)
            losses.append(metrics["train/loss"])
        if "train/reference_passes" in metrics:
            marks["prepared"] = time.perf_counter()

    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        model, _, _ = train_stage(stage, world["model_dir"], "gpu-check", Path(cache), log, True, progress=False)
    if keep is not None:
        keep.append(model)
    wall = time.perf_counter() - start
    step_s = step_seconds(ends, steps)
    per_example = 2 if method == "dpo" else 1  # sequences per example
    tokens_per_step = sum(lengths) / len(lengths) * per_example * batch
    flops = sequence_flops(lengths, world, size) / len(lengths) * per_example * batch
    return {"steps": steps[-1], "step_s": step_s, "tokens_per_s": tokens_per_step / step_s,
            "flops_per_step": flops, "first_loss": losses[0], "last_loss": losses[-1], "wall_s": wall,
            "reference_s": marks.get("prepared", start) - start, "peak_mib": _peak_mib()}


def _lengths(stage, world: dict) -> list[int]:
    """Token counts per trained sequence (prompt + response + EOS), as harness encodes them."""
    from harness.train.models import load_tokenizer
    from harness.train.stages import prepare_data

    data = prepare_data(stage, load_tokenizer(world["model_dir"]))
    out = []
    for e in data.train:
        for ids in _sequences(e):
            out.append(len(ids))
    return out


def _sequences(example) -> list[list[int]]:
    """The full sequences an example trains on: prompt + response (SFT), prompt + each answer (pairs)."""
    if hasattr(example, "chosen_ids"):
        return [example.prompt_ids + example.chosen_ids, example.prompt_ids + example.rejected_ids]
    return [example.prompt_ids + example.response_ids]


def run_trl(world: dict, size: dict) -> dict:
    """TRL's DPOTrainer on the same model and pairs; end time of each step from a callback."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from harness.train.models import load_model, load_tokenizer

    rows = [json.loads(line) for line in Path(world["dir"], "pairs.jsonl").read_text().splitlines()]
    ends, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    on_gpu = torch.cuda.is_available()
    config = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=size["dpo_batch"],
                       max_steps=size["steps"], learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0,
                       beta=0.1, max_length=size["max_length"], report_to=[], save_strategy="no",
                       logging_steps=1, use_cpu=not on_gpu, bf16=on_gpu, gradient_checkpointing=False, seed=0,
                       dataloader_num_workers=0, disable_tqdm=True)
    torch.cuda.reset_peak_memory_stats() if on_gpu else None
    start = time.perf_counter()
    trainer = DPOTrainer(model=load_model(world["model_dir"]), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(world["model_dir"]), callbacks=[Clock()])
    trainer.train()
    return {"steps": len(ends), "step_s": step_seconds(ends), "first_loss": losses[0] if losses else None,
            "wall_s": time.perf_counter() - start, "peak_mib": _peak_mib()}


def _prompt_ids(world: dict, size: dict) -> list[list[int]]:
    from harness.data.tokenization import encode_prompt
    from harness.train.models import load_tokenizer

    tok = load_tokenizer(world["model_dir"])
    rows = [json.loads(line) for line in Path(world["dir"], "prompts.jsonl").read_text().splitlines()]
    return [encode_prompt(tok, r["instruction"]) for r in rows][: size["prompts"]]


def _settings(size: dict):
    from harness.config.spec import GenerationSpec

    return GenerationSpec(max_new_tokens=size["new_tokens"], temperature=0.0)


def _generate_with(generator, prompts, size) -> tuple[list, float]:
    _sync()
    start = time.perf_counter()
    out = generator.generate(prompts, _settings(size), progress=False)
    _sync()
    return out, time.perf_counter() - start


def run_generate(world: dict, size: dict) -> dict:
    """transformers (bf16 on GPU) and, where installed, vLLM generation of the same prompts."""
    import torch

    from harness.eval.backends import TransformersGenerator, resolve_backend
    from harness.train.models import device, load_model, load_tokenizer

    prompts = _prompt_ids(world, size)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tok = load_tokenizer(world["model_dir"])
    model = load_model(world["model_dir"], dtype).to(device()).eval()
    with TransformersGenerator(model, tok, batch_size=size["gen_batch"]) as gen:
        _generate_with(gen, prompts[: size["gen_batch"]], {**size, "new_tokens": 4})  # warm-up
        hf_out, hf_s = _generate_with(gen, prompts, size)
    hf_tokens = sum(c.num_tokens for samples in hf_out for c in samples)
    result = {"prompts": len(prompts), "transformers_tokens": hf_tokens, "transformers_s": hf_s,
              "transformers_tokens_per_s": hf_tokens / hf_s}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        resolve_backend("vllm")
    except Exception as exc:  # noqa: BLE001 - the reason vLLM cannot run here, recorded as the result
        result["vllm"] = f"skipped: {exc}"
        return result
    from harness.data.tokenization import common_prefix_length
    from harness.eval.backends import VllmGenerator

    with VllmGenerator(world["model_dir"], tok) as gen:
        _generate_with(gen, prompts[:8], {**size, "new_tokens": 4})
        v_out, v_s = _generate_with(gen, prompts, size)
    v_tokens = sum(c.num_tokens for samples in v_out for c in samples)
    same = [a[0].token_ids == b[0].token_ids for a, b in zip(hf_out, v_out)]
    common = [common_prefix_length(a[0].token_ids, b[0].token_ids) / max(len(a[0].token_ids), 1)
              for a, b in zip(hf_out, v_out)]
    result.update(vllm_tokens=v_tokens, vllm_s=v_s, vllm_tokens_per_s=v_tokens / v_s,
                  ratio=(v_tokens / v_s) / (hf_tokens / hf_s), greedy_identical=sum(same) / len(same),
                  greedy_prefix_agreement=sum(common) / len(common))
    return result


def run_qlora(world: dict, size: dict) -> dict:
    """A DPO stage under QLoRA and under bf16 LoRA: peak memory and step time (refused on CPU)."""
    import torch

    from harness.errors import HarnessError

    lora = {"rank": 16, "quantize": "nf4"}
    if not torch.cuda.is_available():
        try:
            run_harness(world, size, "dpo", "fp32", lora)
        except HarnessError as exc:
            return {"refused": str(exc)}
        return {"refused": None}
    kept: list = []
    out = run_harness(world, size, "dpo", "bf16", lora, keep=kept)
    out.update(_qlora_merge(kept[0], world))
    return out


def _qlora_merge(model, world: dict) -> dict:
    """Merge the QLoRA adapter into the unquantized base (as a sweep saves it) and compare next-token
    log-probs with the 4-bit model + adapter: they differ by the 4-bit rounding of the base only."""
    import torch

    from harness.train.models import merged

    ids = torch.tensor([_prompt_ids(world, {"prompts": 4})[0]], device="cuda")
    start = time.perf_counter()
    plain = merged(model, world["model_dir"])
    merge_s = time.perf_counter() - start
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
        b = torch.log_softmax(plain(input_ids=ids).logits.float(), -1)
    return {"merge_s": merge_s, "merged_dtype": str(next(plain.parameters()).dtype),
            "max_abs_logprob_diff_4bit_vs_merged": float((a - b).abs().max())}


def run_lora(world: dict, size: dict) -> dict:
    import torch

    precision = "bf16" if torch.cuda.is_available() else "fp32"
    return run_harness(world, size, "dpo", precision, {"rank": 16})


def run_judge(world: dict, size: dict) -> dict:
    """``harness judge`` with judge.backend vllm on pairwise prompts (needs the vllm command)."""
    if shutil.which("vllm") is None:
        return {"skipped": "the vllm command is not installed on this machine"}
    rng = random.Random(1)
    n = size["judge_prompts"]
    out = Path(world["dir"])
    for name in ("model", "base"):
        rows = [{"id": str(i), "instruction": f"question {i}: {_text(rng, 8)}", "output": _text(rng, 30),
                 "generator": name} for i in range(n)]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "harness.cli", "judge", "--outputs", str(out / "model.jsonl"), "--baseline",
           str(out / "base.jsonl"), "--suite", "pairwise", "--set", "judge.backend=vllm", "--judge-model",
           world["model_dir"], "--format", "json", "--no-track", "--results-dir", str(out / "results")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:]}
    return {"prompts": n, "wall_s": wall, "judged_prompts_per_s": n / wall, "result": json.loads(proc.stdout)}


def _dpo_parts(world, size, pair_forward: str = "auto"):
    import torch

    return run_harness(world, size, "dpo", "bf16" if torch.cuda.is_available() else "fp32",
                       pair_forward=pair_forward)


def _sft_parts(world, size):
    import torch

    return run_harness(world, size, "sft", "bf16" if torch.cuda.is_available() else "fp32")


def run_sft_checkpointing(world, size):
    """The SFT stage again with gradient checkpointing: memory saved for the recompute's time."""
    import torch

    return run_harness(world, size, "sft", "bf16" if torch.cuda.is_available() else "fp32", checkpointing=True)


def run_profile(world: dict, size: dict) -> dict:
    """Where a training step's time goes: a bare bf16 matmul, the model's own forward+backward on one
    batch (with and without a padding mask), and the top CUDA kernels of three harness SFT steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness.train.models import device, load_model

    dev = device()
    out: dict = {}
    if dev.type == "cuda":
        a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        for _ in range(3):
            a @ a
        _sync()
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        _sync()
        out["matmul_8192_tflops"] = 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
        del a
    model = load_model(world["model_dir"]).to(dev).train()
    batch, length = size["sft_batch"], size["max_length"] - 40
    ids = torch.randint(0, 384, (batch, length), device=dev)
    masks = {"no_mask": None, "padding_mask": torch.ones_like(ids).tril(length - 1)}
    masks["padding_mask"][:, -10:] = 0
    flops = sequence_flops([length] * batch, world, size)
    for name, mask in masks.items():
        times = []
        for _ in range(5):
            _sync()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(input_ids=ids, attention_mask=mask).logits
            logits.float().logsumexp(-1).mean().backward()
            _sync()
            times.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        step = sum(times[2:]) / len(times[2:])
        out[f"model_fwd_bwd_{name}_s"] = step
        out[f"model_fwd_bwd_{name}_tflops"] = flops / step / 1e12
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model(input_ids=ids, attention_mask=masks["padding_mask"]).logits
        logits.float().logsumexp(-1).mean().backward()
        _sync()
    def own_ms(e) -> float:  # torch >= 2.4 names it device time; older versions cuda time
        if dev.type != "cuda":
            return e.self_cpu_time_total / 1e3
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) / 1e3

    events = sorted(prof.key_averages(), key=own_ms, reverse=True)[:12]
    out["top_ops"] = [(e.key[:60], round(own_ms(e), 2), e.count) for e in events]
    out["profiled_cpu_ms"] = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3
    return out


PARTS = {"sft": _sft_parts, "sft_checkpointing": run_sft_checkpointing, "dpo": _dpo_parts,
         "dpo_padded": functools.partial(_dpo_parts, pair_forward="padded"), "trl_dpo": run_trl, "generate": run_generate,
         "qlora": run_qlora, "lora": run_lora, "judge": run_judge, "profile": run_profile}


# ---------------------------------------------------------------- the parent: children, JSON, markdown

def _child(part: str, world: dict, mode: str, timeout_s: float) -> dict:
    cmd = [sys.executable, __file__, "--child", part, "--world", json.dumps(world), "--mode", mode]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    result = json.loads(lines[-1])
    result["child_s"] = time.perf_counter() - start
    return result


def summarize(results: dict, world: dict, peak: float | None, device: str) -> dict:
    """The headline numbers: MFU, ratios, agreement, memory, judge throughput."""
    s: dict = {"device": device, "params": world["params"], "peak_bf16_flops": peak}
    for part in ("sft", "sft_checkpointing", "dpo", "dpo_padded"):
        r = results.get(part, {})
        if "step_s" in r:
            s[f"{part}_tokens_per_s"] = r["tokens_per_s"]
            s[f"{part}_mfu"] = r["flops_per_step"] / r["step_s"] / peak if peak else None
    dpo, trl, padded = results.get("dpo", {}), results.get("trl_dpo", {}), results.get("dpo_padded", {})
    if "step_s" in dpo and "step_s" in padded:  # above 1: the shared-prompt layout is the faster one
        s["dpo_step_ratio_padded_over_shared"] = padded["step_s"] / dpo["step_s"]
        s["dpo_last_loss_shared_minus_padded"] = dpo["last_loss"] - padded["last_loss"]
    if "step_s" in dpo and "step_s" in trl:
        s["dpo_step_ratio_trl_over_harness"] = trl["step_s"] / dpo["step_s"]
        s["dpo_first_loss"], s["trl_first_loss"] = dpo["first_loss"], trl["first_loss"]
        s["dpo_first_loss_minus_ln2"] = dpo["first_loss"] - math.log(2)
    gen = results.get("generate", {})
    s["generation_ratio_vllm_over_transformers"] = gen.get("ratio", gen.get("vllm"))
    s["transformers_tokens_per_s"] = gen.get("transformers_tokens_per_s")
    s["greedy_identical"] = gen.get("greedy_identical")
    qlora, lora = results.get("qlora", {}), results.get("lora", {})
    s["qlora_peak_mib"] = qlora.get("peak_mib", qlora.get("refused", qlora.get("error")))
    s["qlora_step_s"] = qlora.get("step_s")
    s["lora_bf16_peak_mib"] = lora.get("peak_mib")
    s["lora_bf16_step_s"] = lora.get("step_s")
    s["sft_checkpointing_peak_mib"] = results.get("sft_checkpointing", {}).get("peak_mib")
    s["sft_peak_mib"] = results.get("sft", {}).get("peak_mib")
    judge = results.get("judge", {})
    s["judge_prompts_per_s"] = judge.get("judged_prompts_per_s", judge.get("skipped", judge.get("error")))
    return s


def markdown(summary: dict, results: dict, when: str) -> str:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "—" if v is None else str(v).replace("\n", " ")[:160]

    lines = [f"gpu_check on {summary['device']}, {when}", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in summary.items()]
    lines += ["", "| part | result |", "| --- | --- |"]
    for part, r in results.items():
        shown = {k: v for k, v in r.items() if k != "result"}
        lines.append(f"| {part} | {fmt(json.dumps(shown, default=str))[:400]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at toy size on CPU")
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--parts", default=",".join(p for p in PARTS if p != "profile"),
                        help=f"comma-separated subset of {list(PARTS)} (profile: on request)")
    parser.add_argument("--child", choices=list(PARTS))
    parser.add_argument("--world")
    parser.add_argument("--mode", choices=list(SIZES), default="gpu")
    parser.add_argument("--part-timeout", type=float, default=240.0)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(PARTS[args.child](json.loads(args.world), SIZES[args.mode]), default=str))
        return
    import torch

    mode = "cpu" if args.cpu_smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --cpu-smoke")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peak, device = peak_flops()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        world = build_world(Path(tmp), SIZES[mode])
        print(f"world built in {time.perf_counter() - start:.1f} s: {world['params'] / 1e6:.1f}M parameters",
              flush=True)
        for part in args.parts.split(","):
            results[part] = _child(part, world, mode, args.part_timeout)
            print(f"{part}: {json.dumps(results[part], default=str)[:600]}", flush=True)
    summary = summarize(results, world, peak, device)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (out / "gpu_check.json").write_text(json.dumps({"summary": summary, "parts": results, "when": when,
                                                    "mode": mode}, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(summary, results, when))
    print(markdown(summary, results, when))


if __name__ == "__main__":
    main()
