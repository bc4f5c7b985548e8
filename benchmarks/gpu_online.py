"""GRPO with vLLM rollouts on one GPU, and the check that the engine samples from the policy's current weights.

Usage:
    python benchmarks/gpu_online.py --out DIR          # one CUDA GPU with vllm installed (fits ~8 min on an H200)
    python benchmarks/gpu_online.py --smoke --out DIR  # CPU, tiny model, no vLLM: under a minute

GPU mode builds a random-init Llama of Qwen2.5-0.5B's body (hidden 896, 24 layers, 14 heads, 2 kv
heads, intermediate 4864, tied embeddings) with the toy tokenizer's vocabulary (no downloads), saved
in bf16, and trains it with harness's online loop (``harness.train.online.OnlineTrainer``): GRPO on
``toy://arith-prompts`` rewarded by the arith verifier, bf16 autocast over fp32 master weights, the
rollouts sampled by ``harness.train.vllm_rollouts.VllmRollouts`` (weights pushed before each
rollout).  Each iteration prints its weight-sync, generation, scoring and update seconds.

Then the weight-sync check.  One optimizer step the engine has not seen (AdamW, ``--nudge-lr``, on
the NLL of one batch of samples: a random-init policy rewarded by a verifier mostly gets zero
advantages, so the GRPO updates may not move it) makes the engine's weights stale.  The engine
samples ``check_prompts`` completions at temperature 1 with ``logprobs=0`` (vLLM returns the sampled
token's log-prob), and the training model scores the same tokens (``completion_logps``); the max and
mean absolute differences are printed BEFORE the sync (stale weights: the check must see them
differ) and AFTER it (within the bf16 tolerance ``--tol-mean`` / ``--tol-max``).

Smoke mode runs the same code at toy size on the CPU in fp32 with a stand-in engine (``CopyEngine``:
a copy of the policy, synced by ``load_state_dict``, sampling through transformers): everything but
vLLM itself.  After the sync its log-probs equal the policy's exactly.

Results: ``DIR/gpu_online.json``.  Exit status 0 when the check passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {
    "gpu": {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate": 4864, "prompts": 16,
            "group": 8, "new_tokens": 64, "iterations": 4, "max_length": 256, "check_prompts": 32},
    "smoke": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128, "prompts": 2,
              "group": 4, "new_tokens": 8, "iterations": 2, "max_length": 96, "check_prompts": 4},
}
# bf16 keeps 8 bits of mantissa: two bf16 forward passes of the same weights (vLLM's kernels and the training
# model's autocast) differ by about 1e-2 in a token's log-prob on average, by a few tenths at worst.
TOLERANCE = {"gpu": (0.02, 0.25), "smoke": (1e-6, 1e-5)}


def build_model(size: dict, out: Path, dtype: torch.dtype):
    """A random-init Llama of ``size`` with the toy tokenizer, saved under ``out``; returns the tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=size["hidden"], intermediate_size=size["intermediate"],
                         num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                         num_key_value_heads=size["kv_heads"], max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).to(dtype).save_pretrained(out)
    tok.save_pretrained(out)
    return tok


class CopyEngine:
    """Smoke mode's stand-in for the vLLM engine: a copy of the policy, synced by ``load_state_dict``."""

    name = "transformers"  # it samples through transformers (a copy of the policy, synced like an engine)

    def __init__(self, policy, tokenizer):
        self.model, self.tokenizer = copy.deepcopy(policy).eval(), tokenizer

    def sync(self, policy) -> None:
        self.model.load_state_dict(policy.state_dict())

    def generate(self, prompts, settings, progress=False, desc="rollout"):
        from harness.eval.backends import TransformersGenerator

        return TransformersGenerator(self.model, self.tokenizer).generate(prompts, settings, progress, desc)

    def sampled_logps(self, prompts, settings) -> list[tuple[list[int], list[float]]]:
        """(sampled tokens, the engine's log-prob of each) for one sample of each prompt."""
        samples = [c[0].token_ids for c in self.generate(prompts, settings)]
        return list(zip(samples, [lp.tolist() for lp in training_logps(self.model, prompts, samples, "cpu", "no")]))

    def close(self) -> None:
        self.model = None


