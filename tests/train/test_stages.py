"""A stage's data path (harness.train.stages.prepare_data): row kind, conversion and encoding per method;
and whole stages (train_stage): reproducible LoRA trials."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.config.grid import ResolvedMethod, StageSpec
from harness.config.spec import DataSpec, EvalSpec, FilterSpec, LoraSpec, TrainSpec
from harness.data.tokenization import Encoded, EncodedKTO
from harness.errors import DataError
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.toy.tokenizer import build_tokenizer
from harness.train.stages import prepare_data, shared_stage_data, stage_data, train_stage


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def stage(method: str, train: str, **params) -> StageSpec:
    resolved = ResolvedMethod(method, {**METHODS[method].params, **params})
    return StageSpec("main", resolved, DataSpec(train=train), TrainSpec(max_length=64), LoraSpec(), EvalSpec(), None)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_stage_data_is_shared_only_where_every_setting_agrees(tmp_path, tok, monkeypatch):
    """Inside ``shared_stage_data`` (a sweep process) stages that encode the same data alike tokenize once:
    another beta, another pair method, a copy of the tokenizer elsewhere.  Every setting that changes the
    encoding or the audit misses: max_length, max_prompt_length, truncation, fraction, seed, a filter, a
    held-out set, the batch kind, the data's or the tokenizer's contents.  Outside it nothing is kept."""
    from harness.train import kinds

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    real = kinds.encode_pairs
    monkeypatch.setattr(kinds, "encode_pairs", counted)
    model = tmp_path / "model"
    tok.save_pretrained(model)
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(12)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    held_out = write_jsonl(tmp_path / "eval.jsonl", rows[:3])

    def variant(method="dpo", train=None, **data_settings) -> StageSpec:
        resolved = ResolvedMethod(method, {**METHODS[method].params})
        return StageSpec("main", resolved, DataSpec(**{"train": data, **data_settings}),
                         train or TrainSpec(max_length=64), LoraSpec(), EvalSpec(), None)

    with shared_stage_data(limit=64):
        first, passes = stage_data(variant(), str(model), tok)
        assert passes == 1 and len(calls) == 1 and first.audit is not None
        copy = tmp_path / "copy"
        tok.save_pretrained(copy)
        other_lr = variant(train=TrainSpec(max_length=64, lr=1.0))
        for same, path in [(variant(), model), (variant("ipo"), model), (other_lr, model), (variant(), copy)]:
            shared, passes = stage_data(same, str(path), tok)
            assert passes == 0 and len(calls) == 1
            assert shared.train == first.train and shared.train is not first.train and shared.audit == first.audit
        misses = [variant(train=TrainSpec(max_length=48)), variant(max_prompt_length=8), variant(truncation="drop"),
                  variant(fraction=0.5), variant(fraction=0.5, seed=1), variant(filter=FilterSpec(dedup="exact")),
                  variant(eval=held_out), variant("kto")]
        for other in misses:
            assert stage_data(other, str(model), tok)[1] == 1, other
            assert stage_data(other, str(model), tok)[1] == 0  # and then it is shared in turn
        assert len(calls) == 1 + 6 + 2  # six more encode_pairs, two for train and eval; kto reads encode_kto
        write_jsonl(tmp_path / "pairs.jsonl", rows[::-1])  # the same path, other contents
        assert stage_data(variant(), str(model), tok)[1] == 1
        config = model / "tokenizer_config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": "{{ messages }}"}))
        assert stage_data(variant(), str(model), tok)[1] == 1
    assert stage_data(variant(), str(model), tok)[1] == 1
    assert stage_data(variant(), str(model), tok)[1] == 1


def test_kto_stage_reads_pairs_as_two_labelled_examples(tmp_path, tok):
    hh = {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
          "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}
    kto = {"prompt": "2+2=", "completion": "4", "label": True}
    path = write_jsonl(tmp_path / "d.jsonl", [hh, kto])
    data = prepare_data(stage("kto", path), tok)
    assert [type(e) for e in data.train] == [EncodedKTO] * 3
    assert [(e.label, e.line) for e in data.train] == [(True, 1), (False, 1), (True, 2)]
    assert data.train[0].prompt_ids == data.train[1].prompt_ids
    assert tok.decode(data.train[0].completion_ids) == "4<|im_end|>\n"
    assert data.stats["data/rows"] == 3


def test_iw_sft_stage_carries_weights_and_names_a_bad_row(tmp_path, tok):
    path = write_jsonl(tmp_path / "w.jsonl", [{"text": "1+1=2", "weight": 0.5}, {"text": "2+2=4", "weight": 2}])
    data = prepare_data(stage("iw-sft", path), tok)
    assert [e.weight for e in data.train] == [0.5, 2.0]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "1+1=2", "score": 0.5}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'weight': missing"):
        prepare_data(stage("iw-sft", bad), tok)
    assert [e.weight for e in prepare_data(stage("iw-sft", bad, weight_field="score"), tok).train] == [0.5]
    assert prepare_data(stage("sft", bad), tok).train[0].weight is None


def test_sft_stage_trains_every_assistant_turn_by_default(tmp_path, tok):
    turns = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
             {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    path = write_jsonl(tmp_path / "mt.jsonl", [{"messages": turns}])
    (every,) = prepare_data(stage("sft", path), tok).train
    (last,) = prepare_data(stage("sft", path, assistant_turns="last"), tok).train
    targets = [t for t, m in zip(every.response_ids, every.target_mask) if m]
    assert tok.decode(targets) == "2<|im_end|>\n4<|im_end|>\n"
    assert tok.decode(last.response_ids) == "4<|im_end|>\n" and last.response_mask is None
    assert isinstance(every, Encoded)


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory) -> str:
    return str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))


def run_stage(stage_spec: StageSpec, model_dir: str, cache_dir) -> list[tuple[int, dict]]:
    """Train ``stage_spec`` from ``model_dir`` (no stage cache; reference statistics cached in ``cache_dir``)."""
    logged = []
    train_stage(stage_spec, model_dir, "micro", cache_dir, lambda metrics, step: logged.append((step, metrics)),
                force=False, progress=False)
    return logged


def losses(logged) -> list[tuple[int, float]]:
    return [(step, m["train/loss"]) for step, m in logged if "train/loss" in m]


@pytest.mark.parametrize("method,data", [("sft", "toy://arith-sft"), ("rm", "toy://arith-pairs")])
def test_lora_stage_is_reproducible(micro_dir, tmp_path, method, data):
    """Two runs of one LoRA stage (lora.rank 4, three steps) log bit-identical losses.

    The adapter's A matrices are random and B starts at 0, so step 1 is the base model's loss and
    steps 2 and 3 depend on A.  Between the runs the global RNG is moved on, as training the
    first run (or anything else in the process) does; the rm stage also adds a fresh scalar head.
    """
    spec = StageSpec("main", ResolvedMethod(method, dict(METHODS[method].params)),
                     DataSpec(train=data, fraction=0.003),
                     TrainSpec(max_length=64, batch_size=4, max_steps=3, log_every=1, lr=1e-2),
                     LoraSpec(rank=4), EvalSpec(), None)
    first = losses(run_stage(spec, micro_dir, tmp_path / "cache"))
    torch.rand(1000)
    second = losses(run_stage(spec, micro_dir, tmp_path / "cache"))
    assert [step for step, _ in first] == [1, 2, 3]
    assert first == second
    assert first[0][1] != first[2][1]  # it trained


@pytest.fixture(scope="module")
def gpt2_dropout_dir(tmp_path_factory) -> str:
    """A tiny GPT-2 (dropout 0.1 on embeddings, attention and residuals) with the toy tokenizer, built here."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gpt2") / "model"
    GPT2LMHeadModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("disable", [True, False])
