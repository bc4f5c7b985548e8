"""The local sweep executor: trials -> stages -> evaluation -> the MLflow run tree.

Run tree (DESIGN.md, "Contract: MLflow names"): one parent run per sweep
(tag ``harness.sweep_id``), one child per trial (``harness.trial_id``), and a
nested run per stage of a multi-stage trial (``harness.stage``,
``harness.cache_hit``).  A FINISHED trial is skipped on re-run; a FAILED or
RUNNING one resumes its own child run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from harness.cache import digest
from harness.config.grid import Trial, stage_key
from harness.config.spec import Spec, flatten, spec_to_dict
from harness.console import say
from harness.errors import HarnessError, NonFiniteError
from harness.eval.suite import Suite, suite_options
from harness.eval.suites import SUITES
from harness.methods.registry import METHODS
from harness.run.context import SweepContext, open_context
from harness.run.executors import Resources, TrialJob, WorkerLost, make_executor
from harness.run.preflight import preflight
from harness.run.scoring import Reference, baseline_kind, evaluate_model, joint_metrics
from harness.train.models import (
    device,
    merged,
    model_identity,
    resolve_model_path,
    save_checkpoint,
)
from harness.train.reference import data_fingerprint
from harness.train.rewards import JudgeAccess
from harness.train.stages import kl_estimator, shared_stage_data, train_stage
from harness.train.vllm_rollouts import resolve_rollout_backend, rollouts_keyed


@dataclass
class SweepSummary:
    """Trial ids by outcome; ``failed`` maps each to its error message."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def trial_count(n: int, with_base: bool) -> str:
    """``2 trials + base``: the grid's trials, and the base trial that ``eval.include_base`` adds to them
    (so that the closing ``3 ran`` adds up)."""
    return f"{n} trial{'' if n == 1 else 's'}" + (" + base" if with_base else "")


def run_sweep(spec: Spec, trials: list[Trial], *, tracking_uri: str | None = None, force: bool = False,
              progress: bool = True, echo=print, executor: str = "local", max_parallel: int | None = 1,
              ray_address: str | None = None) -> SweepSummary:
    """Run every trial not yet FINISHED (all of them with ``force``), then return a summary.

    ``executor`` and ``max_parallel`` choose where trials run (``harness.run.executors``); named
    baselines (and the base trial they may name) run to the end before the trials that compare with them.
    """
    preflight(spec, trials)
    work = ([_base_trial(spec)] if spec.eval.include_base else []) + trials
    ctx = open_context(spec, trial_names(work), tracking_uri, force, progress, echo)
    echo(f"experiment {spec.name!r}: {trial_count(len(trials), spec.eval.include_base)}; "
         f"store {ctx.tracker.store.tracking_uri}")
    resources = Resources.of(spec)

    def run_here(job: TrialJob) -> str | None:  # the sequential executor: this process, the sweep's context
        return _run_trial(ctx, parent, job.trial)  # parent: assigned below, before any trial runs

    runner = make_executor(executor, max_parallel, run_job, run_here, resources, ray_address, echo)
    parent = _parent_run(ctx)
    summary = SweepSummary()
    try:
        # shared_stage_data: this process's trials that tokenize the same data alike do it once.
        with runner, worker_store(ctx, runner) as store_uri, shared_stage_data():
            judge_url = ctx.judge.url() if runner.parallel and needs_judge(work) else None  # one for all workers
            jobs = [TrialJob(ctx.spec, trial, ctx.trial_ids, store_uri, parent, ctx.force, os.getcwd(), judge_url,
                             threads=max(1, int(resources.cpus)) if runner.parallel else None)
                    for trial in work]
            bar = tqdm(total=len(jobs), desc="trials", disable=None if progress else True, unit="trial")
            for wave in waves(jobs, ctx.trial_ids):
                for trial_id, outcome in runner.run(wave):
                    if isinstance(outcome, WorkerLost):
                        outcome = _mark_lost(ctx, trial_id, outcome)
                    _record(summary, trial_id, outcome)
                    bar.update(1)
            bar.close()
        for suite in swept_suites(work):
            if suite.sweep_joint is not None:
                joint_metrics(ctx, suite)
    except KeyboardInterrupt:
        ctx.tracker.set_status(parent, "KILLED")
        raise
    finally:
        ctx.judge.close()
    ctx.tracker.set_status(parent, "FAILED" if summary.failed else "FINISHED")
    return summary


