"""The offline loop: optimizer-step normalization, and reference log-probs across stages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from harness.console import StepLines
from harness.data.load import load_rows, take_fraction
from harness.data.tokenization import encode_pairs, encode_sft
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.inputs import ExampleSet
from harness.train.loop import Callbacks, TrainConfig, train, validation_fn
from harness.train.models import load_model, load_tokenizer, user_cache_dir


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = toy_model_path("micro", tmp_path_factory.mktemp("cache"))
    return str(path), load_tokenizer(str(path))


def _examples(tokenizer, uri, kind, n):
    rows = take_fraction(load_rows(uri, kind), 0.005, 0)[:n]
    encode = encode_sft if kind == "sft" else encode_pairs
    return encode(tokenizer, rows, 64)[0]


def _one_step(path, tokenizer, method, params, examples, batch_size, grad_accum, ref=None):
    # float64, because Adam's first step is ~lr*sign(g): float32 noise on near-zero gradients would dominate.
    model = load_model(path, torch.float64)
    cfg = TrainConfig(lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, max_steps=1, shuffle=False,
                      scheduler="constant", warmup_ratio=0.0, max_grad_norm=1e9)
    result = train(model, METHODS[method], params, ExampleSet(examples, tokenizer.pad_token_id, ref=ref), cfg,
                   Callbacks(progress=False))
    return model, result


def _assert_same_update(path, tok, method, params, examples, big, small, ref=None):
    """One step at (batch, accumulation) ``big`` and ``small`` gives the same loss and weights."""
    model_a, result_a = _one_step(path, tok, method, params, examples, *big, ref)
    model_b, result_b = _one_step(path, tok, method, params, examples, *small, ref)
    assert result_a.last_metrics["loss"] == pytest.approx(result_b.last_metrics["loss"], rel=1e-9)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_grad_accum_matches_one_big_batch_sft(micro, normalization):
    """batch_size b x grad_accum k must give the same update as batch_size k*b (DESIGN.md).

    Response lengths differ between examples, so a per-micro-batch token mean
    would give a different update; only step-wide normalization matches.  The
    micro-batches are uneven (3, 3, 2), so for ``sequence`` a per-micro-batch mean
    averaged over micro-batches would weight the last two examples 1/6 instead of 1/8.
    """
    path, tok = micro
    examples = _examples(tok, "toy://arith-sft", "sft", 8)
    assert len({len(e.response_ids) for e in examples}) > 1
    params = {**METHODS["sft"].params, "loss_normalization": normalization}
    _assert_same_update(path, tok, "sft", params, examples, (8, 1), (3, 3))


def test_grad_accum_matches_one_big_batch_dpo(micro):
    """8 pairs as one batch and as uneven micro-batches of 3, 3 and 2 give the same update."""
    path, tok = micro
    examples = _examples(tok, "toy://arith-pairs", "pairs", 8)
    ref = torch.randn(len(examples), 4, dtype=torch.float64).abs().neg()
    ref[:, 1] = torch.tensor([len(e.chosen_ids) for e in examples], dtype=torch.float64)
    ref[:, 3] = torch.tensor([len(e.rejected_ids) for e in examples], dtype=torch.float64)
    _assert_same_update(path, tok, "dpo", dict(METHODS["dpo"].params), examples, (8, 1), (3, 3), ref)


def _independent_mean_nll(model, examples) -> float:
    """Token-mean NLL of the responses, one sequence at a time, in float64."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex.prompt_ids + ex.response_ids])
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            for pos in range(len(ex.prompt_ids), ids.shape[1]):
                nll -= float(logp[pos - 1, ids[0, pos]])
                count += 1
    return nll / count


def test_train_loss_is_computed_before_the_update(micro):
    """train/loss of step 1 equals the loss of the untouched model on that batch."""
    path, tok = micro
    examples = _examples(tok, "toy://arith-sft", "sft", 4)
    untouched = load_model(path, torch.float64)
    _, result = _one_step(path, tok, "sft", dict(METHODS["sft"].params), examples, 4, 1)
    assert result.last_metrics["loss"] == pytest.approx(_independent_mean_nll(untouched, examples), rel=1e-9)


