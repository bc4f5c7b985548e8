"""Online methods end to end through `harness sweep` on toy://micro: stages, reward sources, metrics, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.config.spec import load_spec
from harness.errors import SpecError

GRPO = {"name": "grpo", "group_size": 4, "max_new_tokens": 6}
PPO = {"name": "ppo", "max_new_tokens": 6, "ppo_epochs": 2}


def _write(tmp_path, name: str, **top) -> str:
    spec = {"name": name, "results_dir": str(tmp_path / "results"), "model": "toy://micro",
            "train": {"batch_size": 2, "max_length": 64, "max_steps": 2, "lr": 1e-3, "log_every": 1}, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _runs(tmp_path, name: str):
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs([exp.experiment_id])


def test_sft_then_rm_then_grpo_with_the_rm_stage_as_reward(tmp_path, capsys):
    """`stages: [sft, rm, grpo]`: the rm stage's output scores the rollouts; the policy continues from sft."""
    stages = [
        {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.002}},
        {"name": "rm", "method": {"name": "rm"}, "data": {"train": "toy://arith-pairs", "fraction": 0.002}},
        {"name": "rl", "method": {**GRPO, "reward": {"model": "rm"}, "beta": 0.04},
         "data": {"train": "toy://arith-prompts", "fraction": 0.01}},
    ]
    spec = _write(tmp_path, "online-rm", stages=stages)
    assert main(["sweep", spec]) == 0
    client, runs = _runs(tmp_path, "online-rm")
    by_stage = {r.data.tags.get("harness.stage"): r for r in runs if "harness.stage" in r.data.tags}
    rl = by_stage["rl"].data
    for key in ("train/reward/mean", "train/reward/std", "train/reward_raw/mean", "train/kl", "train/entropy",
                "train/clip_ratio/region_mean", "train/response_length", "train/truncated_fraction",
                "train/zero_signal_groups", "train/advantages/mean", "train/generation_s", "train/update_s",
                "data/prompts"):
        assert key in rl.metrics, key
    assert "train/pass_rate" not in rl.metrics  # a reward model's score is not a pass indicator
    assert rl.tags["harness.kl_estimator"].startswith("k3")
    history = client.get_metric_history(by_stage["rl"].info.run_id, "train/reward/mean")
    assert [m.step for m in history] == [1, 2]
    # The RM scores, the policy trained from sft: the trial's checkpoint is a causal LM, not the RM.
    trial = next(r for r in runs if r.data.tags.get("harness.trial_id") and "harness.stage" not in r.data.tags
                 and r.data.tags.get("harness.role") != "sweep")
    config = json.loads((Path(trial.data.tags["harness.checkpoint"]) / "config.json").read_text())
    assert config["architectures"][0].endswith("ForCausalLM")
    # A re-run finds the trial finished and trains nothing.
    capsys.readouterr()
    assert main(["sweep", spec]) == 0
    assert "skip " in capsys.readouterr().err
    _, again = _runs(tmp_path, "online-rm")
    assert len(again) == len(runs)


def test_sft_then_rm_then_ppo_logs_the_handbook_metrics_and_adapts_beta(tmp_path, capsys):
    """`stages: [sft, rm, ppo]` with the rm stage as reward, a separate value model and an adaptive beta."""
    stages = [
        {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.002}},
        {"name": "rm", "method": {"name": "rm"}, "data": {"train": "toy://arith-pairs", "fraction": 0.002}},
        {"name": "ppo", "method": {**PPO, "reward": {"model": "rm"}, "kl_target": 0.5, "missing_eos_penalty": 1.0},
         "data": {"train": "toy://arith-prompts", "fraction": 0.01}},
    ]
    spec = _write(tmp_path, "online-ppo", stages=stages)
    assert main(["sweep", spec]) == 0
    client, runs = _runs(tmp_path, "online-ppo")
    by_stage = {r.data.tags.get("harness.stage"): r for r in runs if "harness.stage" in r.data.tags}
    ppo = by_stage["ppo"].data
    for key in ("train/reward/mean", "train/reward/std", "train/reward_raw/mean", "train/kl", "train/entropy",
                "train/clip_fraction", "train/approx_kl", "train/response_length", "train/truncated_fraction",
                "train/value_loss", "train/explained_variance", "train/advantages/mean", "train/advantages/std",
                "train/beta", "train/generation_s", "train/update_s"):
        assert key in ppo.metrics, key
    assert ppo.tags["harness.kl_estimator"].startswith("k1")
    assert ppo.metrics["train/optimizer_steps"] == 2 * 2  # iterations x ppo_epochs
    beta = [m.value for m in client.get_metric_history(by_stage["ppo"].info.run_id, "train/beta")]
    assert beta[0] == 0.05 and len(beta) == 2 and beta[1] != beta[0]  # adapted once, after the first rollout
    if ppo.metrics["train/truncated_fraction"] > 0:  # the penalty is counted in reward, not in reward_raw
        assert ppo.metrics["train/reward/mean"] < ppo.metrics["train/reward_raw/mean"]
    capsys.readouterr()
    assert main(["sweep", spec]) == 0
    assert "skip " in capsys.readouterr().err
    _, again = _runs(tmp_path, "online-ppo")
    assert len(again) == len(runs)