def _record(summary: SweepSummary, trial_id: str, outcome: str | None) -> None:
    if outcome is None:
        summary.ran.append(trial_id)
    elif outcome == SKIPPED:
        summary.skipped.append(trial_id)
    else:
        summary.failed[trial_id] = outcome


def waves(jobs: list[TrialJob], trial_ids: dict[str, str]) -> list[list[TrialJob]]:
    """The trials named as a baseline, then the others: every job of a wave ends before the next wave starts."""
    named = named_baselines([job.trial for job in jobs], trial_ids)
    first, rest = [j for j in jobs if j.trial_id in named], [j for j in jobs if j.trial_id not in named]
    return [wave for wave in (first, rest) if wave]


def run_job(job: TrialJob) -> str | None:
    """One trial in a worker (a local process or a Ray task): its own context on the sweep's store,
    then ``_run_trial`` under the sweep's parent run.  Returns the trial's outcome."""
    import torch

    from harness.console import quiet_libraries

    quiet_libraries()
    try:
        os.chdir(job.cwd)
    except OSError as exc:
        raise HarnessError(f"worker on {socket.gethostname()}: cannot enter the sweep's directory {job.cwd} "
                           f"({exc.strerror}); on a cluster it must be on a file system every node shares") from None
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    prefix = f"[{job.trial_id}] "
    ctx = open_context(job.spec, job.trial_ids, job.tracking_uri, job.force, False,
                       lambda line: say(prefix + line), job.judge_url)
    try:
        return _run_trial(ctx, job.parent_run, job.trial,
                          {"harness.worker_pid": str(os.getpid()), "harness.worker_host": socket.gethostname()})
    finally:
        ctx.judge.close()


@contextlib.contextmanager
def worker_store(ctx: SweepContext, runner):
    """The tracking URI the trials log to: the sweep's store, or, when several workers would write a sqlite
    file at once, one ``mlflow server`` over it for the sweep's duration (``harness.run.tracking_server``).

    A tracking server (http) or a database server (PostgreSQL, MySQL) takes several writers as it is.
    """
    uri = ctx.tracker.store.tracking_uri
    if not runner.parallel or not uri.startswith("sqlite:"):
        yield uri
        return
    nodes = runner.nodes() if hasattr(runner, "nodes") else 1
    if nodes > 1:
        raise HarnessError(f"tracking store {uri}: a Ray cluster of {nodes} nodes needs a tracking server "
                           "every node reaches; pass --tracking-uri http://HOST:PORT (README: Running on a cluster)")
    from harness.run.tracking_server import sweep_server

    with sweep_server(ctx.tracker.store) as store:
        ctx.echo(f"tracking: the workers log through {store.tracking_uri} (mlflow server over {uri})")
        yield store.tracking_uri


def _mark_lost(ctx: SweepContext, trial_id: str, message: str) -> str:
    """A trial whose worker died: its run (and a stage run it left RUNNING) is marked FAILED, so that the
    next sweep resumes it; the message is the trial's error."""
    found = _find_trial_run(ctx, trial_id)
    if found is not None and found.info.status == "RUNNING":
        ctx.tracker.set_tags(found.info.run_id, {"harness.error": message})
        ctx.tracker.set_status(found.info.run_id, "FAILED")
        stage_runs = ctx.tracker.client.search_runs(
            [ctx.experiment_id], f"tags.`mlflow.parentRunId` = '{found.info.run_id}'", max_results=1000)
        for run in stage_runs:
            if run.info.status == "RUNNING":
                ctx.tracker.set_status(run.info.run_id, "FAILED")
    ctx.echo(f"FAILED {trial_id}: {message}")
    return str(message)


