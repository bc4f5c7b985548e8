"""Evaluation inside a sweep: generation -> verifiers/judges -> ``eval/<suite>/<metric>``.

Per suite and model: the suite's prompts, the model's outputs, the baseline's
outputs (suites judged against one), the scores, the mean response length and
the sampled KL to the trial's starting model (``harness.eval.kl``, estimator
named by the tag ``harness.kl_estimator``).  Results are cached by (model,
reference, suite, options, decoding, judge, baseline): ``harness.cache.EvalKey``
and ``EvalCache``; decoding names the resolved backend (``harness.eval.backends``).
Judge calls are also cached one by one by the judge client, so a re-run costs
no judged call.

Generation goes through one open generator at a time (``Serving``): a vLLM
engine serves the saved checkpoint and is closed once the model's suites are
done, before training resumes; the KL always uses the HF model.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cache import EvalKey
from harness.config.spec import JudgeSpec
from harness.data.load import fingerprint
from harness.errors import HarnessError
from harness.eval.backends import open_generator, resolved
from harness.eval.generation import generate_outputs, generation_for
from harness.eval.kl import KL_ESTIMATOR, sampled_kl
from harness.eval.outputs import baseline_for, read_outputs
from harness.eval.suite import Suite, suite_options
from harness.eval.suites import SUITES, limited_items
from harness.profile import timed
from harness.run.context import SweepContext
from harness.train.models import load_model, load_tokenizer, save_checkpoint
from judges.stats.annotations import length_function


@dataclass
class Reference:
    """The trial's starting model: the KL reference and the ``base`` baseline; loaded on first use."""

    key: str
    path: str
    _loaded: tuple | None = None

    def load(self, device):
        if self._loaded is None:
            self._loaded = (load_model(self.path).to(device).eval(), load_tokenizer(self.path))
        return self._loaded

    def generator(self, generation, device):
        model, tokenizer = self.load(device)  # the KL reference too: loaded once
        return open_generator(generation, self.path, tokenizer, model)


@dataclass
class Policy:
    """The model under evaluation: its checkpoint ``path`` (None: not saved, ``train.save: none``)
    and its HF model and tokenizer, given or loaded on first use."""

    path: str | None
    device: Any
    model: Any = None
    tokenizer: Any = None
    _tmp: tempfile.TemporaryDirectory | None = None

    def load(self):
        if self.model is None:
            self.model = load_model(self.path).to(self.device).eval()
        return self.model, self.tok()

    def tok(self):
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.path)
        return self.tokenizer

    def checkpoint(self) -> str:
        """A directory to serve: the saved checkpoint, else a temporary save removed by ``cleanup``."""
        if self.path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="harness-eval-")
            self.path = str(save_checkpoint(self.model, self.tokenizer, Path(self._tmp.name) / "model"))
        return self.path

    def generator(self, generation):
        """vLLM serves the checkpoint (no HF model needed); transformers runs the HF model."""
        if generation.backend == "vllm":
            return open_generator(generation, self.checkpoint(), self.tok())
        model, tokenizer = self.load()
        return open_generator(generation, self.path, tokenizer, model)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class Serving:
    """The one open generator of an evaluation: a vLLM engine takes a fixed share of the GPU, so the
    policy's and the starting model's engines are never open together.  ``close`` frees it."""

    def __init__(self):
        self.role, self.open = None, None

    def get(self, role: str, opener):
        """The generator of ``role`` ("policy" or "base"), opened by ``opener()`` unless it is open."""
        if self.role != role:
            self.close()
            self.open, self.role = opener(), role
        return self.open

    def close(self) -> None:
        if self.open is not None:
            self.open.close()
        self.role, self.open = None, None


def baseline_kind(value: str) -> str:
    """``file``, ``base`` or ``trial`` for an ``eval.<suite>.baseline`` value."""
    if value == "base":
        return "base"
    if Path(value).is_file() or value.endswith((".json", ".jsonl")):
        return "file"
    return "trial"


def baseline_from_file(path: str, items: list[dict], suite: str) -> dict[str, dict]:
    """The rows of an outputs file for each item, by id or instruction; an item without one is an error."""
    return baseline_for(items, read_outputs(path), f"the baseline {path} (eval.{suite}.baseline)")


def trial_outputs(ctx: SweepContext, trial_id: str, suite: str) -> list[dict]:
    """The ``outputs/<suite>.jsonl`` artifact of the newest finished run of trial ``trial_id``."""
    found = ctx.tracker.find_run(ctx.experiment_id, {"harness.trial_id": trial_id})
    if found is None or found.info.status != "FINISHED":
        raise HarnessError(f"eval.{suite}.baseline: trial {trial_id!r} has no finished run in experiment "
                           f"{ctx.spec.name!r} (a baseline trial must be a trial of this sweep or an earlier one)")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = ctx.tracker.client.download_artifacts(found.info.run_id, f"outputs/{suite}.jsonl", tmp)
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise HarnessError(f"eval.{suite}.baseline: run {found.info.run_id} of trial {trial_id!r} "
                               f"has no outputs/{suite}.jsonl ({exc})") from None
        return [json.loads(line) for line in Path(local).read_text().splitlines() if line.strip()]