def test_a_ppo_value_model_that_cannot_take_the_lora_rank_is_named_before_any_rollout(tmp_path, capsys):
    spec = _write(tmp_path, "ppo-lora", method={**PPO, "reward": {"verifier": "arith"}},
                  data={"train": "toy://arith-prompts", "fraction": 0.01}, lora={"rank": 100000})
    assert main(["sweep", spec]) != 0
    err = capsys.readouterr().err
    assert "lora.rank: 100000 is more than the hidden size" in err and "method.value_model: separate" in err


def test_grpo_with_the_arith_verifier_logs_pass_rate_and_skips_the_reference_at_beta_0(tmp_path):
    spec = _write(tmp_path, "online-verifier", method={**GRPO, "reward": {"verifier": "arith"}, "minibatches": 2,
                                                       "num_iterations": 2},
                  data={"train": "toy://arith-prompts", "fraction": 0.01})
    assert main(["sweep", spec]) == 0
    _, runs = _runs(tmp_path, "online-verifier")
    (trial,) = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    m = trial.data.metrics
    assert 0.0 <= m["train/pass_rate"] <= 1.0 and m["train/pass_rate"] == m["train/reward/mean"]
    assert "train/kl" not in m  # beta 0: no reference, no KL term
    assert "harness.kl_estimator" not in trial.data.tags  # so no estimator is named for it either
    assert m["train/optimizer_steps"] == 2 * 2 * 2  # iterations x num_iterations x minibatches


@pytest.mark.parametrize("method,where", [
    ({"name": "grpo"}, "method.reward"),
    ({"name": "grpo", "reward": {"verifier": "arith"}, "group_size": 1}, "group_size"),
    ({"name": "grpo", "reward": {"verifier": "nope"}}, "method.reward.verifier"),
    ({"name": "grpo", "reward": {"verifier": "arith", "model": "x"}}, "set exactly one"),
    ({"name": "grpo", "reward": {"verifier": "arith"}, "gamma": 0.5}, "gamma"),
    ({"name": "grpo", "reward": {"verifier": "arith"}, "temperature": 0.0}, "temperature"),
    ({"name": "grpo", "reward": {"verifier": "arith"}, "loss_aggregation": "mean"}, "loss_aggregation"),
    ({"name": "grpo", "reward": {"model": "x", "format": {"pattern": "x"}}}, "set verifier too"),
    ({"name": "grpo", "reward": {"verifier": "arith", "format": {"pattern": "(["}}},
     "method.reward.format.pattern: .*not a regular expression"),
    ({"name": "grpo", "reward": {"verifier": "arith", "format": {"weight": 1.0}}}, "method.reward.format.pattern"),
    ({"name": "ppo"}, "method.reward"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "value_model": "critic"}, "method.value_model"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "cliprange": 0}, "method.cliprange"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "cliprange_value": -0.1}, "method.cliprange_value"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "gamma": 1.5}, "method.gamma"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "lam": -0.1}, "method.lam"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "ppo_epochs": 0}, "method.ppo_epochs"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "reward_clip": 0}, "method.reward_clip"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "kl_target": 1.0, "beta": 0.0}, "method.kl_target: adapts beta"),
    ({"name": "ppo", "reward": {"verifier": "arith"}, "group_size": 4}, "group_size"),
    ({"name": "grpo", "reward": {"judge": "pairwise"}}, "method.reward.judge: a judge compares the two samples"),
    ({"name": "ppo", "reward": {"judge": "single"}}, "online-dpo only, not ppo"),
])
def test_bad_online_settings_are_named(tmp_path, method, where):
    spec = _write(tmp_path, "bad", method=method, data={"train": "toy://arith-prompts"})
    with pytest.raises(SpecError, match=where):
        load_spec(spec)