def needs_judge(work: list) -> bool:
    """Whether some trial of the sweep calls the judge: a suite that is judged, or an online stage's reward."""
    for trial in work:
        for eval_cfg in [trial.spec.eval] + [stage.eval for stage in trial.stages]:
            if any(SUITES[s].needs_judge(suite_options(eval_cfg, s)) for s in eval_cfg.suites):
                return True
        if any((stage.method.params.get("reward") or {}).get("judge") is not None for stage in trial.stages):
            return True
    return False


def swept_suites(work: list) -> list[Suite]:
    """Every suite some trial or stage of the sweep evaluates, in registry order."""
    names = {s for t in work for s in (*t.spec.eval.suites, *(s for st in t.stages for s in st.eval.suites))}
    return [suite for name, suite in SUITES.items() if name in names]


def trial_names(work: list) -> dict[str, str]:
    """How a baseline may name a trial of this sweep: its id, or its name without the config hash
    (``lr0.0001-seed0``; the id's hash covers eval settings, so setting the baseline changes it)."""
    names: dict[str, list[str]] = {}
    for trial in work:
        names.setdefault(trial.id.rsplit("-", 1)[0] if trial.id != "base" else "base", []).append(trial.id)
    out = {name: ids[0] for name, ids in names.items() if len(ids) == 1}
    return {**out, **{t.id: t.id for t in work}}


def named_baselines(work: list, trial_ids: dict[str, str]) -> set[str]:
    """The ids of the trials some trial names as its baseline (``eval.<suite>.baseline: TRIAL``)."""
    named = set()
    for trial in work:
        for eval_cfg in [trial.spec.eval] + [stage.eval for stage in trial.stages]:
            for suite in eval_cfg.suites:
                value = getattr(getattr(eval_cfg, suite), "baseline", None)
                if value is not None and baseline_kind(value) == "trial":
                    named.add(trial_ids.get(value, value))
    return named


@dataclass(frozen=True)
class _BaseTrial:
    """The starting model, evaluated as trial ``base`` (``eval.include_base``)."""

    id: str
    spec: Spec
    stages: tuple = ()


def _base_trial(spec: Spec) -> _BaseTrial:
    return _BaseTrial("base", spec)


SKIPPED = "skipped"


def _run_trial(ctx: SweepContext, parent: str, trial, worker: dict | None = None) -> str | None:
    """Run or skip one trial; returns None when it ran, ``SKIPPED``, or its error message.

    ``worker``: tags naming the worker process that runs it (``harness.worker_pid``, ``harness.worker_host``)."""
    found = _find_trial_run(ctx, trial.id)
    if found and found.info.status == "FINISHED" and not ctx.force:
        ctx.echo(f"skip {trial.id} (finished run {found.info.run_id})")
        return SKIPPED
    # A trial trained in its own run (no stages:) that trains again would log steps 1.. over the old ones.
    fresh = (found is not None and not isinstance(trial, _BaseTrial) and not trial.spec.stages
             and _retrains(ctx, _stage_keys(ctx, trial)[-1], found))
    if fresh:
        ctx.tracker.client.delete_run(found.info.run_id)
    if found and not fresh:
        run_id = found.info.run_id
        ctx.tracker.set_status(run_id, "RUNNING")
    else:
        method = trial.stages[-1].method.name if trial.stages else "base"
        tags = {**ctx.common_tags, "harness.trial_id": trial.id, "harness.method": method,
                "harness.spec_sha": digest(spec_to_dict(trial.spec))}
        run_id = ctx.tracker.create_run(ctx.experiment_id, trial.id, tags, parent_id=parent)
    how = "starting" if not found else "re-running (--force)" if found.info.status == "FINISHED" else "resuming"
    ctx.echo(f"trial {trial.id}: {how} (run {run_id})")
    try:
        if worker:
            ctx.tracker.set_tags(run_id, worker)
        ctx.tracker.log_params(run_id, trial_params(trial))
        ctx.tracker.log_text(run_id, yaml.safe_dump(spec_to_dict(trial.spec), sort_keys=False),
                             "resolved_spec.yaml")
        if isinstance(trial, _BaseTrial):
            _evaluate_base(ctx, run_id, trial.spec)
        else:
            _run_stages(ctx, run_id, trial)
    except KeyboardInterrupt:  # Ctrl-C: mark the run so that the next sweep resumes it, then stop
        ctx.tracker.set_tags(run_id, {"harness.error": "interrupted (Ctrl-C)"})
        ctx.tracker.set_status(run_id, "KILLED")
        ctx.echo(f"interrupted {trial.id}: run {run_id} marked KILLED; the next sweep resumes it")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure marks the trial FAILED and the sweep goes on
        message = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
        ctx.tracker.set_tags(run_id, {"harness.error": message[:5000]})
        ctx.tracker.log_text(run_id, traceback.format_exc(), "error.txt")
        ctx.tracker.set_status(run_id, "FAILED")
        ctx.echo(f"FAILED {trial.id}: {message}")
        return message
    if found and not fresh and "harness.error" in found.data.tags:
        ctx.tracker.client.delete_tag(run_id, "harness.error")  # the resumed trial succeeded
    ctx.tracker.set_status(run_id, "FINISHED")
    return None