def vllm_sampled_logps(engine, prompts, settings) -> list[tuple[list[int], list[float]]]:
    """(sampled tokens, vLLM's log-prob of each) for one sample of each prompt (``SamplingParams(logprobs=0)``:
    the sampled token's own log-prob, of the raw logits; the check samples at temperature 1, where raw and
    processed agree)."""
    params = engine.sampling_params(settings, len(prompts), logprobs=0)
    outs = engine.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False,
                               lora_request=engine.lora_request)
    result = []
    for out in outs:
        o = out.outputs[0]
        tokens = list(o.token_ids)[: len(o.logprobs)]
        result.append((tokens, [float(step[t].logprob) for t, step in zip(tokens, o.logprobs)]))
    return result


def training_logps(model, prompts, completions, device, mixed: str) -> list[torch.Tensor]:
    """The training model's log-prob of each completion token (temperature 1), per sample [len(completion)]."""
    from harness.train.precision import autocast
    from harness.train.rollout import completion_logps, sequence_batch

    with torch.no_grad(), autocast(mixed, device):
        batch = sequence_batch(prompts, [c if c else [0] for c in completions], 0).to(device)
        logps, _ = completion_logps(model, batch)
    return [logps[i, : len(c)].float().cpu() for i, c in enumerate(completions)]


def logp_gap(trainer, sampled, prompts, device, mixed) -> dict:
    """Max and mean |engine log-prob - training log-prob| over every sampled token."""
    ours = training_logps(trainer.policy, prompts, [t for t, _ in sampled], device, mixed)
    diffs = torch.cat([(torch.tensor(lp) - o).abs() for (_, lp), o in zip(sampled, ours)])
    return {"max_abs": diffs.max().item(), "mean_abs": diffs.mean().item(), "tokens": diffs.numel()}


def nudge(trainer, prompts, sampled, lr: float, device, mixed) -> float:
    """One AdamW step on the NLL of ``sampled`` that the engine has not seen; returns the largest weight change."""
    from harness.train.precision import autocast
    from harness.train.rollout import completion_logps, sequence_batch

    policy = trainer.policy
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    policy.train()
    with autocast(mixed, device):
        batch = sequence_batch(prompts, [t for t, _ in sampled], 0).to(device)
        logps, _ = completion_logps(policy, batch)
        loss = -(logps * batch.completion_mask).sum() / batch.completion_mask.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    policy.eval()
    return max((p.detach() - before[n]).abs().max().item() for n, p in policy.named_parameters())


def train(trainer, iterations: int) -> list[dict]:
    """``iterations`` GRPO iterations, each printed: seconds per phase, reward, and how far the weights moved."""
    rows = []
    for it, index in enumerate(trainer.plan[:iterations], start=1):
        before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
        m = trainer.iterate(it, index, want_logs=True)
        moved = max((p.detach() - before[n]).abs().max().item() for n, p in trainer.policy.named_parameters())
        row = {"iteration": it, "weight_sync_s": m.get("weight_sync_s", 0.0), "generation_s": m["generation_s"],
               "scoring_s": m["scoring_s"], "update_s": m["update_s"], "reward_mean": m["reward/mean"],
               "response_length": m["response_length"], "max_weight_change": moved}
        rows.append(row)
        print(f"iter {it}: sync {row['weight_sync_s']:.2f}s  generate {row['generation_s']:.2f}s  "
              f"score {row['scoring_s']:.2f}s  update {row['update_s']:.2f}s  reward {row['reward_mean']:.3f}  "
              f"length {row['response_length']:.1f}  max |dw| {moved:.2e}", flush=True)
    return rows


