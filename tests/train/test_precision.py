"""The reference pass runs under the policy's autocast: policy = reference gives log-ratios of exactly 0.

``train.precision: bf16`` needs a GPU at the stage level, but CPU autocast with bf16 works in torch,
so these tests call the reference computation (``reference_for``, ``kto_references``) and the
policy's forward under the same CPU bf16 autocast (``harness.train.precision.autocast``), and once
through the loop itself.  The expected values are worked by hand: h = 0, so DPO's loss is
-log sigma(0) = log 2 per pair, and KTO's is 1 - sigma(0) = 1/2 per example (weights 1, z0 = 0).
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.config.grid import ResolvedMethod, StageSpec
from harness.config.spec import DataSpec, EvalSpec, LoraSpec, TrainSpec
from harness.data.load import load_rows, pairs_to_kto, take_fraction
from harness.data.tokenization import encode_kto, encode_pairs
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.forward import kto_sequence_logps, kto_step_inputs, pair_logps, reference_stats
from harness.train.inputs import BatchInputs, ExampleSet, PrepareContext, StepState
from harness.train.kinds import forward_method
from harness.train.loop import Callbacks, train
from harness.train.models import load_model, load_tokenizer
from harness.train.plan import TrainConfig
from harness.train.precision import autocast
from harness.train.reference import kto_references, reference_for

PRECISIONS = ["no", "bf16"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    pairs = encode_pairs(tok, take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.003, 0), 64)[0]
    assert 2 <= len(pairs) <= 16  # one micro-batch, and one chunk of the reference pass: the same padded batch
    return path, tok, pairs


def context(method: str, model, tok, cache_dir, mixed: str) -> PrepareContext:
    stage = StageSpec("main", ResolvedMethod(method, dict(METHODS[method].params)),
                      DataSpec(train="toy://arith-pairs", fraction=0.003), TrainSpec(max_length=64), LoraSpec(),
                      EvalSpec(), None)
    return PrepareContext(stage, model, "micro", tok, cache_dir, False, mixed)


@pytest.mark.parametrize("mixed", PRECISIONS)
def test_dpo_policy_equal_to_reference_gives_h_0(micro, tmp_path, mixed):
    """Reference pass and policy forward (train mode, with grad, as in the loop) under one autocast."""
    path, tok, pairs = micro
    model = load_model(path)  # fp32 master weights, as every stage
    ref = reference_for(context("dpo", model, tok, tmp_path, mixed), pairs)
    model.train()
    params = dict(METHODS["dpo"].params)
    with autocast(mixed, "cpu"):
        out = pair_logps(model, pairs, tok.pad_token_id, "cpu")
        numerators, _, _ = forward_method(model, METHODS["dpo"], params, pairs, tok.pad_token_id, "cpu",
                                          BatchInputs(ref=ref))
    n = len(pairs)
    h = (out.sums[:n].detach() - ref[:, 0]) - (out.sums[n:].detach() - ref[:, 2])
    assert torch.equal(h, torch.zeros(n))
    torch.testing.assert_close(numerators.detach().double(), torch.full((n,), math.log(2), dtype=torch.float64),
                               rtol=1e-7, atol=0)
    if mixed == "bf16":  # not trivially 0: a reference in fp32 (the old pass) is off
        with torch.no_grad():
            fp32 = reference_stats(model.eval(), pairs, tok.pad_token_id, "cpu")
        assert (fp32[:, 0] - ref[:, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("mixed", PRECISIONS)
def test_kto_policy_equal_to_reference_gives_log_ratio_0(micro, tmp_path, mixed):
    """KTO: each own completion's log-ratio is exactly 0, and so is the step's KL estimate z0."""
    path, tok, _ = micro
    rows = pairs_to_kto(take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.003, 0))[:12]
    examples, _ = encode_kto(tok, rows, 64)
    n = len(examples)
    model = load_model(path)
    cfg = TrainConfig(lr=1e-3, batch_size=n, max_steps=1, shuffle=False, mixed_precision=mixed)
    own, kl_ref = kto_references(context("kto", model, tok, tmp_path, mixed), examples, cfg, "train")
    model.train()
    params = dict(METHODS["kto"].params)
    data = ExampleSet(examples, tok.pad_token_id, ref=own, kl_ref=kl_ref)
    with autocast(mixed, "cpu"):
        step = kto_step_inputs(model, METHODS["kto"], params, data, list(range(n)), StepState(), "cpu")
        sums, *_ = kto_sequence_logps(model, [e.prompt_ids for e in examples], [e.completion_ids for e in examples],
                                      tok.pad_token_id, "cpu")
        numerators, _, _ = forward_method(model, METHODS["kto"], params, examples, tok.pad_token_id, "cpu",
                                          BatchInputs(ref=own, kl=step.kl))
    assert torch.equal(sums.detach() - own[:, 0], torch.zeros(n))
    assert step.kl == 0.0
    torch.testing.assert_close(numerators.detach().double(), torch.full((n,), 0.5, dtype=torch.float64),
                               rtol=1e-7, atol=0)


def test_reference_cache_key_includes_the_precision(micro, tmp_path):
    """The same data under fp32 and under bf16 autocast are two entries, two passes, two results."""
    path, tok, pairs = micro
    model = load_model(path)
    contexts = [context("dpo", model, tok, tmp_path, mixed) for mixed in ("no", "bf16", "no")]
    fp32, bf16, again = (reference_for(ctx, pairs) for ctx in contexts)
    assert [ctx.reference_passes for ctx in contexts] == [1, 1, 0]
    assert torch.equal(fp32, again) and not torch.equal(fp32, bf16)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: reset it around a bf16 loop."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_loop_under_bf16_autocast_logs_h_0_at_step_1(micro, tmp_path, fresh_accelerate_state):
    """The loop's own forward (accelerate's prepared model, bf16) against the reference pass: at step 1
    (logged before the update) train/kl = 0, no pair counts as correct, and the loss is log 2."""
    path, tok, pairs = micro
    model = load_model(path)
    ref = reference_for(context("dpo", model, tok, tmp_path, "bf16"), pairs)
    cfg = TrainConfig(lr=1e-3, batch_size=len(pairs), max_steps=1, shuffle=False, log_every=1,
                      mixed_precision="bf16")
    logged = []
    train(model, METHODS["dpo"], dict(METHODS["dpo"].params), ExampleSet(pairs, tok.pad_token_id, ref=ref), cfg,
          Callbacks(lambda metrics, step: logged.append(metrics), progress=False))
    (first,) = logged
    assert first["train/kl"] == 0.0 and first["train/rewards/accuracy"] == 0.0
    assert first["train/loss"] == pytest.approx(math.log(2), rel=1e-7)