def _trial_baseline(ctx: SweepContext, trial_id: str, suite: str, items: list[dict]) -> dict[str, dict]:
    rows = {str(r["id"]): r for r in trial_outputs(ctx, trial_id, suite) if r.get("sample", 0) == 0}
    missing = [item["id"] for item in items if item["id"] not in rows]
    if missing:
        raise HarnessError(f"eval.{suite}.baseline: trial {trial_id!r} has no output for {len(missing)} prompt(s) "
                           f"(first: {missing[:5]}); it must be evaluated on the same eval.{suite} data")
    return rows


def _base_baseline(ctx: SweepContext, suite: str, items: list[dict], generation, ref: Reference,
                   device, serving: Serving) -> dict[str, dict]:
    """The starting model's outputs on the suite's prompts (cached: trials of a sweep share them)."""
    base = generation.model_copy(update={"n": 1})
    identity = [ref.key, suite, [(i["id"], i["instruction"]) for i in items], base.model_dump()]
    with ctx.evals.baseline_lock(identity):  # parallel trials generate it once
        rows = None if ctx.force else ctx.evals.baseline(identity)
        if rows is None:
            generator = serving.get("base", lambda: ref.generator(base, device))
            rows, _ = generate_outputs(items, generator, base, "base", ctx.progress, f"baseline {suite}")
            ctx.evals.write_baseline(identity, rows)
            rows = ctx.evals.baseline(identity)  # as read back: a fresh entry and a cached one give the same rows
    return {r["id"]: r for r in rows}


def baseline_identity(ctx: SweepContext, suite: str, options: dict, ref: Reference,
                      trial_id: str) -> str | None:
    """What the baseline's outputs depend on, for the eval cache key (None: no baseline)."""
    if not SUITES[suite].needs_baseline(options):
        return None
    value = ctx.trial_ids.get(options["baseline"], options["baseline"])
    kind = baseline_kind(value)
    if value == trial_id:
        return "self"
    if kind == "base":
        return f"base:{ref.key}"
    if kind == "file":
        return f"file:{fingerprint(value)}"
    found = ctx.tracker.find_run(ctx.experiment_id, {"harness.trial_id": value})
    return f"trial:{value}:{found.info.run_id if found else None}"


def suite_baseline(ctx: SweepContext, suite, options, items, generation, ref, device,
                   own: tuple, serving: Serving) -> dict[str, dict] | None:
    """item id -> the baseline's output row; ``own`` is (trial id, this trial's outputs)."""
    if not SUITES[suite].needs_baseline(options):
        return None
    value = ctx.trial_ids.get(options["baseline"], options["baseline"])
    kind = baseline_kind(value)
    if kind == "file":
        return baseline_from_file(value, items, suite)
    if value == own[0]:  # the baseline trial itself (or `base` on trial base): its own outputs, all ties
        return {r["id"]: r for r in own[1] if r["sample"] == 0}
    if kind == "trial":
        return _trial_baseline(ctx, value, suite, items)
    return _base_baseline(ctx, suite, items, generation, ref, device, serving)


def judge_identity(judge_spec: JudgeSpec) -> dict:
    """The judge settings that decide verdicts (not concurrency or timeouts)."""
    return judge_spec.model_dump(exclude={"concurrency", "timeout_s", "api_key_env", "allow_toy_judge",
                                          "max_error_rate"})


