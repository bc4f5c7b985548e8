"""What every judge suite returns, and the small pieces all suites share.

A suite function takes a ``judges.client.JudgeClient`` and plain item lists and
returns ``Judged(metrics, judgments)``: metrics are floats (rates in [0, 1]),
judgments one dict per prompt with its ``id``, the verdicts, the raw judge text
and the scores, plus the provenance of ``provenance()`` (judge endpoint, model
name, prompt-template name and sha256).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from judges.prompts import Template


@dataclass
class Judged:
    metrics: dict[str, float]
    judgments: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """One judge request: messages, extra sampling params and the parser's acceptance test."""

    messages: list[dict]
    valid: Callable
    params: dict = field(default_factory=dict)


def provenance(client, template: Template) -> dict:
    """The judgment fields DESIGN.md asks for: endpoint, model name, template hash."""
    return {"judge_endpoint": client.base_url, "judge_model": client.model,
            "judge_template": template.name, "judge_template_sha256": template.sha256}


def run_calls(client, calls: Sequence[Call]) -> list:
    """Every call through ``client.complete`` concurrently (the client bounds concurrency).

    Returns one Reply per call, in order, or None where the client gave up
    after its retries (an unparseable verdict counts as a failed call, since
    ``valid`` is the parser).
    """
    async def run():
        try:
            return await asyncio.gather(*(client.complete(c.messages, valid=c.valid, **c.params)
                                          for c in calls))
        finally:
            await client.aclose()

    return list(asyncio.run(run())) if calls else []


def text_of(value) -> str:
    """A prompt or response as plain text: a string, or the content of a message list.

    For a message list the LAST user message is the question (prompts) and the
    last assistant message the answer (responses); callers pass whichever they hold.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return str(value[-1].get("content", ""))
    raise ValueError(f"expected a string or a message list, got {type(value).__name__}: {value!r:.80}")
