"""Where the judge lives for one judging run (DESIGN.md, spec keys ``judge.*``).

- ``judge.base_url`` set (backend openai): that endpoint (OpenAI, ``vllm serve``, ``harness serve``);
- ``judge.base_url`` null, backend openai: the embedded toy judge, served in a background thread;
- ``judge.backend: vllm``: ``vllm serve judge.model`` as a child process (``harness.serve.vllm``);
- ``judge.backend: reward_model``: the reward model at ``judge.model`` (a saved ``rm`` stage), served
  in a background thread (``harness.serve.reward_judge``).

The last three listen on a fresh port each run, so their replies are cached under
a stable identity (``cache_identity``) instead of the URL; ``judge_client`` builds the
judges client for a spec's ``judge:`` with that identity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.lazy import lazy
from harness.serve.server import Responder, serve_forever, serve_in_background
from harness.serve.toy_judge import make_responder
from harness.serve.vllm import vllm_server

# The backends that load a model (a reward model, a local HF model) import torch and transformers when they
# start: a run that judges through an endpoint, or with the toy judge, loads neither.
load_reward_judge = lazy("harness.serve.reward_judge:load_reward_judge")
make_hf_responder = lazy("harness.serve.hf_model:make_hf_responder")
model_identity = lazy("harness.train.models:model_identity")
check_reward_model = lazy("harness.train.reward_model:check_reward_model")

if TYPE_CHECKING:  # judges.client imports openai (~0.5 s): only a run that judges pays for it
    from judges.client import JudgeClient

TOY_JUDGE_MODEL = "toy-judge"


def cache_identity(judge_spec, base_url: str) -> str:
    """What stands for the endpoint in cache keys: the URL, or a stable name for servers harness starts.

    The embedded toy judge is named with a hash of its rubric's source, so a changed rubric
    never answers from replies of the old one; a reward-model judge by the content of its
    checkpoint (``harness.train.models.model_identity``) and of its verdict rules.
    """
    return BACKENDS[judge_spec.backend].identity(judge_spec, base_url)


def _source_hash(module: str) -> str:
    """16 hex of a harness.serve module's source: a changed rubric or verdict rule never answers from old replies."""
    return hashlib.sha256((Path(__file__).parent / f"{module}.py").read_bytes()).hexdigest()[:16]


def _check_self_served(judge_spec, how: str, model_is: str) -> None:
    """A backend that harness serves itself needs judge.model and no judge.base_url."""
    backend = judge_spec.backend
    if judge_spec.base_url is not None:
        raise HarnessError(f"judge.base_url is {judge_spec.base_url!r} but judge.backend is {backend}, "
                           f"which {how}; set one of them")
    if not judge_spec.model:
        raise HarnessError(f"judge.model: required when judge.backend is {backend} ({model_is})")


def judge_client(judge_spec, base_url: str, cache_dir: Path | None, **overrides) -> JudgeClient:
    """A client for ``judge:`` of a spec at ``base_url`` (from ``judge_endpoint``), keyed by ``cache_identity``.

    The key comes from the env var named by ``judge.api_key_env``; a null ``judge.model``
    is the first model the endpoint lists.  ``overrides`` are JudgeClient keywords.
    """
    from judges.client import JudgeClient, served_model

    api_key = os.environ.get(judge_spec.api_key_env) or None
    model = judge_spec.model or served_model(base_url, api_key, judge_spec.timeout_s)
    kwargs = {"api_key": api_key, "concurrency": judge_spec.concurrency, "max_retries": judge_spec.max_retries,
              "timeout_s": judge_spec.timeout_s, "cache_dir": cache_dir,
              "default_params": {"temperature": judge_spec.temperature},
              "cache_identity": cache_identity(judge_spec, base_url)}
    return JudgeClient(base_url, model, **{**kwargs, **overrides})


