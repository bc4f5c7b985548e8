"""Parallel executors against the sequential one: the same run tree and the same numbers, the shared
stage trained once, and a killed worker costing only its own trial.

The sweep: one shared SFT stage, then DPO at four betas (4 trials, one seed).  The sequential
sweep runs in this process with one torch thread, the parallel ones in workers with one thread each
(``resources.cpus_per_trial: 1``), so the toy world's numbers must agree bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.config.grid import expand_trials
from harness.config.spec import load_spec
from harness.data.load import fingerprint
from harness.run.sweep import run_sweep
from tests.e2e.test_interrupts import HARNESS_CLI

ROOT = Path(__file__).resolve().parents[2]
BETAS = [0.05, 0.1, 0.2, 0.5]
# Metrics that measure the machine, not the model.
MACHINE = ("peak_memory", "seconds", "per_s", "_time", "time/")


def _spec(tmp_path: Path, name: str = "parallel") -> Path:
    spec = {
        "name": name, "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "train": {"batch_size": 4, "max_length": 64, "log_every": 1},
        "eval": {"suites": ["arith"], "generation": {"max_new_tokens": 4},
                 "arith": {"data": "toy://arith-eval", "limit": 4, "n": 1, "k": [1]}},
        "stages": [
            {"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
             "train": {"max_steps": 3, "lr": 3.0e-3}},
            {"name": "dpo", "method": {"name": "dpo", "beta": 0.1},
             "data": {"train": "toy://arith-pairs", "fraction": 0.005}, "train": {"max_steps": 2, "lr": 1.0e-4}},
        ],
        "ablate": {"stages.dpo.method.beta": BETAS},
        "seeds": [0],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_tree(tmp_path: Path, name: str = "parallel") -> dict:
    """Every run of the experiment, keyed by (trial, stage) or "parent": status, cache-hit tag, metric histories."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    tree = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        tags = run.data.tags
        if tags.get("harness.role") == "sweep":
            key = "parent"
        elif "harness.stage" in tags:
            key = (tags["harness.stage_of"], tags["harness.stage"])
        else:
            key = (tags["harness.trial_id"], None)
        assert key not in tree, f"two runs for {key}"
        history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
                   for k in run.data.metrics if not any(part in k for part in MACHINE)}
        tree[key] = {"status": run.info.status, "cache_hit": tags.get("harness.cache_hit"), "metrics": history,
                     "parent": tags.get("mlflow.parentRunId") is not None}
    return tree


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("sequential")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["sweep", str(_spec(tmp_path))]) == 0
    finally:
        torch.set_num_threads(threads)
    return run_tree(tmp_path)


def _reference_passes(tree: dict) -> float:
    return sum(v for run in tree.values() for _, v in run["metrics"].get("train/reference_passes", []))


def _model_metrics(run: dict) -> dict:
    """Everything but the work counts: reference passes (one for all, either way) and data passes (the
    sequential sweep's trials share one tokenization in its process; each worker process tokenizes its own)."""
    return {k: v for k, v in run["metrics"].items() if k not in ("train/reference_passes", "train/data_passes")}


def _check_same_tree(tree: dict, sequential: dict) -> None:
    assert set(tree) == set(sequential)
    trials = [k for k in tree if k != "parent" and k[1] is None]
    assert len(trials) == len(BETAS) and not tree["parent"]["parent"]
    assert all(run["status"] == "FINISHED" for run in tree.values())
    # The shared SFT stage trained exactly once (counted: one stage run that is not a cache hit).
    sft = [run["cache_hit"] for key, run in tree.items() if key != "parent" and key[1] == "sft"]
    assert sorted(sft) == ["false"] + ["true"] * (len(BETAS) - 1)
    # Which trial trains the shared stage, or makes the shared reference pass, may differ; how many may not.
    assert _reference_passes(tree) == _reference_passes(sequential) == 1
    for key, run in sequential.items():
        if key != "parent" and key[1] == "sft":
            continue
        assert tree[key]["cache_hit"] == run["cache_hit"], key
        assert _model_metrics(tree[key]) == _model_metrics(run), key  # bitwise: same seeds, one thread each
    trained = [run["metrics"] for key, run in tree.items() if key != "parent" and run["cache_hit"] == "false"
               and key[1] == "sft"]
    assert trained == [run["metrics"] for key, run in sequential.items()
                       if key != "parent" and key[1] == "sft" and run["cache_hit"] == "false"]


@pytest.mark.slow  # worker processes: about 40 s on 2 cores
def test_local_workers_give_the_sequential_run_tree(tmp_path, sequential):
    assert main(["sweep", str(_spec(tmp_path)), "--max-parallel", "2"]) == 0
    _check_same_tree(run_tree(tmp_path), sequential)


@pytest.mark.slow  # a local Ray instance and two workers: about 40 s on 2 cores
def test_ray_gives_the_sequential_run_tree(tmp_path, sequential):
    pytest.importorskip("ray")
    assert main(["sweep", str(_spec(tmp_path)), "--executor", "ray", "--max-parallel", "2"]) == 0
    _check_same_tree(run_tree(tmp_path), sequential)
    # Finished: a second sweep (sequential) skips every trial and adds no run.
    spec = load_spec(str(_spec(tmp_path)), [])
    summary = run_sweep(spec, expand_trials(spec, fingerprint), progress=False, echo=lambda line: None)
    assert summary.ran == [] and len(summary.skipped) == len(BETAS)
    assert set(run_tree(tmp_path)) == set(sequential)


