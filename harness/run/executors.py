"""How a sweep's trials run: one after another in this process, in local worker processes, or as Ray tasks.

Every executor takes ``TrialJob`` s (everything a trial needs, picklable) and yields each trial's
outcome as it ends: ``None`` (ran), ``"skipped"``, or the error message; a worker that dies
(killed, out of memory) yields a ``WorkerLost`` message instead, so the sweep marks that trial and
goes on.  The run tree is the sweep's business (``harness.run.sweep``); an executor only places work.

- ``local`` with ``--max-parallel 1``: in this process, as before (no start-up per trial).
- ``local`` with ``--max-parallel N``: up to N worker processes (``python -m harness.run.worker``),
  each in a session of its own; ``resources.gpus_per_trial`` whole GPUs each, handed out through
  ``CUDA_VISIBLE_DEVICES``, and ``resources.cpus_per_trial`` threads.
- ``ray``: one Ray task per trial with ``num_cpus``/``num_gpus`` from ``resources``, on the cluster at
  ``--ray-address`` / ``RAY_ADDRESS``, or on a local Ray instance started for the sweep.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.procs import dies_with_parent, stop

WORKER_MODULE = "harness.run.worker"


@dataclass(frozen=True)
class TrialJob:
    """One trial, for a worker: the sweep's spec and ids, where to log, and under which parent run."""

    spec: Any  # harness.config.spec.Spec
    trial: Any  # harness.config.grid.Trial or the base trial
    trial_ids: dict[str, str]
    tracking_uri: str  # the store every worker logs to (an http:// server when several write at once)
    parent_run: str
    force: bool
    cwd: str  # relative paths in the spec (data, results_dir) are relative to it
    judge_url: str | None = None  # the sweep's judge endpoint, started once by the sweep
    threads: int | None = None  # torch threads in the worker (resources.cpus_per_trial)

    @property
    def trial_id(self) -> str:
        return self.trial.id


@dataclass(frozen=True)
class Resources:
    """What each trial asks for, resolved: whole or fractional GPUs and CPUs."""

    gpus: float
    cpus: float

    @classmethod
    def of(cls, spec) -> Resources:
        gpus = spec.resources.gpus_per_trial
        if gpus is None:
            gpus = 1.0 if _cuda_count() > 0 else 0.0
        return cls(gpus, spec.resources.cpus_per_trial)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class WorkerLost(str):
    """The outcome of a trial whose worker died before it could report (its run is marked by the sweep)."""


RunJob = Callable[[TrialJob], "str | None"]


# ---------------------------------------------------------------- in this process


@dataclass
class InProcess:
    """Trials one at a time in this process (the default: ``--executor local --max-parallel 1``), each run
    by ``run_here`` with the sweep's own context: no worker, no start-up per trial."""

    run_here: RunJob
    parallel: bool = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run(self, jobs: list[TrialJob]) -> Iterator[tuple[str, str | None]]:
        for job in jobs:
            yield job.trial_id, self.run_here(job)


# ---------------------------------------------------------------- local worker processes


@dataclass
class _Worker:
    """A long-lived worker process: it takes jobs on stdin, one at a time, and pays its imports once."""

    proc: subprocess.Popen
    gpus: list[str]
    reader: threading.Thread
    job: TrialJob | None = None  # the job it runs now
    outcome_file: Path | None = None


