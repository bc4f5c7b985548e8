"""What one sweep shares across its trials: spec, tracker, caches, judge endpoint and settings.

``open_context`` resolves everything that depends on where the command runs
(the store, ``results_dir``) once, at start, so the rest of the sweep works
with absolute paths and named fields.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cache import EvalCache, StageCache, writable_dir
from harness.config.grid import sweep_id
from harness.config.spec import JudgeSpec, Spec
from harness.run.tracking import Tracker, git_sha, package_versions, resolve_store
from harness.serve.endpoint import judge_client, judge_endpoint

if TYPE_CHECKING:  # openai, imported by the judge client, only when a run judges
    from judges.client import JudgeClient


@dataclass
class JudgeEndpoint:
    """The judge endpoint of a sweep, started on first use and closed with the sweep."""

    judge_spec: JudgeSpec
    cache_dir: Path
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _url: str | None = None

    def url(self) -> str:
        """The endpoint's base URL, starting it on first use (a parallel sweep's workers share it)."""
        if self._url is None:
            self._url = self._stack.enter_context(judge_endpoint(self.judge_spec, self.cache_dir))
        return self._url

    def client(self) -> JudgeClient:
        return judge_client(self.judge_spec, self.url(), self.cache_dir / "judge")

    def close(self) -> None:
        self._stack.close()


@dataclass
class SweepContext:
    """One sweep's shared state; the executor and the in-sweep evaluation read it by name."""

    spec: Spec
    tracker: Tracker
    experiment_id: str
    sweep_id: str  # the tag harness.sweep_id: a hash of the spec
    cache_dir: Path  # <results_dir>/cache, absolute: toy models, stages, reference log-probs, evals, judge
    stages: StageCache
    evals: EvalCache
    judge: JudgeEndpoint
    trial_ids: dict[str, str]  # how a baseline may name a trial (its id, or the id without hash) -> its id
    force: bool = False  # re-run finished trials and ignore cached stages and evals
    progress: bool = True
    echo: Callable[[str], None] = print
    git_sha: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # package versions, for the tag harness.versions

    @property
    def common_tags(self) -> dict[str, str]:
        """The tags of every run of the sweep: parent, trials and stages."""
        return {"harness.sweep_id": self.sweep_id, "harness.git_sha": self.git_sha,
                "harness.versions": json.dumps(self.versions, sort_keys=True)}


def open_context(spec: Spec, trial_ids: dict[str, str], tracking_uri: str | None, force: bool, progress: bool,
                 echo: Callable[[str], None] = print, judge_url: str | None = None) -> SweepContext:
    """Resolve the store and results paths (absolute, at start) and create the experiment.

    ``judge_url``: a judge endpoint already running (the one a parallel sweep started for its workers)."""
    writable_dir(Path(spec.results_dir).resolve(), "results_dir")  # one clear line, before any half-made store
    store = resolve_store(tracking_uri, spec.tracking.uri, spec.tracking.artifact_root, spec.results_dir)
    tracker = Tracker(store)
    cache_dir = Path(spec.results_dir).resolve() / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return SweepContext(spec, tracker, tracker.experiment(spec.name), sweep_id(spec), cache_dir,
                        StageCache(cache_dir), EvalCache(cache_dir), JudgeEndpoint(spec.judge, cache_dir, _url=judge_url),
                        trial_ids, force, progress, echo, git_sha(), package_versions())
