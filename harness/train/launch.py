"""One offline stage trained by ``train.processes`` worker processes (accelerate over torch.distributed).

The parent writes a job file and starts ``python -m torch.distributed.run --nproc_per_node N -m
harness.train.worker JOB`` in a process group of its own (``harness.procs``): gloo on CPU, NCCL
on GPU (one GPU per process), as accelerate picks from the environment torchrun sets.  Each worker
runs the one-process stage (``harness.train.stages.train_offline_stage``); the loop shards every
micro-batch among them (``harness.train.loop``).

- Rank 0 appends each ``log(metrics, step)`` and ``log_text(text, name)`` call to ``events.jsonl``;
  the parent relays them, in order and as they appear, to its own callbacks, so the stage's run
  gets the same metric keys and steps as a one-process run.
- Rank 0 saves the trained model (a LoRA adapter merged, as the sweep saves one) and
  ``result.json``; the parent loads and returns them, as ``train_stage`` does in one process.
- A worker's failure comes back as a HarnessError: the worker's own one when it raised one,
  else the tail of the workers' output.  A stopped parent (an error, Ctrl-C, SIGTERM, SIGHUP)
  stops torchrun's process group, and torchrun its workers; on Linux torchrun also gets SIGTERM
  when the parent dies (even by SIGKILL), and each worker when torchrun dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path

import torch

from harness import procs
from harness.console import say
from harness.errors import HarnessError
from harness.methods.registry import METHODS
from harness.train.loop import TrainResult
from harness.train.models import device, load_model, load_tokenizer
from harness.train.reward_model import load_reward_model

# The files of a job's directory.
JOB, STAGE, EVENTS, OUTPUT = "job.json", "stage.pkl", "events.jsonl", "workers.log"
RESULT, ERROR, MODEL = "result.json", "error.json", "model"
TAIL_LINES = 30


def launch_stage(stage, input_path: str, input_key: str, cache_dir: Path, log, force: bool, progress: bool = True,
                 log_text=None) -> tuple[object, object, TrainResult]:
    """Train ``stage`` in ``stage.train.processes`` workers; returns (model, tokenizer, result) as one process does."""
    n = stage.train.processes
    check_devices(n)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Under the results' cache, not /tmp: the trained model passes through it, as large as a checkpoint.
    with tempfile.TemporaryDirectory(prefix="processes-", dir=cache_dir) as tmp:
        job = Path(tmp)
        # The stage pickled: it round-trips exactly (a resolved LoraSpec, say, is no longer valid input).
        (job / STAGE).write_bytes(pickle.dumps(stage))
        (job / JOB).write_text(json.dumps({"input_path": input_path, "input_key": input_key,
                                           "cache_dir": str(cache_dir), "force": force, "progress": progress}))
        code, tail = run_workers(job, n, log, log_text, progress)
        if code != 0:
            raise worker_failure(job, stage, code, tail)
        return load_output(stage, job)


def check_devices(n: int) -> None:
    """On a GPU machine each process takes one GPU: ``n`` must not exceed the visible ones."""
    if torch.cuda.is_available() and n > torch.cuda.device_count():
        raise HarnessError(f"train.processes: {n} processes need {n} GPUs, and {torch.cuda.device_count()} are "
                           f"visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                           "lower train.processes or give the trial more GPUs")


def worker_env(n: int) -> dict[str, str]:
    """The workers' environment: harness importable, and OMP_NUM_THREADS = cores // n unless the user set it."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the directory that holds the harness package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1, and warn
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // n))
    return env


def worker_command(job: Path, n: int) -> list[str]:
    return procs.dies_with_parent(["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
                                   "--master_addr", "127.0.0.1", "--master_port", str(procs.free_port()),
                                   "-m", "harness.train.worker", str(job / JOB)])