class ChildSweep:
    """``harness sweep SPEC ARGS`` in a child process, its merged output collected line by line."""

    def __init__(self, spec: Path, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen([*HARNESS_CLI, "sweep", str(spec), *args],
                                     cwd=spec.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def finish(self, timeout_s: float) -> tuple[int | str, str]:
        """The exit code (the child is killed if it is still running after ``timeout_s``) and the output."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = f"still running after {timeout_s} s (killed)"
        self._reader.join(5)
        return code, "".join(self.lines)


KILL_STEPS = 30


def _kill_spec(tmp_path: Path) -> Path:
    spec = {
        "name": "kill", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.02},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": KILL_STEPS, "log_every": 1, "lr": 1.0e-3},
        "eval": {"suites": []},
        "ablate": {"train.lr": [1.0e-3, 2.0e-3]},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _first_training_run(client: MlflowClient, experiment: str, timeout_s: float = 240.0):
    """The first trial run that a worker is training (it has a pid tag and a logged loss)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            for run in client.search_runs([exp.experiment_id]):
                if "harness.worker_pid" in run.data.tags and "train/loss" in run.data.metrics:
                    return run
        time.sleep(0.2)
    raise AssertionError(f"no trial started training within {timeout_s} s")


@pytest.mark.slow  # a Ray sweep in a child process, then a sequential re-run: about 60 s
def test_a_killed_ray_worker_costs_only_its_trial(tmp_path):
    pytest.importorskip("ray")
    spec = _kill_spec(tmp_path)
    sweep = ChildSweep(spec, "--executor", "ray", "--max-parallel", "2")
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    try:
        victim = _first_training_run(client, "kill")
        os.kill(int(victim.data.tags["harness.worker_pid"]), signal.SIGKILL)
    finally:
        code, output = sweep.finish(300)
    killed = victim.data.tags["harness.trial_id"]
    assert code == 1, output  # one trial failed, the sweep went on
    runs = {r.data.tags["harness.trial_id"]: r for r in client.search_runs(
        [client.get_experiment_by_name("kill").experiment_id]) if "harness.trial_id" in r.data.tags}
    assert len(runs) == 2
    assert runs[killed].info.status in ("FAILED", "RUNNING"), output
    assert all(r.info.status == "FINISHED" for t, r in runs.items() if t != killed), output
    assert f"FAILED {killed}" in output
    # The re-run finishes exactly the killed trial; still one child run per trial.
    loaded = load_spec(str(spec), [])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        summary = run_sweep(loaded, expand_trials(loaded, fingerprint), progress=False, echo=lambda line: None)
    finally:
        os.chdir(cwd)
    assert summary.ran == [killed] and sorted(summary.skipped) == sorted(t for t in runs if t != killed)
    after = [r for r in client.search_runs([client.get_experiment_by_name("kill").experiment_id])
             if "harness.trial_id" in r.data.tags]
    assert len(after) == 2 and all(r.info.status == "FINISHED" for r in after)
    resumed = next(r for r in after if r.data.tags["harness.trial_id"] == killed)
    # It trained again from step 1, in a fresh run in place of the killed one's (one metric series).
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")] == list(range(1, KILL_STEPS + 1))


def _long_sweep(tmp_path: Path) -> tuple[ChildSweep, MlflowClient]:
    """Two local workers, both training (100000 steps: still running when the test acts)."""
    spec = _kill_spec(tmp_path)
    raw = yaml.safe_load(spec.read_text())
    raw["train"]["max_steps"] = 100000
    spec.write_text(yaml.safe_dump(raw))
    sweep = ChildSweep(spec, "--max-parallel", "2")
    deadline = time.monotonic() + 240
    while sum("training sft" in line for line in sweep.lines) < 2:
        if sweep.proc.poll() is not None or time.monotonic() > deadline:
            code, output = sweep.finish(10)
            raise AssertionError(f"the workers did not both start training (exit {code}):\n{output}")
        time.sleep(0.2)
    return sweep, MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if text in cmdline and "zombie" not in state:
                found.append(int(entry.name))
    return found


@pytest.mark.slow  # a sweep of two local workers in a child process, interrupted: about 15 s
def test_ctrl_c_reaches_every_worker_and_leaves_the_store_consistent(tmp_path):
    sweep, client = _long_sweep(tmp_path)
    sweep.proc.send_signal(signal.SIGINT)
    code, output = sweep.finish(120)
    assert code == 130, output
    assert "to resume: harness sweep" in output and "--max-parallel 2" in output
    runs = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    trials = [r for r in runs if "harness.trial_id" in r.data.tags]
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert len(trials) == 2 and set(statuses.values()) == {"KILLED"}, (statuses, output)  # parent too
    for run in trials:  # each worker marked its own run, then exited
        pid = int(run.data.tags["harness.worker_pid"])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow  # the same sweep, killed with SIGKILL: about 15 s
def test_a_sweep_killed_with_sigkill_leaves_no_worker_or_server_running(tmp_path):
    """Found on CI: a sweep killed outright left its workers training and its mlflow server serving, for
    good (they run in sessions of their own).  Each now gets SIGTERM when the sweep dies."""
    sweep, client = _long_sweep(tmp_path)
    exp = client.get_experiment_by_name("kill").experiment_id
    workers = [int(r.data.tags["harness.worker_pid"]) for r in client.search_runs([exp])
               if "harness.worker_pid" in r.data.tags]
    servers = _processes_mentioning(str(tmp_path / "results" / "mlflow.db"))  # the sweep's mlflow server
    assert len(workers) == 2 and servers
    sweep.proc.kill()
    sweep.finish(30)
    deadline = time.monotonic() + 60
    while _alive(workers + servers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(workers + servers)


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if pid in _processes_mentioning("")]