def trial_params(trial) -> dict:
    """The resolved spec, flattened with dotted keys, plus the effective batch size."""
    resolved = {k: v for k, v in spec_to_dict(trial.spec).items() if k not in ("ablate", "seeds")}
    params = flatten(resolved)
    for key, value in getattr(trial, "overrides", {}).items():  # an ablated mapping or list: one axis
        if isinstance(value, (dict, list)):
            params[key] = value
    if trial.stages:
        t = trial.stages[-1].train
        params["train.effective_batch_size"] = t.batch_size * t.grad_accum * t.processes
    return params


def _run_stages(ctx: SweepContext, trial_run: str, trial: Trial) -> None:
    """Train (or fetch from cache) each stage in order, evaluating as ``eval.after`` says."""
    path = resolve_model_path(trial.spec.model, ctx.cache_dir)
    key = model_identity(path)
    multi = bool(trial.spec.stages)
    model = tokenizer = None
    reward_models: dict[str, str] = {}  # rm stage name -> its saved model, for a later online stage
    for i, (stage, stage_id) in enumerate(zip(trial.stages, _stage_keys(ctx, trial))):
        last = i == len(trial.stages) - 1
        run_id = _stage_run(ctx, trial_run, trial, stage, stage_id) if multi else trial_run
        input_key, key = key, stage_id
        persist = not (last and stage.train.save == "none")
        try:
            model, tokenizer = _stage_output(ctx, run_id, trial, with_reward_model(stage, reward_models), path,
                                             input_key, key, persist, multi)
        except BaseException as exc:
            if multi:  # the stage's own run says so too, not only the trial's
                ctx.tracker.set_status(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        if METHODS[stage.method.name].batch.scalar_head and not last:
            # A reward model for a later online stage, not a policy: the next stage starts from `path`.
            reward_models[stage.name] = str(ctx.stages.model_dir(key))
        elif persist:
            path = str(ctx.stages.model_dir(key))
        if multi and not last and stage.eval.after == "every_stage":
            _evaluate(ctx, run_id, stage.eval, key, path, model, tokenizer, trial, f"{trial.id}/{stage.name}")
        if multi:
            ctx.tracker.set_status(run_id, "FINISHED")
    ctx.tracker.set_tags(trial_run, {"harness.checkpoint": path if persist else "none (train.save: none)"})
    ctx.tracker.log_text(trial_run, json.dumps({"checkpoint": path if persist else None}), "checkpoint.json")
    # Not saved (train.save: none): no checkpoint, only the trained model in memory.
    _evaluate(ctx, trial_run, trial.stages[-1].eval, key, path if persist else None, model, tokenizer, trial)


def with_reward_model(stage, reward_models: dict[str, str]):
    """``stage`` with ``method.reward.model`` naming an earlier rm stage replaced by that stage's saved model."""
    reward = stage.method.params.get("reward") or {}
    name = reward.get("model")
    if name not in reward_models:
        return stage
    params = {**stage.method.params, "reward": {**reward, "model": reward_models[name]}}
    return dataclasses.replace(stage, method=dataclasses.replace(stage.method, params=params))


def _stage_keys(ctx: SweepContext, trial: Trial) -> list[str]:
    """Each stage's cache key, in order: a hash of its config, its input model's key and its data."""
    key, keys = model_identity(resolve_model_path(trial.spec.model, ctx.cache_dir)), []
    for i, stage in enumerate(trial.stages):
        keyed = by_content(rollouts_keyed(stage), {s.name for s in trial.stages[:i]})
        key = stage_key(keyed, key, data_fingerprint(stage))
        keys.append(key)
    return keys


def by_content(stage, earlier: set[str]):
    """``stage`` with each model directory it reads besides its input (``ref_model``, ``method.reward_model``,
    ``method.reward.model``) named by its content (``model_identity``) as well as its path, for the stage key:
    a reward model retrained in place is a different reward, and the stage trains again.  A reward named
    by an earlier stage is keyed by that stage's key already (it is in the chain)."""
    def keyed(path):
        return f"{path}@{model_identity(path)}" if path and Path(path).is_dir() else path

    params = dict(stage.method.params)
    if "reward_model" in params:
        params["reward_model"] = keyed(params["reward_model"])
    reward = params.get("reward") or {}
    if reward.get("model") and reward["model"] not in earlier:
        params["reward"] = {**reward, "model": keyed(reward["model"])}
    method = dataclasses.replace(stage.method, params=params)
    return dataclasses.replace(stage, method=method, ref_model=keyed(stage.ref_model))


def _retrains(ctx: SweepContext, key: str, run) -> bool:
    """Whether the stage ``key`` trains again (forced, or not cached) into ``run``, which already holds
    training metrics: then a fresh run takes its place, so that every metric history is one series."""
    trains = ctx.force or ctx.stages.meta(key) is None
    return trains and any(k.startswith("train/") for k in run.data.metrics)


def _stage_output(ctx: SweepContext, run_id: str, trial: Trial, stage, path: str, input_key: str, key: str,
                  persist: bool, multi: bool):
    """A stage's trained model: (None, None) on a cache hit (it is on disk), else (model, tokenizer).

    ``key`` names the stage's cache entry; ``input_key`` is the identity of the model it starts from.
    """
    with ctx.stages.lock(key):  # a parallel trial training the same stage finishes first; this one then hits
        return _stage_output_locked(ctx, run_id, trial, stage, path, input_key, key, persist, multi)


def _stage_output_locked(ctx: SweepContext, run_id: str, trial: Trial, stage, path: str, input_key: str,
                         key: str, persist: bool, multi: bool):
    meta = None if ctx.force else ctx.stages.meta(key)
    if meta is not None:
        ctx.echo(f"  stage {stage.name}: cached (trained in run {meta['run_id']})")
        if multi:
            ctx.tracker.set_tags(run_id, {"harness.cache_hit": "true", "harness.stage_source_run": meta["run_id"]})
        return None, None
    if multi:
        ctx.tracker.set_tags(run_id, {"harness.cache_hit": "false"})
    estimator = kl_estimator(stage)
    if estimator:
        ctx.tracker.set_tags(run_id, {"harness.kl_estimator": estimator})
    if "rollout_backend" in stage.method.params:
        backend = resolve_rollout_backend(stage.method.params["rollout_backend"])
        ctx.tracker.set_tags(run_id, {"harness.rollout_backend": backend})
    ctx.echo(f"  stage {stage.name}: training {stage.method.name}")
    try:
        model, tokenizer, result = train_stage(
            stage, path, input_key, ctx.cache_dir,
            lambda metrics, step: ctx.tracker.log_metrics(run_id, metrics, step), ctx.force, ctx.progress,
            log_text=lambda text, name: ctx.tracker.log_text(run_id, text, name),
            judge=JudgeAccess(ctx.judge.client, ctx.spec.judge.max_error_rate))
    except NonFiniteError as exc:
        raise NonFiniteError(f"stage {stage.name} ({stage.method.name}): {exc}") from exc
    model = merged(model, path)  # path: the stage's input (a QLoRA adapter merges into it unquantized)
    if persist:
        save_checkpoint(model, tokenizer, ctx.stages.model_dir(key))
        ctx.echo(f"  stage {stage.name}: checkpoint {ctx.stages.model_dir(key)}")
        ctx.stages.mark_complete(key, {"run_id": run_id, "trial_id": trial.id, "stage": stage.name,
                                       "steps": result.steps})
    return model, tokenizer


def _evaluate_base(ctx: SweepContext, run_id: str, spec: Spec) -> None:
    path = resolve_model_path(spec.model, ctx.cache_dir)
    ctx.tracker.set_tags(run_id, {"harness.checkpoint": path})
    _evaluate(ctx, run_id, spec.eval, model_identity(path), path, None, None, _base_trial(spec))


def _evaluate(ctx: SweepContext, run_id: str, eval_cfg, model_key: str, path: str | None, model, tokenizer,
              trial, name: str | None = None) -> None:
    """Every suite of ``eval_cfg`` on the model; the KL reference is the trial's starting model.

    ``name`` names the generator in the logged rows: the trial id (default), or ``<trial id>/<stage>``.
    """
    if not eval_cfg.suites:
        return
    start = resolve_model_path(trial.spec.model, ctx.cache_dir)
    ref = Reference(model_identity(start), start)
    evaluate_model(ctx, run_id, eval_cfg, model_key, path, model, tokenizer, trial.id, ref, device(), name)


# ---------------------------------------------------------------- the run tree: find, create or resume runs


def _parent_run(ctx: SweepContext) -> str:
    """The sweep's parent run, found again by ``harness.sweep_id`` so that a re-run reuses it."""
    tags = {**ctx.common_tags, "harness.spec_sha": digest(spec_to_dict(ctx.spec))}
    found = ctx.tracker.find_run(ctx.experiment_id, {"harness.sweep_id": ctx.sweep_id,
                                                     "harness.role": "sweep"})
    if found:
        run_id = found.info.run_id
        ctx.tracker.set_status(run_id, "RUNNING")
    else:
        run_id = ctx.tracker.create_run(ctx.experiment_id, f"sweep-{ctx.sweep_id}",
                                        {**tags, "harness.role": "sweep"})
        ctx.tracker.log_text(run_id, yaml.safe_dump(spec_to_dict(ctx.spec), sort_keys=False),
                             "resolved_spec.yaml")
    return run_id


def _find_trial_run(ctx: SweepContext, trial_id: str):
    """The child run of trial ``trial_id`` in this sweep, or None."""
    return ctx.tracker.find_run(ctx.experiment_id, {"harness.trial_id": trial_id,
                                                    "harness.sweep_id": ctx.sweep_id})


def _stage_run(ctx: SweepContext, trial_run: str, trial: Trial, stage, key: str) -> str:
    """The nested run of one stage, reused when the trial resumes, unless the stage (cache key ``key``)
    trains again over logged training metrics (``_retrains``): then the old run is deleted and a fresh one made."""
    found = ctx.tracker.find_run(ctx.experiment_id, {"mlflow.parentRunId": trial_run, "harness.stage": stage.name})
    if found and _retrains(ctx, key, found):
        ctx.tracker.client.delete_run(found.info.run_id)
        found = None
    if found:
        ctx.tracker.set_status(found.info.run_id, "RUNNING")
        return found.info.run_id
    tags = {**ctx.common_tags, "harness.stage": stage.name, "harness.stage_of": trial.id,
            "harness.method": stage.method.name}
    run_id = ctx.tracker.create_run(ctx.experiment_id, f"{trial.id}/{stage.name}", tags, parent_id=trial_run)
    ctx.tracker.log_params(run_id, flatten(stage.to_dict()))
    return run_id