@dataclass
class LocalProcesses:
    """Up to ``max_parallel`` trials at once, in as many worker processes (``python -m harness.run.worker``).

    Each worker runs one trial after another (its imports and model-building caches are paid once),
    with ``resources.gpus_per_trial`` whole GPUs of its own (``CUDA_VISIBLE_DEVICES``) and
    ``resources.cpus_per_trial`` threads.  A worker's lines are passed on as they come (each names its
    trial).  A worker that dies mid-trial yields ``WorkerLost`` for that trial and is replaced.  Ctrl-C
    sends each busy worker SIGINT, so that it marks its own run KILLED, then stops every worker.
    """

    max_parallel: int
    resources: Resources
    echo: Callable[[str], None] = print
    parallel: bool = True
    _tmp: tempfile.TemporaryDirectory | None = None
    _free_gpus: list[str] = field(default_factory=list)
    _workers: list[_Worker] = field(default_factory=list)
    _sent: int = 0

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="harness-workers-")
        if self.resources.gpus > 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            self._free_gpus = (visible.split(",") if visible else [str(i) for i in range(_cuda_count())])
            if len(self._free_gpus) < self._gpus_each:
                raise HarnessError(f"resources.gpus_per_trial: {self.resources.gpus:g} asked, "
                                   f"{len(self._free_gpus)} GPU(s) visible on this machine")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.proc.stdin.close()  # no more jobs: an idle worker exits
        deadline = time.monotonic() + 30
        for worker in self._workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            stop(worker.proc, grace_s=5)
            worker.reader.join(timeout=5)
        self._workers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def _gpus_each(self) -> int:
        return math.ceil(self.resources.gpus)  # a local worker gets whole devices

    def run(self, jobs: list[TrialJob]) -> Iterator[tuple[str, str | None]]:
        try:
            yield from self._run(jobs)
        except BaseException:  # Ctrl-C: while the tracking server still runs, each busy worker marks its run
            self._interrupt_busy()
            raise

    def _interrupt_busy(self) -> None:
        busy = [w for w in self._workers if w.job is not None and w.proc.poll() is None]
        for worker in busy:
            os.kill(worker.proc.pid, signal.SIGINT)  # the worker marks its run KILLED, then exits
        deadline = time.monotonic() + 30
        for worker in busy:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def _run(self, jobs: list[TrialJob]) -> Iterator[tuple[str, str | None]]:
        pending = list(jobs)
        while pending or any(w.job is not None for w in self._workers):
            while pending:
                worker = self._idle_worker(len(pending))
                if worker is None:
                    break
                self._send(worker, pending.pop(0))
            ended = [(w, self._outcome(w)) for w in self._workers if w.job is not None and self._ended(w)]
            for worker, outcome in ended:
                trial_id = worker.job.trial_id
                worker.job = worker.outcome_file = None
                if isinstance(outcome, WorkerLost):
                    self._retire(worker)
                yield trial_id, outcome
            if not ended:
                time.sleep(0.2)

    def _idle_worker(self, waiting: int) -> _Worker | None:
        for worker in self._workers:
            if worker.job is None and worker.proc.poll() is None:
                return worker
        if len(self._workers) < self.max_parallel and len(self._free_gpus) >= self._gpus_each and waiting:
            worker = self._spawn()
            self._workers.append(worker)
            return worker
        return None

    def _spawn(self) -> _Worker:
        gpus = [self._free_gpus.pop(0) for _ in range(self._gpus_each)]
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env.setdefault("OMP_NUM_THREADS", str(max(1, int(self.resources.cpus))))
        proc = subprocess.Popen(dies_with_parent(["-m", WORKER_MODULE]), env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True)
        reader = threading.Thread(target=self._relay, args=(proc,), daemon=True)
        reader.start()
        return _Worker(proc, gpus, reader)

    def _send(self, worker: _Worker, job: TrialJob) -> None:
        assert self._tmp is not None
        self._sent += 1  # trial ids hold dots ("lr0.1-seed0-…"): numbered files
        job_file = Path(self._tmp.name) / f"{self._sent}.job"
        job_file.write_bytes(pickle.dumps(job))
        worker.job, worker.outcome_file = job, Path(self._tmp.name) / f"{self._sent}.outcome"
        try:
            worker.proc.stdin.write(f"{job_file}\t{worker.outcome_file}\n")
            worker.proc.stdin.flush()
        except OSError:
            pass  # it died meanwhile: _ended sees that, and the trial is lost like any other

    def _relay(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.echo(line.rstrip("\n"))

    @staticmethod
    def _ended(worker: _Worker) -> bool:
        return worker.outcome_file.exists() or worker.proc.poll() is not None

    @staticmethod
    def _outcome(worker: _Worker) -> str | None:
        if worker.outcome_file.exists():
            return pickle.loads(worker.outcome_file.read_bytes())
        code = worker.proc.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return WorkerLost(f"worker process {worker.proc.pid} {how} before the trial ended")

    def _retire(self, worker: _Worker) -> None:
        stop(worker.proc, grace_s=5)
        self._workers.remove(worker)
        self._free_gpus.extend(worker.gpus)


# ---------------------------------------------------------------- Ray


@dataclass
class RayTasks:
    """One Ray task per trial, at most ``max_parallel`` in flight (None: as many as the cluster fits).

    Tasks are not retried (``max_retries=0``): a trial whose worker dies is marked by the sweep and
    resumes on the next ``harness sweep``, like any other unfinished trial.
    """

    run_job: RunJob
    address: str | None
    max_parallel: int | None
    resources: Resources
    echo: Callable[[str], None] = print
    parallel: bool = True
    _started_here: bool = False

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise HarnessError("--executor ray: the ray package is not installed; "
                               "pip install 'harness[ray]' (or pip install 'ray[default]')") from None
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if ray.is_initialized():
            return self
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each worker line names its trial; merging them loses that
        try:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                     configure_logging=True, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise HarnessError(f"--executor ray: cannot connect to Ray at {address!r}: {exc}") from None
        self._started_here = True
        where = f"cluster at {address}" if address else "a local Ray instance"
        cpus = ray.cluster_resources().get("CPU", 0)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.echo(f"ray: {where} ({cpus:g} CPUs, {gpus:g} GPUs); each trial asks "
                  f"{self.resources.cpus:g} CPU(s), {self.resources.gpus:g} GPU(s)")
        if self.resources.gpus > gpus or self.resources.cpus > cpus:
            raise HarnessError(f"resources: each trial asks {self.resources.cpus:g} CPUs and "
                               f"{self.resources.gpus:g} GPUs; the Ray cluster has {cpus:g} and {gpus:g}")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._started_here:
            import ray

            ray.shutdown()

    def nodes(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def run(self, jobs: list[TrialJob]) -> Iterator[tuple[str, str | None]]:
        import ray

        task = ray.remote(num_cpus=self.resources.cpus, num_gpus=self.resources.gpus,
                          max_retries=0)(self.run_job)
        pending, in_flight = list(jobs), {}
        cap = self.max_parallel or len(jobs) or 1
        try:
            while pending or in_flight:
                while pending and len(in_flight) < cap:
                    job = pending.pop(0)
                    in_flight[task.remote(job)] = job
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    job = in_flight.pop(ref)
                    yield job.trial_id, self._outcome(ref)
        except BaseException:
            for ref in in_flight:  # KeyboardInterrupt inside each task: it marks its run KILLED
                ray.cancel(ref)
            _wait_quietly(list(in_flight), 30)
            raise

    @staticmethod
    def _outcome(ref) -> str | None:
        import ray

        try:
            return ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.OutOfMemoryError, ray.exceptions.TaskCancelledError) as exc:
            return WorkerLost(f"Ray worker lost before the trial ended ({type(exc).__name__})")
        except ray.exceptions.RayTaskError as exc:  # run_job catches trial errors; this is the harness's own
            return f"{type(exc.cause).__name__}: {exc.cause}" if exc.cause else str(exc)


def _wait_quietly(refs: list, timeout_s: float) -> None:
    import ray

    with contextlib.suppress(Exception):  # best effort while stopping
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)


def make_executor(name: str, max_parallel: int | None, run_job: RunJob, run_here: RunJob, resources: Resources,
                  ray_address: str | None, echo: Callable[[str], None]):
    """The executor ``--executor NAME --max-parallel N`` asks for (a context manager).

    ``run_job`` runs a trial in a worker (a Ray task); ``run_here`` in this process, sequentially."""
    if max_parallel is not None and max_parallel < 1:
        raise HarnessError(f"--max-parallel: must be at least 1, got {max_parallel}")
    if name == "ray":
        return RayTasks(run_job, ray_address, max_parallel, resources, echo)
    if ray_address:
        raise HarnessError("--ray-address: only with --executor ray")
    if (max_parallel or 1) == 1:
        return InProcess(run_here)
    return LocalProcesses(max_parallel, resources, echo)
