"""Checks run before any training, so bad input stops a sweep with nothing spent.

Everything that can be known from the spec and the data files is checked
here: methods and options this version can run, every data file (each row
validated once), and what each evaluation suite needs from its data.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.data.load import check_weights, load_rows
from harness.errors import HarnessError
from harness.eval.backends import resolve_backend
from harness.eval.generation import generation_for
from harness.eval.suite import suite_options
from harness.eval.suites import SUITES, check_suites, limited_items
from harness.methods.registry import METHODS
from harness.run.scoring import baseline_from_file, baseline_kind
from harness.serve.toy_judge import check_toy_items, guards_toy_judge
from harness.toy import TOY_MODELS, is_toy, toy_name
from harness.train.rewards import check_reward_data
from harness.train.stages import check_hardware
from harness.train.vllm_rollouts import resolve_rollout_backend
from judges.judged import text_of


def check_stage_settings(stage) -> None:
    """Settings that validate as spec keys but that this version cannot run yet."""
    entry = METHODS[stage.method.name]
    if not entry.implemented:
        available = sorted(n for n, m in METHODS.items() if m.implemented)
        raise HarnessError(f"method.name: {entry.name!r} is not available in this version (available: {available})")
    if "rollout_backend" in stage.method.params:  # vllm asked for where it cannot run: refused before any training
        resolve_rollout_backend(stage.method.params["rollout_backend"])


def check_reward_model_stages(stages) -> None:
    """An ``rm`` stage trains a scorer, not a policy: nothing can generate from it or train on top of it."""
    for k, stage in enumerate(stages):
        if not METHODS[stage.method.name].batch.scalar_head:
            continue
        evaluated = k == len(stages) - 1 or stage.eval.after == "every_stage"  # eval.after: final skips the others
        if stage.eval.suites and evaluated:
            raise HarnessError(f"stage {stage.name!r}: eval.suites {stage.eval.suites}: an rm stage trains a reward "
                               "model, which cannot generate; leave eval.suites empty (use data.eval for held-out "
                               "reward accuracy)")
        named = [s.name for s in stages[k + 1:] if (s.method.params.get("reward") or {}).get("model") == stage.name]
        if k < len(stages) - 1 and not named:
            raise HarnessError(f"stage {stage.name!r}: an rm stage must be the last stage, or the reward source of "
                               f"a later online stage (method.reward: {{model: {stage.name}}}); its output is a "
                               "reward model, not a policy for the next stage")


def stages_before(stage, trials) -> list:
    """The stages that come before ``stage`` in its trial."""
    for trial in trials:
        for k, other in enumerate(trial.stages):
            if other is stage:
                return list(trial.stages[:k])
    return []


def check_model(uri: str | None, key: str) -> None:
    """A toy model must exist by name, and a local model path on disk (hub ids are resolved later)."""
    if uri is None:
        return
    if is_toy(uri):
        if toy_name(uri) not in TOY_MODELS:
            raise HarnessError(f"{key}: {uri!r} is not a toy model (toy models: {sorted(TOY_MODELS)})")
        return
    path = Path(uri).expanduser()
    looks_local = uri.startswith((".", "/", "~")) or (os.sep in uri and path.parent.exists())
    if looks_local and not path.is_dir():
        raise HarnessError(f"{key}: model directory {uri!r} not found")


def check_eval(eval_cfg, rows_of) -> None:
    """Each suite of ``eval_cfg``: available, decodable as configured (by a backend that can run here),
    and its data fit for it."""
    check_suites(eval_cfg.suites)
    if eval_cfg.suites:
        resolve_backend(eval_cfg.generation.backend)
    for suite in eval_cfg.suites:
        options = suite_options(eval_cfg, suite)
        generation = generation_for(eval_cfg.generation, options)
        if generation.n > 1 and generation.temperature == 0:
            raise HarnessError(f"eval.{suite}.n: {generation.n} samples need temperature > 0 "
                               "(greedy decoding gives one answer)")
        SUITES[suite].check(options, SUITES[suite].items(options))
        baseline = options.get("baseline")
        if baseline is not None and baseline_kind(baseline) == "file":
            baseline_from_file(baseline, SUITES[suite].items(options), suite)


def check_judge_data(spec, eval_cfgs) -> None:
    """The embedded toy judge (``judge.base_url`` null) scores only toy-world items (``check_toy_items``)."""
    if not guards_toy_judge(spec.judge):
        return
    judged = {}
    for eval_cfg in eval_cfgs:
        for suite in eval_cfg.suites:
            options = suite_options(eval_cfg, suite)
            if SUITES[suite].needs_judge(options):
                judged[f"eval.{suite}"] = limited_items(suite, options)[0]
    check_toy_items(judged, "set judge.allow_toy_judge: true")


def check_judge_rewards(spec, stages, rows_of) -> None:
    """An online stage judged by the embedded toy judge must train on toy-world prompts (``check_toy_items``)."""
    if not guards_toy_judge(spec.judge):
        return
    judged = {}
    for stage in stages:
        if (stage.method.params.get("reward") or {}).get("judge") is not None:
            rows = rows_of(stage.data.train, METHODS[stage.method.name].batch.row_kind)
            judged[f"stages.{stage.name}.method.reward"] = [{"instruction": text_of(r.data["prompt"])} for r in rows]
    check_toy_items(judged, "set judge.allow_toy_judge: true")


def preflight(spec, trials) -> None:
    """Raise a HarnessError naming the first problem; return quietly when all is well."""
    stages = [stage for trial in trials for stage in trial.stages]
    for trial in trials:
        check_reward_model_stages(trial.stages)
    check_model(spec.model, "model")
    for stage in stages:
        check_stage_settings(stage)
        check_hardware(stage)  # bf16, fp16 and QLoRA need a GPU: refused before any training
        check_model(stage.ref_model, "ref_model")
    loaded: dict[tuple[str, str], list] = {}

    def rows_of(uri: str, kind: str) -> list:
        if (uri, kind) not in loaded:
            loaded[(uri, kind)] = load_rows(uri, kind)
        return loaded[(uri, kind)]

    for stage in stages:
        kind = METHODS[stage.method.name].batch.row_kind
        field = METHODS[stage.method.name].weight_field(stage.method.params)
        for uri in filter(None, [stage.data.train, stage.data.eval]):
            rows = rows_of(uri, kind)
            if field is not None:
                check_weights(rows, field)
        check_reward_data(stage.method.params.get("reward"), rows_of(stage.data.train, kind),
                          [s.name for s in stages_before(stage, trials) if METHODS[s.method.name].batch.scalar_head])
    for eval_cfg in [spec.eval] + [stage.eval for stage in stages]:
        check_eval(eval_cfg, rows_of)
    check_judge_data(spec, [spec.eval] + [stage.eval for stage in stages])
    check_judge_rewards(spec, stages, rows_of)