def test_disable_dropout_gives_zero_log_ratios_at_step_0(gpt2_dropout_dir, tmp_path, disable):
    """DPO with policy = reference: at step 1 (logged before the update) h = 0 for every pair.

    The reference is computed in eval mode, the policy in train mode; one micro-batch holds all
    pairs in the reference pass's order, so both see the same padded batch.  With dropout off
    (the default) every log-ratio is exactly 0: train/kl = mean of the log-ratios = 0,
    train/rewards/margin = 0, no pair counts as correct (h > 0), and the loss is -log sigma(0) = log 2.  With dropout 0.1 left on,
    the policy's log-probs are noisy and none of that holds.
    """
    train = TrainSpec(max_length=64, batch_size=16, max_steps=1, log_every=1, lr=1e-3, shuffle=False,
                      disable_dropout=disable)
    assert TrainSpec().disable_dropout  # the default, as TRL
    spec = StageSpec("main", ResolvedMethod("dpo", dict(METHODS["dpo"].params)),
                     DataSpec(train="toy://arith-pairs", fraction=0.003), train, LoraSpec(), EvalSpec(), None)
    ((_, first),) = [(step, m) for step, m in run_stage(spec, gpt2_dropout_dir, tmp_path / "cache")
                     if "train/loss" in m]
    assert 4 <= first["train/response_length"]
    if disable:
        assert first["train/kl"] == 0.0 and first["train/rewards/margin"] == 0.0
        assert first["train/rewards/accuracy"] == 0.0  # no pair has h > 0
        assert first["train/loss"] == pytest.approx(math.log(2), rel=1e-6)
    else:
        # measured: kl -0.0175 (a mean over 18 responses, of both signs), 4 of 9 pairs with h > 0
        assert abs(first["train/kl"]) > 1e-3 and first["train/rewards/accuracy"] > 0
        assert first["train/loss"] != pytest.approx(math.log(2), rel=1e-6)


def test_pair_forward_layouts_train_alike_and_log_their_padding(micro_dir, tmp_path):
    """A DPO stage (2 steps) with train.pair_forward padded and shared_prompt: the same losses and
    method metrics (fp32: to rounding), the same tokens_seen, fewer positions run and less padding
    (train/computed_tokens_per_example, train/pad_tokens_per_example) with the shared prompt."""
    logged = {}
    for layout in ("padded", "shared_prompt"):
        spec = StageSpec("main", ResolvedMethod("dpo", dict(METHODS["dpo"].params)),
                         DataSpec(train="toy://arith-pairs", fraction=0.003),
                         TrainSpec(max_length=64, batch_size=4, max_steps=2, log_every=1, lr=1e-2,
                                   pair_forward=layout), LoraSpec(), EvalSpec(), None)
        logged[layout] = {step: m for step, m in run_stage(spec, micro_dir, tmp_path / layout) if "train/loss" in m}
    padded, shared = logged["padded"], logged["shared_prompt"]
    assert sorted(padded) == sorted(shared) == [1, 2]
    for step in (1, 2):
        for key in ("train/loss", "train/rewards/margin", "train/logps/chosen", "train/kl"):
            assert shared[step][key] == pytest.approx(padded[step][key], rel=1e-4, abs=1e-5), key
        assert shared[step]["train/tokens_seen"] == padded[step]["train/tokens_seen"]
        assert shared[step]["train/computed_tokens_per_example"] < padded[step]["train/computed_tokens_per_example"]
        assert shared[step]["train/pad_tokens_per_example"] <= padded[step]["train/pad_tokens_per_example"]