def judge_endpoint(judge_spec, cache_dir: Path | None) -> AbstractContextManager[str]:
    """A context that yields the base URL (ending in ``/v1``) of the judge described by ``judge_spec``."""
    return BACKENDS[judge_spec.backend].start(judge_spec, cache_dir)


@contextmanager
def _openai_endpoint(judge_spec, cache_dir: Path | None) -> Iterator[str]:
    """Any OpenAI-compatible endpoint at ``judge.base_url``; with none, the embedded toy judge."""
    if judge_spec.base_url is not None:
        yield judge_spec.base_url
        return
    with serve_in_background(make_responder(), model_name=TOY_JUDGE_MODEL) as server:
        yield server.base_url


def _openai_identity(judge_spec, base_url: str) -> str:
    if judge_spec.base_url is None:
        return f"embedded-toy-judge:{_source_hash('toy_judge')}"
    return base_url


@contextmanager
def _vllm_endpoint(judge_spec, cache_dir: Path | None) -> Iterator[str]:
    """``vllm serve judge.model`` as a child process for the duration of the judging run."""
    _check_self_served(judge_spec, "starts its own server", "the model to serve")
    log_dir = Path(cache_dir) / "vllm" if cache_dir is not None else None
    with vllm_server(judge_spec.model, log_dir=log_dir) as url:
        yield url


@contextmanager
def _reward_model_endpoint(judge_spec, cache_dir: Path | None) -> Iterator[str]:
    """A saved reward model (``judge.model``) served as a judge in a background thread."""
    _check_self_served(judge_spec, "serves judge.model itself", "the RM directory")
    judge = load_reward_judge(judge_spec.model, Path(cache_dir or "results/cache"))
    with serve_in_background(judge, model_name=judge_spec.model) as server:
        yield server.base_url


@dataclass(frozen=True)
class JudgeBackend:
    """One value of ``judge.backend``: how the judge is reached for a run, and what names it in cache keys."""

    start: Callable[[object, Path | None], AbstractContextManager[str]]
    identity: Callable[[object, str], str]


BACKENDS = {
    "openai": JudgeBackend(_openai_endpoint, _openai_identity),
    "vllm": JudgeBackend(_vllm_endpoint, lambda judge_spec, url: f"vllm-serve:{judge_spec.model}"),
    "reward_model": JudgeBackend(_reward_model_endpoint, lambda judge_spec, url: (
        f"reward-model:{model_identity(judge_spec.model)}:{_source_hash('reward_judge')}")),
}


def serve_responder(model: str, position_bias: float, verbosity_bias: float, cache_dir: Path) -> Responder:
    """What ``harness serve MODEL|toy-judge`` serves: the toy judge (with its biases) or a local model."""
    if model == TOY_JUDGE_MODEL:
        for flag, value in (("--position-bias", position_bias), ("--verbosity-bias", verbosity_bias)):
            if not 0.0 <= value <= 1.0:
                raise HarnessError(f"{flag}: a probability in [0, 1], got {value}")
        return make_responder(position_bias=position_bias, verbosity_bias=verbosity_bias)
    if position_bias or verbosity_bias:
        raise HarnessError(f"--position-bias/--verbosity-bias apply to toy-judge only, not {model!r}")
    if is_reward_model(model):
        return load_reward_judge(model, cache_dir, what="harness serve")
    return make_hf_responder(model, cache_dir)


def is_reward_model(model: str) -> bool:
    """True when ``model`` is a local directory holding a reward model (``harness serve`` serves it as a judge)."""
    if not Path(model).is_dir():
        return False
    try:
        check_reward_model(model, "harness serve")
    except HarnessError:
        return False
    return True


def serve_command(args) -> int:
    """``harness serve MODEL|toy-judge``: serve until interrupted, printing the URL first."""
    responder = serve_responder(args.model, args.position_bias, args.verbosity_bias,
                                Path(args.results_dir).resolve() / "cache")
    serve_forever(responder, args.host, args.port, model_name=args.model,
                  announce=lambda url: print(f"serving {args.model} at {url}", flush=True))
    return 0
