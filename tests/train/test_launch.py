"""``train.processes: N`` through the spec: one stage trained by N worker processes (harness.train.launch)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM

from harness.cli import main
from harness.config.grid import resolve_stages
from harness.config.spec import validate_spec
from harness.errors import HarnessError, SpecError
from harness.train.launch import MODEL, launch_stage, load_output, write_result
from harness.train.loop import TrainResult
from harness.train.models import load_tokenizer, resolve_model_path, save_checkpoint
from harness.train.reward_model import load_reward_model

# Everything but the batch layout is the same in both arms; a constant lr and no clipping, so the
# updates are Adam's on the very gradients.
COMMON = {"max_length": 64, "lr": 1e-3, "scheduler": "constant", "warmup_ratio": 0.0, "max_grad_norm": None,
          "log_every": 1, "max_steps": 2}
ONE = {**COMMON, "processes": 1, "batch_size": 4, "grad_accum": 2}
TWO = {**COMMON, "processes": 2, "batch_size": 2, "grad_accum": 2}  # 2 per process: the same 8 per step


def _stage_runs(client: MlflowClient, experiment: str) -> dict[tuple[int, str], object]:
    """(processes, stage name) -> the stage's run."""
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id], "tags.`harness.stage` != ''"):
        trial = client.get_run(run.data.tags["mlflow.parentRunId"])
        out[(int(trial.data.params["train.processes"]), run.data.tags["harness.stage"])] = run
    return out


def _history(client: MlflowClient, run) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics}


def _weights(path) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def _relative_gap(one: dict, two: dict, start: dict) -> float:
    """||two - one|| / ||one - start|| over all weights: how far apart the two arms' updates are."""
    gap = sum(float((two[k] - one[k]).square().sum()) for k in one)
    moved = sum(float((one[k] - start[k]).square().sum()) for k in one)
    assert moved > 0
    return (gap / moved) ** 0.5


def test_two_processes_train_sft_then_dpo_as_one(tmp_path, capsys):
    """SFT then DPO (its reference pass in the workers), in 2 gloo processes of 2 examples per
    micro-batch each, against 1 process of 4: the same effective batch (8 = 4 x 2 x 1 = 2 x 2 x 2),
    logged as ``train.effective_batch_size``, the same metric keys and steps (and artifacts: DPO's
    audit.json) on each stage's run, the same per-step losses, and the same trained weights up to float32 rounding (Adam's steps are
    ~lr x sign(g), so a weight whose gradient is ~0 may differ by lr: the gap is measured against the
    whole update).  A shard trained alone, or unsynchronized gradients, would be off by ~the update.
    """
    results = tmp_path / "results"
    spec = {
        "name": "procs", "results_dir": str(results), "model": "toy://micro", "data": {"fraction": 0.003},
        "stages": [
            {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}},
            {"name": "dpo", "method": {"name": "dpo"}, "data": {"train": "toy://arith-pairs"}},
        ],
        "ablate": {"train": [ONE, TWO]},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    err = capsys.readouterr().err
    assert "stage sft in 2 processes (gloo)" in err and "stage dpo in 2 processes (gloo)" in err
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = _stage_runs(client, "procs")
    assert sorted(runs) == [(1, "dpo"), (1, "sft"), (2, "dpo"), (2, "sft")]
    for (_, stage), run in runs.items():
        trial = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert trial.data.params["train.effective_batch_size"] == "8"
    start = _weights(resolve_model_path("toy://micro", tmp_path))
    checkpoints = {}
    for meta_file in (results / "cache" / "stages").glob("*/meta.json"):
        meta = json.loads(meta_file.read_text())
        key = next(k for k, run in runs.items() if run.info.run_id == meta["run_id"])
        checkpoints[key] = meta_file.parent / "model"
    for stage in ("sft", "dpo"):
        one, two = _history(client, runs[(1, stage)]), _history(client, runs[(2, stage)])
        assert one.keys() == two.keys()
        assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_seen", "train/optimizer_steps"} <= one.keys()
        for key in one:
            assert [s for s, _ in one[key]] == [s for s, _ in two[key]], key
        assert [s for s, _ in one["train/loss"]] == [1, 2]
        for key in ("train/loss", "train/tokens_seen") + (("train/rewards/margin",) if stage == "dpo" else ()):
            assert [v for _, v in two[key]] == pytest.approx([v for _, v in one[key]], rel=1e-5, abs=1e-6), key
        assert one["train/reference_passes"] == two["train/reference_passes"]
        artifacts = [{a.path for a in client.list_artifacts(runs[(n, stage)].info.run_id)} for n in (1, 2)]
        assert artifacts[0] == artifacts[1] and ("audit.json" in artifacts[0]) == (stage == "dpo")
        base = start if stage == "sft" else _weights(checkpoints[(1, "sft")])
        gap = _relative_gap(_weights(checkpoints[(1, stage)]), _weights(checkpoints[(2, stage)]), base)
        assert gap < 1e-3, stage


@pytest.mark.parametrize("method", [{"name": "grpo", "reward": {"verifier": "arith"}}])
def test_processes_are_for_offline_methods(method):
    raw = {"name": "x", "model": "toy://micro", "method": method, "data": {"train": "toy://arith-prompts"},
           "train": {"processes": 2}}
    with pytest.raises(SpecError, match=r"train\.processes.*offline methods only.*grpo.*value seen: 2"):
        validate_spec(raw)
    raw["train"]["processes"] = 1
    validate_spec(raw)


def test_a_worker_failure_is_a_harness_error_with_its_last_lines(tmp_path):
    """A worker that fails with a bug (here a tokenizer file that is not JSON) comes back as one
    HarnessError naming the stage and carrying the worker's traceback; no job files are left."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "tokenizer_config.json").write_text("{")
    raw = {"name": "x", "model": str(broken), "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"},
           "train": {"processes": 2}}
    (stage,) = resolve_stages(validate_spec(raw))
    cache = tmp_path / "cache"
    with pytest.raises(HarnessError) as caught:
        launch_stage(stage, str(broken), "broken", cache, lambda metrics, step: None, False, progress=False)
    message = str(caught.value)
    assert message.startswith("stage main: training in 2 processes failed (exit code 1)")
    assert "JSONDecodeError: Expecting property name enclosed in double quotes" in message
    assert "load_tokenizer" in message  # the traceback's frames, not torchrun's summary
    assert list(cache.iterdir()) == []


def test_a_reward_model_comes_back_with_its_trained_head(tmp_path):
    """An rm stage's output, as rank 0 saves it, loads in the parent as the same scorer: the head's
    weights (not a fresh head), the pooling, plain fp32 weights in eval mode, and the result."""
    path = str(resolve_model_path("toy://micro", tmp_path))
    tok = load_tokenizer(path)
    torch.manual_seed(3)
    trained = load_reward_model(path, tok.pad_token_id, torch.float32, "last")
    job = tmp_path / "job"
    save_checkpoint(trained, tok, job / MODEL)
    write_result(job, TrainResult(2, 40, 1.5, {"loss": 0.25}))
    raw = {"name": "x", "model": "toy://micro", "method": {"name": "rm"}, "data": {"train": "toy://arith-pairs"},
           "train": {"processes": 2}}
    (stage,) = resolve_stages(validate_spec(raw))
    torch.manual_seed(4)  # a fresh head would come from this seed
    model, tokenizer, result = load_output(stage, job)
    assert tokenizer.get_vocab() == tok.get_vocab()
    assert result == TrainResult(2, 40, 1.5, {"loss": 0.25})
    assert not model.training and model.config.harness_pooling == "last"
    ids = torch.tensor([tok("1+1=2")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)
