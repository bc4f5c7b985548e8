"""One of ``train.processes`` training workers: ``python -m torch.distributed.run ... -m harness.train.worker JOB``.

Started by ``harness.train.launch``, which reads back what rank 0 writes next to ``JOB``: the
logged events, the trained model (LoRA merged), the result, or the first error.  Every rank runs
the one-process stage (``harness.train.stages.train_offline_stage``); accelerate takes the
process group from torchrun's environment (gloo on CPU, NCCL on GPU, one GPU per local rank).
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from harness.errors import HarnessError
from harness.train.launch import MODEL, event_writer, read_job, write_error, write_result
from harness.train.models import merged, save_checkpoint
from harness.train.stages import train_offline_stage


def die_with_torchrun() -> None:
    """SIGTERM when torchrun dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG): torchrun starts each
    worker in a session of its own, which stopping torchrun's group (``harness.procs.stop``) would miss."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # torchrun is already gone
            sys.exit(1)


def main(job_file: str) -> None:
    job_dir, (job, stage) = Path(job_file).parent, read_job(job_file)
    # The process group, and on a GPU this rank's device, before any model is placed on device().
    # Rank 0 alone runs the reference pass and the held-out evaluation while the others wait in a
    # collective, which may take longer than the default 30 min; a worker that fails ends the others
    # through torchrun, so the long timeout only waits, it hides no failure.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(hours=24))
    if state.num_processes != stage.train.processes:  # e.g. an accelerate that ignored torchrun's environment
        raise HarnessError(f"train.processes: {stage.train.processes}, but accelerate sees {state.num_processes} "
                           "processes")
    first = state.is_main_process
    if first:
        print(f"harness.train.worker: stage {stage.name} in {state.num_processes} processes "
              f"({torch.distributed.get_backend()})", file=sys.stderr, flush=True)
    log, log_text = event_writer(job_dir) if first else (lambda metrics, step: None, None)
    model, tokenizer, result = train_offline_stage(
        stage, job["input_path"], job["input_key"], Path(job["cache_dir"]), log, job["force"],
        job["progress"] and first, log_text)
    if first:
        # As the sweep saves a stage; the input path is a QLoRA adapter's unquantized base.
        save_checkpoint(merged(model, job["input_path"]), tokenizer, job_dir / MODEL)
        write_result(job_dir, result)
    torch.distributed.destroy_process_group()  # no barrier first: a long save on rank 0 is not waited for


if __name__ == "__main__":
    die_with_torchrun()
    try:
        main(sys.argv[1])
    except BaseException as exc:
        write_error(Path(sys.argv[1]).parent, int(os.environ.get("RANK", "0")), exc)
        raise