def run(args) -> dict:
    from harness.config.spec import GenerationSpec
    from harness.data.load import load_rows
    from harness.methods.registry import METHODS
    from harness.train.loop import Callbacks
    from harness.train.models import load_model
    from harness.train.online import OnlineTrainer
    from harness.train.plan import TrainConfig
    from harness.train.rewards import VerifierReward
    from harness.train.rollout import encode_prompts

    mode = "smoke" if args.smoke else "gpu"
    size, (tol_mean, tol_max) = SIZES[mode], (args.tol_mean or TOLERANCE[mode][0], args.tol_max or TOLERANCE[mode][1])
    device, mixed = ("cpu", "no") if args.smoke else ("cuda", "bf16")
    work = Path(tempfile.mkdtemp(prefix="gpu-online-"))
    t0 = time.perf_counter()
    tok = build_model(size, work / "model", torch.float32 if args.smoke else torch.bfloat16)
    rows = load_rows("toy://arith-prompts", "eval")[: size["prompts"] * size["iterations"] + size["check_prompts"]]
    prompts = encode_prompts(tok, rows, size["max_length"], None, "keep_end_of_prompt", size["new_tokens"])
    policy = load_model(str(work / "model"), torch.float32).to(device)
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"{mode}: {n_params / 1e6:.1f}M parameters, built in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    if args.smoke:
        engine, sampled_logps = CopyEngine(policy, tok), CopyEngine.sampled_logps
    else:
        from harness.train.vllm_rollouts import VllmRollouts

        engine = VllmRollouts(str(work / "model"), tok, size["max_length"], seed=0, gpu_memory_utilization=0.3,
                              enforce_eager=args.enforce_eager)
        sampled_logps = vllm_sampled_logps
    startup_s = time.perf_counter() - t0
    print(f"engine {engine.name}: started in {startup_s:.1f}s", flush=True)
    params = {**METHODS["grpo"].params, "group_size": size["group"], "max_new_tokens": size["new_tokens"],
              "reward": {"verifier": "arith"}}
    cfg = TrainConfig(lr=args.lr, batch_size=size["prompts"], max_steps=size["iterations"], shuffle=False,
                      scheduler="constant", warmup_ratio=0.0, mixed_precision=mixed)
    trainer = OnlineTrainer(policy, tok, METHODS["grpo"], params, prompts, cfg, VerifierReward("arith"),
                            callbacks=Callbacks(progress=False), generator=engine)
    iterations = train(trainer, size["iterations"])
    check_ids = prompts.ids[-size["check_prompts"]:]
    settings = GenerationSpec(max_new_tokens=size["new_tokens"], temperature=1.0, top_p=1.0, n=1, seed=12345)
    engine.sync(trainer.policy)
    nudged = nudge(trainer, check_ids, sampled_logps(engine, check_ids, settings), args.nudge_lr, device, mixed)
    stale = logp_gap(trainer, sampled_logps(engine, check_ids, settings), check_ids, device, mixed)
    engine.sync(trainer.policy)
    synced = logp_gap(trainer, sampled_logps(engine, check_ids, settings), check_ids, device, mixed)
    engine.close()
    passed = synced["mean_abs"] <= tol_mean and synced["max_abs"] <= tol_max
    shows_stale = stale["mean_abs"] > tol_mean
    print(f"nudge: one unseen AdamW step (lr {args.nudge_lr:g}) moved a weight by up to {nudged:.2e}")
    print(f"before sync (stale): max |dlogp| {stale['max_abs']:.4f}  mean {stale['mean_abs']:.4f}  "
          f"over {stale['tokens']} tokens -> {'differs, as it must' if shows_stale else 'NOT above tolerance'}")
    print(f"after sync:          max |dlogp| {synced['max_abs']:.4f}  mean {synced['mean_abs']:.4f}  "
          f"over {synced['tokens']} tokens (tolerance mean {tol_mean:g}, max {tol_max:g}) -> "
          f"{'PASS' if passed else 'FAIL'}")
    return {"mode": mode, "parameters": n_params, "engine": engine.name, "engine_startup_s": startup_s,
            "iterations": iterations, "nudge_max_weight_change": nudged, "stale": stale, "synced": synced,
            "tolerance": {"mean_abs": tol_mean, "max_abs": tol_max}, "passed": passed,
            "stale_detected": shows_stale}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy size, a stand-in engine instead of vLLM")
    parser.add_argument("--out", type=Path, default=Path("gpu_online_out"))
    parser.add_argument("--lr", type=float, default=1e-5, help="GRPO's learning rate")
    parser.add_argument("--nudge-lr", type=float, default=1e-3, help="the unseen step's learning rate")
    parser.add_argument("--tol-mean", type=float, default=None, help="mean |dlogp| allowed after the sync")
    parser.add_argument("--tol-max", type=float, default=None, help="max |dlogp| allowed after the sync")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                        help="vLLM without CUDA graphs (a faster start-up)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    result["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_online.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wall {result['wall_s']:.1f}s; {args.out / 'gpu_online.json'}")
    return 0 if result["passed"] and result["stale_detected"] else 1


if __name__ == "__main__":
    sys.exit(main())