def run_suite(ctx: SweepContext, suite: str, options: dict, generation, policy: Policy, serving: Serving,
              trial_id: str, ref: Reference, model_key: str, device, name: str | None = None):
    """Generate, score, and add the KL to the reference and the judge client's counters.

    ``name`` labels the outputs' generator (default the trial id; ``<trial id>/<stage>`` for a stage's eval).
    """
    items, cut = limited_items(suite, options)
    if cut:
        ctx.echo(f"  {cut}")
    generator = serving.get("policy", lambda: policy.generator(generation))
    outputs, samples = generate_outputs(items, generator, generation, name or trial_id, ctx.progress,
                                        f"eval {suite}")
    baseline = suite_baseline(ctx, suite, options, items, generation, ref, device, (trial_id, outputs),
                              serving)
    tokenizer = policy.tok()
    client = ctx.judge.client() if SUITES[suite].needs_judge(options) else None
    length = length_function(options.get("length_unit", "chars"), tokenizer)
    result = SUITES[suite].score(options, items, outputs, baseline, client, length)
    if client is not None:  # raises before the eval cache is written, so a re-run judges again
        client.check_failures(ctx.spec.judge.max_error_rate, f"eval.{suite} of trial {trial_id}")
        result.metrics.update({f"judge_{k}": float(v) for k, v in client.stats.as_metrics().items()})
    if model_key == ref.key:
        result.metrics["kl"] = 0.0  # the policy is the reference: every log-ratio is exactly 0
    else:
        reference, _ = ref.load(device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        result.metrics["kl"] = sampled_kl(policy.load()[0], reference, samples, pad)
    return result


@timed("evaluation")
def evaluate_model(ctx: SweepContext, run_id: str, eval_cfg, model_key: str, path: str | None, model,
                   tokenizer, trial_id: str, ref: Reference, device, name: str | None = None) -> None:
    """Run every suite of ``eval_cfg`` on the model and log it; results are cached.

    ``path`` is the model's checkpoint (None: not saved; then ``model`` is given), ``model`` the
    in-memory model or None.  ``name`` is the generator's name in the logged rows (default the
    trial id).  The generator is closed before this returns.
    """
    policy, serving = Policy(path, device, model, tokenizer), Serving()
    try:
        for suite in eval_cfg.suites:
            _evaluate_suite(ctx, run_id, eval_cfg, suite, model_key, policy, serving, trial_id, ref, device,
                            name or trial_id)
    finally:
        serving.close()
        policy.cleanup()


def _evaluate_suite(ctx: SweepContext, run_id: str, eval_cfg, suite: str, model_key: str, policy: Policy,
                    serving: Serving, trial_id: str, ref: Reference, device, name: str) -> None:
    """One suite: from the eval cache, or generated and scored; logged either way."""
    options = suite_options(eval_cfg, suite)
    generation = resolved(generation_for(eval_cfg.generation, options))
    judge = judge_identity(ctx.spec.judge) if SUITES[suite].needs_judge(options) else None
    key = EvalKey(model_key, ref.key, suite, options, generation.model_dump(), judge,
                  baseline_identity(ctx, suite, options, ref, trial_id))
    metrics = None if ctx.force else ctx.evals.metrics(key)
    if metrics is None:
        result = run_suite(ctx, suite, options, generation, policy, serving, trial_id, ref, model_key, device,
                           name)
        ctx.evals.write(key, suite, result.outputs, result.judgments, result.metrics)
        metrics = ctx.evals.metrics(key)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                      if not k.endswith("_se") and not k.startswith("judge_"))
    ctx.echo(f"  eval {suite}: {shown}")
    ctx.tracker.log_metrics(run_id, {f"eval/{suite}/{k}": v for k, v in metrics.items()})
    ctx.tracker.set_tags(run_id, {"harness.kl_estimator": KL_ESTIMATOR})
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("outputs", "judgments"):  # artifacts outputs/<suite>.jsonl, judgments/<suite>.jsonl
            ctx.tracker.log_file(run_id, named_rows(ctx.evals.rows_file(key, kind, suite), name, Path(tmp) / kind),
                                 kind)


def named_rows(path: Path, name: str, scratch: Path) -> Path:
    """``path``, or a copy in ``scratch`` whose generator fields say ``name``: a cached entry carries the
    name of whichever trial or stage computed it first, and these rows are logged for this one."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cached = {r.get("generator") for r in rows} - {None}
    if cached <= {name}:
        return path
    for row in rows:
        if row.get("generator") in cached:
            row["generator"] = name
        if row.get("generator_2") in cached:  # alpaca's annotation rows: generator_2 is the model
            row["generator_2"] = name
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / path.name
    out.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    return out


def joint_metrics(ctx: SweepContext, suite: Suite) -> None:
    """The suite's metrics fitted jointly over every finished trial of this sweep that it scored
    (``Suite.sweep_joint``, e.g. alpaca's joint LC GLM), logged on each trial as ``eval/<suite>/<metric>``."""
    runs = ctx.tracker.client.search_runs([ctx.experiment_id], f"tags.`harness.sweep_id` = '{ctx.sweep_id}'",
                                          max_results=10000)
    prefix = f"eval/{suite.name}/"
    trial_runs = {r.data.tags["harness.trial_id"]: r.info.run_id for r in runs
                  if "harness.trial_id" in r.data.tags and r.info.status == "FINISHED"
                  and any(k.startswith(prefix) for k in r.data.metrics)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run_id in enumerate(trial_runs.values()):
            local = ctx.tracker.client.download_artifacts(run_id, f"judgments/{suite.name}.jsonl", f"{tmp}/{i}")
            rows += list(map(json.loads, Path(local).read_text().splitlines()))
    for generator, metrics in suite.sweep_joint(rows).items():
        if generator not in trial_runs:
            continue
        ctx.tracker.log_metrics(trial_runs[generator], {prefix + k: v for k, v in metrics.items()})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        ctx.echo(f"  {suite.name} joint fit over this sweep's trials: {generator} {shown}")