def test_validation_loss_is_the_held_out_token_mean(micro):
    """val/loss at the last step equals the trained model's token-mean NLL on the held-out set."""
    path, tok = micro
    examples = _examples(tok, "toy://arith-sft", "sft", 12)
    train_set, held_out = examples[:6], examples[6:11]
    method, params = METHODS["sft"], dict(METHODS["sft"].params)
    model = load_model(path, torch.float64)
    cfg = TrainConfig(lr=1e-2, batch_size=2, max_steps=3, eval_every=2, log_every=1)
    logged = []
    validate = validation_fn(method, params, ExampleSet(held_out, tok.pad_token_id), batch_size=2)
    train(model, method, params, ExampleSet(train_set, tok.pad_token_id), cfg,
          Callbacks(log=lambda m, s: logged.append((s, m)), validate=validate, progress=False))
    val = [(step, m) for step, m in logged if "val/loss" in m]
    assert [step for step, _ in val] == [2, 3]
    assert val[-1][1]["val/loss"] == pytest.approx(_independent_mean_nll(model, held_out), rel=1e-9)


def _independent_pair_logps(model, pair) -> list[float]:
    """Sum of log p(response token | prefix) for chosen and rejected, one sequence at a time, in float64."""
    out = []
    for response in (pair.chosen_ids, pair.rejected_ids):
        ids = torch.tensor([pair.prompt_ids + response])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        start = len(pair.prompt_ids)
        out.append(sum(float(logp[p - 1, ids[0, p]]) for p in range(start, ids.shape[1])))
    return out


