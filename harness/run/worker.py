"""A local worker process of a parallel sweep: ``python -m harness.run.worker``.

It reads jobs from stdin, one line each: ``JOB<TAB>OUTCOME``.  JOB is a pickled
``harness.run.executors.TrialJob``; the trial's outcome (None, ``"skipped"`` or its error message) is
pickled to OUTCOME, atomically, when the trial ends.  It exits when stdin closes.  A worker that dies
mid-trial writes nothing, and the sweep marks that trial.  SIGINT (the sweep's Ctrl-C) marks the
trial's run KILLED, then the worker exits with code 130.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path


def main() -> int:
    from harness.run.sweep import run_job

    for line in sys.stdin:
        job_file, outcome_file = map(Path, line.rstrip("\n").split("\t"))
        try:
            outcome = run_job(pickle.loads(job_file.read_bytes()))
        except KeyboardInterrupt:
            return 130
        tmp = outcome_file.with_name(outcome_file.name + ".tmp")
        tmp.write_bytes(pickle.dumps(outcome))
        tmp.replace(outcome_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