def test_an_rm_stage_no_online_stage_uses_must_be_last(tmp_path, capsys):
    stages = [{"name": "rm", "method": {"name": "rm"}, "data": {"train": "toy://arith-pairs"}},
              {"name": "rl", "method": {**GRPO, "reward": {"verifier": "arith"}},
               "data": {"train": "toy://arith-prompts"}}]
    assert main(["sweep", _write(tmp_path, "rm-unused", stages=stages)]) != 0
    assert "an rm stage must be the last stage, or the reward source" in capsys.readouterr().err


@pytest.mark.parametrize("after", ["final", "every_stage"])
def test_top_level_eval_suites_reach_an_rm_stage_only_where_it_would_be_evaluated(tmp_path, after):
    """Suites inherited by an rm stage before the online stage it rewards are never run on it with
    ``eval.after: final`` (found writing experiments/ppo-hedged.yaml); with ``every_stage`` they would be."""
    from harness.config.grid import expand_trials
    from harness.data.load import fingerprint
    from harness.errors import HarnessError
    from harness.run.preflight import check_reward_model_stages

    stages = [{"name": "rm", "method": {"name": "rm"}, "data": {"train": "toy://arith-pairs"}},
              {"name": "rl", "method": {"name": "ppo", "reward": {"model": "rm"}},
               "data": {"train": "toy://arith-prompts"}}]
    spec = load_spec(_write(tmp_path, "rm-eval", stages=stages, eval={"suites": ["arith"], "after": after}))
    (trial,) = expand_trials(spec, fingerprint)
    if after == "final":
        check_reward_model_stages(trial.stages)
    else:
        with pytest.raises(HarnessError, match="stage 'rm': eval.suites \\['arith'\\]: an rm stage .* cannot generate"):
            check_reward_model_stages(trial.stages)


def test_a_reward_model_that_is_neither_a_directory_nor_a_stage_is_named(tmp_path, capsys):
    spec = _write(tmp_path, "rm-missing", method={**GRPO, "reward": {"model": "rm"}},
                  data={"train": "toy://arith-prompts"})
    assert main(["sweep", spec]) != 0
    assert "method.reward.model: 'rm' is neither a reward-model directory nor the name of an earlier rm stage" \
        in capsys.readouterr().err


def test_online_dpo_with_a_verifier_and_two_spin_iterations_as_stages(tmp_path):
    """online-dpo pairs two samples per prompt by the arith verifier (ties skipped and counted); SPIN pairs
    the policy's sample with the data's response, one stage per iteration."""
    rollout = {"max_new_tokens": 6}
    stages = [
        {"name": "odpo", "method": {"name": "online-dpo", "reward": {"verifier": "arith"}, **rollout},
         "data": {"train": "toy://arith-prompts", "fraction": 0.01}},
        {"name": "spin1", "method": {"name": "spin", **rollout}, "data": {"train": "toy://arith-sft",
                                                                           "fraction": 0.002}},
        {"name": "spin2", "method": {"name": "spin", **rollout}, "data": {"train": "toy://arith-sft",
                                                                           "fraction": 0.002}},
    ]
    assert main(["sweep", _write(tmp_path, "online-pairs", stages=stages)]) == 0
    _, runs = _runs(tmp_path, "online-pairs")
    by_stage = {r.data.tags.get("harness.stage"): r for r in runs if "harness.stage" in r.data.tags}
    odpo = by_stage["odpo"].data.metrics
    # A micro model is never right: every pair ties, and nothing is learned from ties.
    assert odpo["train/tie_fraction"] == 1.0 and odpo["train/tied_pairs"] == 2
    assert odpo["train/loss"] == 0.0 and odpo["train/skipped_steps"] == 1  # no update from ties alone
    assert odpo["train/optimizer_steps"] == 0
    for name in ("spin1", "spin2"):
        m = by_stage[name].data.metrics
        assert m["train/tie_fraction"] == 0.0  # a 6-token sample never equals the data response
        assert m["train/loss"] > 0 and "train/rewards/margin" in m and "train/kl" in m
        assert by_stage[name].data.tags["harness.kl_estimator"].startswith("k1")


def test_online_dpo_judged_pairwise_by_the_toy_judge(tmp_path):
    """The pairs go to the sweep's judge in both orders; a second trial that differs only in its seed of
    the data subset reuses nothing, but every judged pair is logged as judged or tied."""
    spec = _write(tmp_path, "online-judge",
                  method={"name": "online-dpo", "reward": {"judge": "pairwise"}, "max_new_tokens": 6},
                  data={"train": "toy://arith-prompts", "fraction": 0.01})
    assert main(["sweep", spec]) == 0
    _, runs = _runs(tmp_path, "online-judge")
    (trial,) = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    m = trial.data.metrics
    assert m["train/judge_errors"] == 0
    assert 0.0 <= m["train/tie_fraction"] <= 1.0
    assert (tmp_path / "results" / "cache" / "judge").exists()


