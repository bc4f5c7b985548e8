"""vLLM rollouts (harness.train.vllm_rollouts) on the CPU, with a fake ``vllm`` at the import boundary: the backend
choice and its key, the weights (or adapter) pushed before every rollout, the sampling params, the Samples layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from harness.config.grid import stage_key
from harness.config.spec import LoraSpec
from harness.data.load import load_rows, take_fraction
from harness.errors import HarnessError
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.loop import Callbacks
from harness.train.models import attach_lora, load_model, load_tokenizer
from harness.train.online import OnlineTrainer
from harness.train.plan import TrainConfig
from harness.train.rollout import encode_prompts
from harness.train.stages import rollout_generator
from harness.train.vllm_rollouts import VllmRollouts, resolve_rollout_backend, rollouts_keyed
from tests import fake_vllm


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = toy_model_path("micro", tmp_path_factory.mktemp("cache"))
    return str(path), load_tokenizer(str(path))


@pytest.fixture
def cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)


class Alternating:
    """A reward source at the process boundary: 1, 0, 1, 0, ... so every group has a signal and updates move."""

    passes_rate = False

    def score(self, rows, prompt_ids, completion_ids, texts):
        return torch.tensor([float(i % 2 == 0) for i in range(len(texts))], dtype=torch.float64)


def _prompts(tokenizer, n=2):
    rows = take_fraction(load_rows("toy://arith-prompts", "eval"), 0.01, 0)[:n]
    return encode_prompts(tokenizer, rows, 64, None, "keep_end_of_prompt", 6)


def _trainer(model, tok, generator, steps=2):
    params = {**METHODS["grpo"].params, "group_size": 4, "max_new_tokens": 6, "temperature": 0.7, "top_p": 0.9,
              "reward": {"verifier": "arith"}}
    cfg = TrainConfig(lr=1e-2, batch_size=2, max_steps=steps, shuffle=False, scheduler="constant",
                      warmup_ratio=0.0, seed=3)
    return OnlineTrainer(model, tok, METHODS["grpo"], params, _prompts(tok), cfg, Alternating(),
                         callbacks=Callbacks(progress=False), generator=generator)


def _policy_script(box, seen):
    """Completion k: tokens 5+k, 6, then EOS (vLLM leaves it out); records the policy's weights as each rollout
    (each generate call) samples.  ``box``: [trainer, recorder], filled in once they exist."""
    def script(prompt_ids, k, params):
        trainer, rec = box
        if len(seen) < len(rec.generate_calls):
            seen.append({n: t.detach().clone() for n, t in trainer.policy.state_dict().items()})
        return [5 + k, 6], "stop", None

    return script


# ---- choosing the backend


def test_auto_is_transformers_without_vllm_or_without_cuda(monkeypatch):
    assert resolve_rollout_backend("transformers") == "transformers"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_vllm.install(monkeypatch, lambda *a: ([2], "stop", None))
    assert resolve_rollout_backend("auto") == "transformers"  # installed, but no GPU


def test_auto_is_vllm_with_vllm_and_cuda(monkeypatch, cuda):
    fake_vllm.install(monkeypatch, lambda *a: ([2], "stop", None))
    assert resolve_rollout_backend("auto") == "vllm"


def test_vllm_without_cuda_is_a_clear_error_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_vllm.install(monkeypatch, lambda *a: ([2], "stop", None))
    with pytest.raises(HarnessError, match=r"^method.rollout_backend: vllm needs a CUDA GPU and torch sees none; "
                                           r"set method.rollout_backend=transformers"):
        resolve_rollout_backend("vllm")


def test_a_sweep_asking_for_vllm_rollouts_without_a_gpu_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import yaml

    from harness.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = {"name": "vllm-cpu", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "method": {"name": "grpo", "reward": {"verifier": "arith"}, "rollout_backend": "vllm"},
            "data": {"train": "toy://arith-prompts", "fraction": 0.01}, "train": {"max_steps": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) != 0
    assert "method.rollout_backend: vllm" in capsys.readouterr().err
    assert not (tmp_path / "results" / "cache" / "stages").exists()


def test_the_stage_key_names_the_resolved_backend_and_transformers_keeps_the_old_key(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (stage,) = _stages(tmp_path)
    before = dict(stage.method.params)
    before.pop("rollout_backend")
    old = dataclasses.replace(stage, method=dataclasses.replace(stage.method, params=before))

    def key(s):
        return stage_key(s, "input", "data")

    assert stage.method.params["rollout_backend"] == "transformers"  # the default: the old key
    assert key(rollouts_keyed(stage)) == key(old)
    auto = _with(stage, "auto")
    assert key(rollouts_keyed(auto)) == key(old)  # auto on a CPU: transformers, as before the key existed
    fake_vllm.install(monkeypatch, lambda *a: ([2], "stop", None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert key(rollouts_keyed(auto)) != key(old)  # auto on a GPU with vLLM: vllm, another stage
    assert key(rollouts_keyed(auto)) == key(rollouts_keyed(_with(stage, "vllm")))


def _stages(tmp_path):
    import yaml

    from harness.config.grid import expand_trials
    from harness.config.spec import load_spec
    from harness.data.load import fingerprint

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "k", "model": "toy://micro", "data": {"train": "toy://arith-prompts"},
                                    "method": {"name": "grpo", "reward": {"verifier": "arith"}}}))
    return expand_trials(load_spec(str(path)), fingerprint)[0].stages


def _with(stage, backend):
    params = {**stage.method.params, "rollout_backend": backend}
    return dataclasses.replace(stage, method=dataclasses.replace(stage.method, params=params))


def test_the_stage_opens_a_vllm_engine_on_its_input_and_closes_it(monkeypatch, cuda, micro, tmp_path):
    path, tok = micro
    rec = fake_vllm.install(monkeypatch, lambda *a: ([2], "stop", None))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored after the test
    stage = _with(_stages(tmp_path)[0], "auto")
    with rollout_generator(stage, path, tok) as engine:
        assert isinstance(engine, VllmRollouts)
        assert rec.engines[0]["model"] == path and rec.engines[0]["max_model_len"] == stage.train.max_length
        assert rec.engines[0]["seed"] == stage.train.seed and "enable_lora" not in rec.engines[0]
        assert rec.env == ["0"]  # the engine core in this process, where its weights can be loaded
    assert rec.log[-1] == ("close",)
    with rollout_generator(_with(stage, "transformers"), path, tok) as engine:
        assert engine is None


# ---- weight sync


def test_full_weights_are_pushed_before_every_rollout_and_equal_the_policy_then(monkeypatch, micro):
    """Each rollout samples from an engine that was just given the policy's weights as they are at that
    rollout: the first push is the starting policy, the second the policy after the first update."""
    path, tok = micro
    box, seen = [], []
    rec = fake_vllm.install(monkeypatch, _policy_script(box, seen))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # restored after the test
    model = load_model(path, torch.float64)
    start = {n: t.clone() for n, t in model.state_dict().items()}
    with VllmRollouts(path, tok, 64, seed=3) as engine:
        trainer = _trainer(model, tok, engine)
        box.extend([trainer, rec])
        trainer.train()
    assert len(rec.loaded) == 2 == len(seen)
    for pushed, policy in zip(rec.loaded, seen):
        assert pushed.keys() == policy.keys()
        for name in policy:
            torch.testing.assert_close(pushed[name], policy[name], rtol=0, atol=0)
    for name, value in start.items():
        torch.testing.assert_close(rec.loaded[0][name], value, rtol=0, atol=0)
    moved = [n for n in start if not torch.equal(rec.loaded[1][n], start[n])]
    assert moved, "the second push must carry the update"
    syncs = [e for e in rec.log if e[0] in ("load_weights", "reset_prefix_cache")]
    assert syncs == [("load_weights",), ("reset_prefix_cache",)] * 2  # stale cached keys/values dropped each time


def test_a_lora_adapter_is_saved_and_served_under_a_new_id_before_every_rollout(monkeypatch, micro):
    path, tok = micro
    adapters = []
    rec = fake_vllm.install(monkeypatch, lambda *a: ([5, 6], "stop", None))
    model = attach_lora(load_model(path, torch.float64), 4, 8, 0.0, LoraSpec().target_modules, "CAUSAL_LM")

    with VllmRollouts(path, tok, 64, lora_rank=4, seed=3) as engine:
        assert rec.engines[0]["enable_lora"] and rec.engines[0]["max_lora_rank"] == 8
        sync = engine.sync

        def recording_sync(policy):
            sync(policy)
            saved = load_file(f"{engine.lora_request.args[2]}/adapter_model.safetensors")
            current = {n: t.detach().clone() for n, t in policy.named_parameters() if "lora_" in n}
            adapters.append((saved, current))

        engine.sync = recording_sync
        _trainer(model, tok, engine).train()
        kwargs = [call[2] for call in rec.generate_calls]
    assert [r[:2] for r in rec.lora_requests] == [("policy-1", 1), ("policy-2", 2)]
    assert [k["lora_request"].args[1] for k in kwargs] == [1, 2]  # each rollout asks for the adapter just saved
    assert rec.loaded == []  # LoRA pushes the adapter, not the weights
    for saved, current in adapters:
        assert len(saved) == len(current) > 0
        for name, t in current.items():  # PEFT saves without the adapter name: ...lora_A.default.weight -> lora_A.weight
            torch.testing.assert_close(saved[name.replace(".default", "")], t, rtol=0, atol=0)
    first, second = (a[1] for a in adapters)
    assert any(not torch.equal(first[n], second[n]) for n in first), "the second adapter must carry the update"


# ---- sampling params and the samples' layout


def test_sampling_params_match_the_transformers_settings_and_samples_keep_their_layout(monkeypatch, micro):
    path, tok = micro
    eos = tok.eos_token_id
    rec = fake_vllm.install(monkeypatch, lambda p, k, sp: ([5 + k, 6] if k % 2 else [5, 6, 7, 8, 9, 10, 11],
                                                          "stop" if k % 2 else "length", None))
    model = load_model(path, torch.float64)
    with VllmRollouts(path, tok, 64, seed=3) as engine:
        trainer = _trainer(model, tok, engine, steps=1)
        ro, metrics = trainer.rollout(1, [0, 1])
    ((prompts, params, _),) = rec.generate_calls
    assert [p["prompt_token_ids"] for p in prompts] == [trainer.prompts.ids[0], trainer.prompts.ids[1]]
    assert len(params) == 2  # one SamplingParams per prompt
    for sp in params:
        f = sp.fields
        assert (f["n"], f["temperature"], f["top_p"], f["max_tokens"], f["stop_token_ids"]) == (4, 0.7, 0.9, 6, [eos])
    seeds = [sp.fields["seed"] for sp in params]
    assert len(set(seeds)) == 2  # each prompt its own random stream
    assert seeds == [sp.fields["seed"] for sp in engine.sampling_params(
        trainer_settings(trainer, 1), 2)]  # reproducible from the iteration's seed
    s = ro.samples
    assert s.prompt_index == [0, 0, 0, 0, 1, 1, 1, 1]
    assert s.completion_ids[1] == [6, 6, eos] and s.truncated[1] is False  # EOS appended where vLLM stopped on it
    assert s.completion_ids[0] == [5, 6, 7, 8, 9, 10, 11] and s.truncated[0] is True
    assert "weight_sync_s" in metrics and metrics["generation_s"] >= 0


def trainer_settings(trainer, iteration):
    from harness.config.spec import GenerationSpec

    p = trainer.params
    return GenerationSpec(max_new_tokens=p["max_new_tokens"], temperature=p["temperature"], top_p=p["top_p"],
                          n=p["group_size"], seed=trainer.cfg.seed * 1_000_003 + iteration, backend="vllm")


def test_an_engine_without_an_in_process_model_is_a_clear_error(monkeypatch, micro):
    path, tok = micro
    fake_vllm.install(monkeypatch, lambda *a: ([2], "stop", None))
    engine = VllmRollouts(path, tok, 64)
    engine.llm.llm_engine = type("V1MultiprocessEngine", (), {})()  # no model_executor in this process
    with pytest.raises(HarnessError, match=r"^method.rollout_backend: vllm \? does not expose its model in this "
                                           r"process .* or set method.rollout_backend=transformers"):
        engine.sync(load_model(path, torch.float64))
    engine.llm = None