def run_workers(job: Path, n: int, log, log_text, progress: bool) -> tuple[int, list[str]]:
    """Run the workers to the end, relaying rank 0's events; returns (exit code, the output's last lines).

    The workers' output (stdout and stderr, torchrun's too) goes to ``workers.log`` and, with
    ``progress``, on to this process's stderr as lines.
    """
    events, output, tail = NewLines(job / EVENTS), NewLines(job / OUTPUT), deque(maxlen=TAIL_LINES)
    with open(job / OUTPUT, "wb") as out, _signals_stop():
        proc = subprocess.Popen(worker_command(job, n), stdout=out, stderr=subprocess.STDOUT, env=worker_env(n),
                                start_new_session=True)
        try:
            while True:
                done = proc.poll() is not None  # before reading: nothing written before the exit is missed
                for line in events.read():
                    relay(json.loads(line), log, log_text)
                for line in output.read():
                    tail.append(line)
                    if progress and line.strip():
                        say(line)
                if done:
                    return proc.returncode, list(tail)
                time.sleep(0.2)
        finally:
            procs.stop(proc, grace_s=10.0)  # stops a group still running; after an exit, any straggler


def relay(event: dict, log, log_text) -> None:
    if "metrics" in event:
        log(event["metrics"], event["step"])
    elif log_text is not None:
        log_text(event["text"], event["name"])


class NewLines:
    """The complete lines appended to a file since the last ``read`` (a partial last line waits)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return chunk[:end].decode(errors="replace").splitlines()


def worker_failure(job: Path, stage, code: int, tail: list[str]) -> HarnessError:
    """The error the first failing worker raised: the same HarnessError (class and message), else one
    with that worker's traceback, or with the output's last lines when no worker could say."""
    record = json.loads((job / ERROR).read_text()) if (job / ERROR).exists() else None
    if record is not None and record["harness_error"]:
        kind = next((c for c in _harness_errors() if c.__name__ == record["type"]), HarnessError)
        return kind(record["message"])
    lines = record["traceback"] if record is not None else "\n".join(tail) or "(no output)"
    return HarnessError(f"stage {stage.name}: training in {stage.train.processes} processes failed (exit code "
                        f"{code}); the workers' last lines:\n{lines}")


def _harness_errors() -> list[type]:
    found, todo = [], [HarnessError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def load_output(stage, job: Path) -> tuple[object, object, TrainResult]:
    """The trained model rank 0 saved (plain weights, fp32 as trained, in eval mode on ``device()``), its
    tokenizer and the result."""
    path = str(job / MODEL)
    tokenizer = load_tokenizer(path)
    if METHODS[stage.method.name].batch.scalar_head:
        model = load_reward_model(path, tokenizer.pad_token_id)
    else:
        model = load_model(path)
    result = TrainResult(**json.loads((job / RESULT).read_text()))
    return model.to(device()).eval(), tokenizer, result


@contextlib.contextmanager
def _signals_stop():
    """SIGTERM and SIGHUP raise SystemExit while workers run, so ``run_workers``' cleanup stops them
    (their default action would end this process and leave the group running).  Main thread only."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _leave(signum, frame):
    raise SystemExit(128 + signum)


# What rank 0 writes, read back above (harness.train.worker calls these).


def read_job(path: str) -> tuple[dict, object]:
    """(the job's settings, its stage)."""
    job = Path(path)
    return json.loads(job.read_text()), pickle.loads((job.parent / STAGE).read_bytes())


def event_writer(job: Path):
    """(log, log_text) callbacks that append events for the parent to relay."""
    def write(event: dict) -> None:
        with open(job / EVENTS, "a") as fh:
            fh.write(json.dumps(event, default=float) + "\n")  # default: a tensor or numpy scalar

    return (lambda metrics, step: write({"metrics": metrics, "step": step}),
            lambda text, name: write({"text": text, "name": name}))


def write_result(job: Path, result: TrainResult) -> None:
    (job / RESULT).write_text(json.dumps({"steps": result.steps, "tokens_seen": result.tokens_seen,
                                          "wall_s": result.wall_s, "last_metrics": result.last_metrics},
                                         default=float))


def write_error(job: Path, rank: int, exc: BaseException) -> None:
    """Record the first worker error (another rank's, failing after it, is left out)."""
    record = {"type": type(exc).__name__, "message": str(exc), "harness_error": isinstance(exc, HarnessError),
              "rank": rank, "traceback": "".join(traceback.format_exc().splitlines(True)[-TAIL_LINES:])}
    with contextlib.suppress(FileExistsError), open(job / ERROR, "x") as fh:
        fh.write(json.dumps(record))