def test_stage_reference_equals_previous_checkpoint(tmp_path):
    """DPO after a LoRA SFT stage: the reference is the merged SFT checkpoint, not the base."""
    from harness.cli import main

    spec = {
        "name": "reftest", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "train": {"batch_size": 4, "max_length": 64}, "data": {"fraction": 0.003},
        "stages": [
            {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"},
             "train": {"max_steps": 3, "lr": 1e-2}, "lora": {"rank": 4}},
            {"name": "dpo", "method": {"name": "dpo"}, "data": {"train": "toy://arith-pairs"},
             "train": {"max_steps": 1}},
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    cache = tmp_path / "results" / "cache"
    (ref_file,) = list((cache / "reflogps").glob("*.pt"))
    stats = torch.load(ref_file)
    checkpoints = [p / "model" for p in (cache / "stages").iterdir() if p.is_dir()]
    sft_dir = next(p for p in checkpoints if yaml.safe_load((p.parent / "meta.json").read_text())["stage"] == "sft")
    sft_model = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    (micro_dir,) = [p for p in (user_cache_dir() / "toy").glob("micro-*") if p.is_dir()]
    base_model = AutoModelForCausalLM.from_pretrained(micro_dir).eval()
    tok = load_tokenizer(str(sft_dir))
    pairs = encode_pairs(tok, take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.003, 0), 64)[0]
    assert len(pairs) == stats.shape[0]
    for pair, row in list(zip(pairs, stats))[:4]:
        chosen, rejected = _independent_pair_logps(sft_model, pair)
        assert float(row[0]) == pytest.approx(chosen, rel=1e-4)
        assert float(row[2]) == pytest.approx(rejected, rel=1e-4)
        assert int(row[1]) == len(pair.chosen_ids) and int(row[3]) == len(pair.rejected_ids)
        base_chosen, _ = _independent_pair_logps(base_model, pair)
        assert abs(base_chosen - chosen) > 1e-3  # the SFT stage really changed the model


GLOO_METHODS = ["sft", "kto", "iw-sft", "rm", "rm-lora"]


@pytest.fixture(scope="module")
def gloo_runs(micro, tmp_path_factory) -> dict:
    """tests/ddp_worker.py as one process and as two (DDP over gloo), every method in one launch each."""
    import os
    import socket
    import subprocess
    import sys

    path, _ = micro
    runs = {}
    for procs in (1, 2):
        out = tmp_path_factory.mktemp(f"gloo{procs}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
        with socket.socket() as probe:  # a free port: a fixed one collides with concurrent test runs
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(port), str(Path(__file__).parents[1] / "ddp_worker.py"), path, str(out),
               ",".join(GLOO_METHODS)]
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
        runs[procs] = {method: torch.load(out / f"{method}.pt") for method in GLOO_METHODS}
    return runs


@pytest.mark.parametrize("method", GLOO_METHODS)
def test_two_gloo_processes_match_one_process(gloo_runs, method):
    """The same loop as two CPU processes (DDP over gloo) gives the one-process update.

    7 examples, batch 3 x accumulation 3, two steps: micro-batches of 3, 3 and 1
    split 2/1, 2/1 and 1/0, so uneven shards, an empty shard (run at weight 0)
    and step-wide token normalization are all exercised.  For kto the KL
    estimate must come from the mismatched pairs of the whole step (not of one
    process's shard), for iw-sft the weights must be self-normalized over the
    whole step: either done per shard would change the loss and the update.  For rm (plain and
    under a rank-4 LoRA adapter) the hidden states must come through DDP's (and peft's) own
    forward, so the gradients of the backbone and the head are synchronized.
    """
    outputs = {procs: gloo_runs[procs][method] for procs in (1, 2)}
    # accelerate's own view: two processes really shared the work (a torchrun launch that accelerate
    # ignores trains everything in each process and would match one process trivially)
    assert (outputs[1]["world"], outputs[2]["world"]) == (1, 2)
    assert outputs[1]["loss"] == pytest.approx(outputs[2]["loss"], rel=1e-9)
    (one, two) = (outputs[1]["logged"], outputs[2]["logged"])
    assert [step for step, _ in one] == [step for step, _ in two] == [1, 2]
    for (_, a), (_, b) in zip(one, two):
        for key in ("train/loss", "train/kl") if method == "kto" else ("train/loss",):
            assert a[key] == pytest.approx(b[key], rel=1e-9), key
    if method == "kto":
        assert one[0][1]["train/kl"] > 1e-3  # the estimate is not trivially 0
    for a, b in zip(outputs[1]["params"], outputs[2]["params"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_step_denominator_by_hand():
    """Token SFT divides by the step's target tokens; everything else by its examples.

    Two micro-batches: responses of 3 and 1 tokens, then 2 tokens; prompts of 2, 4, 1.
    token: 3 + 1 + 2 = 6; with train_on_prompt each example adds len(prompt) - 1:
    6 + 1 + 3 + 0 = 10; sequence and pairs: 3 examples.  An empty step gives 1.
    """
    from harness.data.tokenization import Encoded, EncodedPair
    from harness.train.forward import step_denominator

    step = [[Encoded([1, 2], [3, 4, 5]), Encoded([1, 2, 3, 4], [5])], [Encoded([1], [2, 3])]]
    sft, sft_params = METHODS["sft"], dict(METHODS["sft"].params)
    assert step_denominator(sft, sft_params, step) == 6.0
    assert step_denominator(sft, {**sft_params, "train_on_prompt": True}, step) == 10.0
    # ... and both agree with the loss masks the collator actually builds.
    from harness.data.collate import collate_sft
    from harness.methods import target_mask

    for on_prompt, expected in ((False, 6), (True, 10)):
        masks = [target_mask(collate_sft(mb, 0, train_on_prompt=on_prompt)["loss_mask"]) for mb in step]
        assert sum(int(m.sum()) for m in masks) == expected
    assert step_denominator(sft, {**sft_params, "loss_normalization": "sequence"}, step) == 3.0
    pairs = [[EncodedPair([1], [2, 3], [4])] * 3]
    assert step_denominator(METHODS["dpo"], dict(METHODS["dpo"].params), pairs) == 3.0
    assert step_denominator(sft, sft_params, [[Encoded([1], [])]]) == 1.0


def test_without_a_terminal_progress_is_plain_lines(micro, capsys):
    """pytest's stderr is no TTY, so tqdm draws nothing: a line every log_every steps and at the last."""
    path, tok = micro
    params = dict(METHODS["sft"].params)
    cfg = TrainConfig(lr=1e-3, batch_size=2, max_steps=5, log_every=2, scheduler="constant", warmup_ratio=0.0)
    result = train(load_model(path), METHODS["sft"], params,
                   ExampleSet(_examples(tok, "toy://arith-sft", "sft", 10), tok.pad_token_id), cfg, Callbacks())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train sft: step")]
    assert [line.split(" (")[0] for line in lines] == ["train sft: step 2/5", "train sft: step 4/5",
                                                       "train sft: step 5/5"]
    assert f"loss {result.last_metrics['loss']:.4f}" in lines[-1] and "it/s, ETA 0 s" in lines[-1]


def test_step_lines_also_come_after_quiet_spells():
    now = [0.0]
    lines = StepLines("train dpo", 100, every=50, seconds=30.0, clock=lambda: now[0])
    now[0] = 10.0
    assert lines.line(1, 0.7) is None
    now[0] = 31.0
    assert lines.line(2, 0.69) == "train dpo: step 2/100 (2%) loss 0.6900, 0.06 it/s, ETA 1519 s"
    now[0] = 40.0
    assert lines.line(3, 0.68) is None and lines.line(50, 0.5).startswith("train dpo: step 50/100")


def test_non_finite_gradient_stops_before_the_update(micro):
    """A finite loss with an infinite gradient stops at step 1, naming it, and leaves the weights as they were."""
    from harness.errors import NonFiniteError

    path, tok = micro
    examples = _examples(tok, "toy://arith-sft", "sft", 4)
    model = load_model(path, torch.float64)
    before = [p.detach().clone() for p in model.parameters()]
    next(model.parameters()).register_hook(lambda g: g * float("inf"))
    cfg = TrainConfig(lr=1e-2, batch_size=4, grad_accum=1, max_steps=2, shuffle=False, scheduler="constant",
                      warmup_ratio=0.0, max_grad_norm=1.0)
    with pytest.raises(NonFiniteError, match=r"non-finite gradient norm \((inf|nan)\) at step 1 of 2"):
        train(model, METHODS["sft"], dict(METHODS["sft"].params),
              ExampleSet(examples, tok.pad_token_id), cfg, Callbacks(progress=False))
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("scheduler,hf_name", [("constant", "constant_with_warmup"), ("linear", "linear"),
                                                ("cosine", "cosine")])
def test_lr_schedule_matches_transformers(scheduler, hf_name):
    """harness writes transformers' schedules out (importing them costs peft's start-up): the same lr, bit for bit."""
    from transformers import get_scheduler

    from harness.train.loop import lr_factor

    for warmup, total in [(0, 16), (3, 17), (10, 10), (1, 1), (5, 100)]:
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([param], lr=1e-5)
        theirs = get_scheduler(hf_name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
        for step in range(total + 2):
            assert theirs.get_last_lr()[0] == 1e-5 * lr_factor(step, scheduler, warmup, total)
            optimizer.step()
            theirs.step()


def test_cpu_optimizer_is_fused_adamw_with_the_per_tensor_update(micro):
    """On CPU the loop's AdamW is PyTorch's fused kernel, transformers' default (so TRL's), and it makes the same
    updates as the per-tensor loop (weight decay, bias correction, several steps) to float32 rounding (issue 15)."""
    import copy

    from harness.train.loop import accelerated, fused_adamw

    path, _ = micro
    model = load_model(path)
    plain_model = copy.deepcopy(model)
    cfg = TrainConfig(lr=1e-3, weight_decay=0.1, scheduler="constant", warmup_ratio=0.0)
    _, model, optimizer, _ = accelerated(model, cfg, 5)
    assert optimizer.optimizer.defaults["fused"] is True
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, weight_decay=0.1, foreach=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for a, b in zip(model.parameters(), plain_model.parameters()):
            a.grad = torch.randn(a.shape, generator=generator) * 1e-2
            b.grad = a.grad.clone()
        optimizer.step()
        plain.step()
    moved = 0
    for a, b, before in zip(model.parameters(), plain_model.parameters(), load_model(path).parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        moved += int(not torch.equal(a, before))
    assert moved == len(list(plain_model.parameters()))
    assert fused_adamw([torch.zeros(2, dtype=torch.long)]) is None and fused_adamw([]) is None


def test_models_load_with_sdpa_attention(tmp_path):
    """transformers picks PyTorch's fused scaled_dot_product_attention for the models harness loads (issue 15)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).config._attn_implementation == "sdpa"


def test_threads_follow_cpu_affinity(monkeypatch):
    from harness.train.models import match_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert match_threads() == len(os.sched_getaffinity(0))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert match_threads() == 1  # an explicit OMP_NUM_THREADS wins
    finally:
        torch.set_num_threads(before)