def test_a_judge_reward_on_prompts_the_toy_judge_cannot_judge_is_refused(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Write a haiku about autumn."}\n')
    spec = _write(tmp_path, "online-judge-real", method={"name": "online-dpo", "reward": {"judge": "single"}},
                  data={"train": str(prompts)})
    assert main(["sweep", spec]) != 0
    err = capsys.readouterr().err
    assert "method.reward: 1 of 1 items are not from the toy world" in err and "judge.base_url" in err


def test_a_judge_reward_whose_judge_gives_no_verdict_fails_before_any_rollout(tmp_path, capsys, monkeypatch):
    """The judge reward's probe runs before the first rollout: a judge that answers without a verdict stops the
    stage in one line naming method.reward and the judge, and nothing is generated."""
    from harness.serve.server import ChatResult, serve_in_background
    from harness.train import online

    rollouts = []
    monkeypatch.setattr(online, "sample", lambda *a, **k: rollouts.append(a) or pytest.fail("a rollout ran"))
    with serve_in_background(lambda body: ChatResult("No opinion.")) as server:
        spec = _write(tmp_path, "online-judge-mute",
                      method={"name": "online-dpo", "reward": {"judge": "pairwise"}, "max_new_tokens": 6},
                      data={"train": "toy://arith-prompts", "fraction": 0.01},
                      judge={"base_url": server.base_url, "model": "mute", "max_retries": 0})
        assert main(["sweep", spec]) != 0
    err = capsys.readouterr().err
    assert f"method.reward: the pairwise judge (model 'mute' at {server.base_url}) gave no verdict" in err
    assert rollouts == []


def test_online_stages_refuse_the_keys_they_would_ignore(tmp_path):
    method = {"name": "grpo", "reward": {"verifier": "arith"}}
    for data, train, key in ((({"train": "toy://arith-prompts", "eval": "toy://arith-eval"}), {}, "data.eval"),
                             ({"train": "toy://arith-prompts", "filter": {"dedup": "exact"}}, {}, "data.filter"),
                             ({"train": "toy://arith-prompts"}, {"eval_every": 5}, "train.eval_every")):
        spec = _write(tmp_path, "ignored", method=method, data=data, train={"max_steps": 1, **train})
        with pytest.raises(SpecError, match=f"{key}: not used by online methods"):
            load_spec(spec)


def test_a_reward_model_named_by_a_stage_must_be_an_rm_stage(tmp_path, capsys):
    stages = [{"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.002}},
              {"name": "rl", "method": {**GRPO, "reward": {"model": "sft"}}, "data": {"train": "toy://arith-prompts"}}]
    assert main(["sweep", _write(tmp_path, "rm-not-rm", stages=stages)]) != 0
    assert "'sft' is neither a reward-model directory nor the name of an earlier rm stage (earlier rm stages: none)" \
        in capsys.readouterr().err


def test_a_reward_model_retrained_in_place_changes_the_stage_key(tmp_path):
    """``method.reward: {model: PATH}`` (and ``ref_model``) enter the stage key by content, not only by path:
    a reward model retrained into the same directory must not hand back the policy trained on the old one."""
    from harness.config.grid import expand_trials, stage_key
    from harness.data.load import fingerprint
    from harness.run.sweep import by_content

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.json").write_text('{"v": 1}')
    spec = load_spec(_write(tmp_path, "rm-path", method={**GRPO, "reward": {"model": str(rm)}},
                            data={"train": "toy://arith-prompts"}))
    (stage,) = expand_trials(spec, fingerprint)[0].stages

    def key() -> str:
        return stage_key(by_content(stage, set()), "input", "data")

    before = key()
    assert key() == before  # the same content, the same key
    (rm / "config.json").write_text('{"v": 2}')  # retrained in place
    assert key() != before
    # A stage that reads no model directory keys exactly as before (no cached stage of an earlier sweep is lost).
    plain = load_spec(_write(tmp_path, "plain", method={**GRPO, "reward": {"verifier": "arith"}},
                             data={"train": "toy://arith-prompts"}))
    (plain_stage,) = expand_trials(plain, fingerprint)[0].stages
    assert by_content(plain_stage, set()) == plain_stage
    # A reward named by an earlier stage is that stage's output, keyed through the chain: left as it is.
    named = dataclasses.replace(stage, method=dataclasses.replace(stage.method, params={
        **stage.method.params, "reward": {"model": "rm"}}))
    assert by_content(named, {"rm"}) == named
