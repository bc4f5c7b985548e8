"""Where the judge lives for one judging run (DESIGN.md, spec keys ``judge.*``).

- ``judge.base_url`` set (backend openai): that endpoint (OpenAI, ``vllm serve``, ``harness serve``);
- ``judge.base_url`` null, backend openai: the embedded toy judge, served in a background thread;
- ``judge.backend: vllm``: ``vllm serve judge.model`` as a child process (``judges.vllm_backend``).

The last two listen on a fresh port each run, so their replies are cached under
a stable identity (``cache_identity``) instead of the URL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError
from judges.server import Responder, serve_in_background

TOY_JUDGE_MODEL = "toy-judge"


def cache_identity(judge_spec, base_url: str) -> str:
    """What stands for the endpoint in cache keys: the URL, or a stable name for servers harness starts.

    The embedded toy judge is named with a hash of its rubric's source, so a changed rubric
    never answers from replies of the old one.
    """
    if judge_spec.backend == "vllm":
        return f"vllm-serve:{judge_spec.model}"
    if judge_spec.base_url is None:
        import judges.toy_judge as toy

        return f"embedded-toy-judge:{hashlib.sha256(Path(toy.__file__).read_bytes()).hexdigest()[:16]}"
    return base_url


@contextmanager
def judge_endpoint(judge_spec, cache_dir: Path | None) -> Iterator[str]:
    """Yield the base URL (ending in ``/v1``) of the judge described by ``judge_spec``."""
    if judge_spec.backend == "vllm":
        if judge_spec.base_url is not None:
            raise HarnessError(f"judge.base_url is {judge_spec.base_url!r} but judge.backend is vllm, "
                               "which starts its own server; set one of them")
        if not judge_spec.model:
            raise HarnessError("judge.model: required when judge.backend is vllm (the model to serve)")
        from judges.vllm_backend import vllm_server

        log_dir = Path(cache_dir) / "vllm" if cache_dir is not None else None
        with vllm_server(judge_spec.model, log_dir=log_dir) as url:
            yield url
    elif judge_spec.base_url is not None:
        yield judge_spec.base_url
    else:
        from judges.toy_judge import make_responder  # the suites' rubric judge; imported only when used

        with serve_in_background(make_responder(), model_name=TOY_JUDGE_MODEL) as server:
            yield server.base_url


def serve_responder(model: str, position_bias: float, verbosity_bias: float, cache_dir: Path) -> Responder:
    """What ``harness serve MODEL|toy-judge`` serves: the toy judge (with its biases) or a local model."""
    if model == TOY_JUDGE_MODEL:
        from judges.toy_judge import make_responder

        for flag, value in (("--position-bias", position_bias), ("--verbosity-bias", verbosity_bias)):
            if not 0.0 <= value <= 1.0:
                raise HarnessError(f"{flag}: a probability in [0, 1], got {value}")
        return make_responder(position_bias=position_bias, verbosity_bias=verbosity_bias)
    if position_bias or verbosity_bias:
        raise HarnessError(f"--position-bias/--verbosity-bias apply to toy-judge only, not {model!r}")
    from judges.hf_server import make_hf_responder

    return make_hf_responder(model, cache_dir)
