"""A saved reward model as a judge: ``judge.backend: reward_model`` and ``harness serve RM_DIR``.

The RM sits behind the same chat-completions server as every other local
judge (a ``harness.serve.server.Responder``), so the suites run unchanged: both
orders, retries, the reply cache, ``judgments/`` rows, win rates and reports.
Harness writes the judge requests itself (``judges.prompts``), so this
responder reads them back exactly: it recognises the template by its system
message, splits the user message along the template's own layout, and scores
each candidate as the RM was trained, the question as the user turn and the
candidate as the assistant turn, through the RM's chat template
(``harness.data.tokenization.split_prompt_response``: the TRL rule training uses).
A request it cannot read back exactly is answered with HTTP 400, never guessed.

Verdicts from the rewards r of the candidates:

- pairwise (``[[A]]``/``[[B]]``): the higher reward wins; rewards equal within
  ``TIE_TOLERANCE`` give ``[[C]]``;
- alpaca: label ``1`` or ``2`` with logprobs log sigma(r_1 - r_2) and
  log sigma(r_2 - r_1), the Bradley-Terry preference the RM was trained on, so
  the suite's p(output 2) is sigma(r_2 - r_1);
- single: grade ``1 + round(9 sigma(r))``, monotone in the reward but not
  calibrated: an RM's rewards have no absolute scale (they are only trained
  up to a shift), so single grades compare answers of one RM, nothing more;
- multi-turn requests score each conversation's last assistant reply in the
  context of the earlier turns; reference answers are ignored (an RM takes none);
- safety classification has no meaning for an RM: HTTP 400.
"""

from __future__ import annotations

import json
import math
import re
import string
import sys
import threading
from pathlib import Path

import torch

from harness.data.tokenization import split_prompt_response
from harness.errors import HarnessError
from harness.serve.server import ChatResult, ReplyError, TokenLogprob
from harness.train.models import load_tokenizer, resolve_model_path
from harness.train.reward_model import check_reward_model, load_reward_model, score_responses
from judges.prompts import (
    ALPACA,
    ALPACA_LABELS,
    PAIRWISE,
    PAIRWISE_MULTI,
    SINGLE,
    SINGLE_MULTI,
    TEMPLATES,
    blocks,
)
from judges.prompts import conversation as render_conversation

# Rewards closer than this (relative to their size, at least 1) are a tie.
TIE_TOLERANCE = 1e-6

Scored = tuple[list[dict], str]  # (prompt messages, the assistant reply to score)


def template_fields(template, user_text: str) -> dict[str, str] | None:
    """The fields that render ``template.user`` into exactly ``user_text``, or None.

    The template's literal text is matched verbatim and each field lazily, so a
    candidate that itself contains a block delimiter splits at the first one.
    """
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(template.user):
        pattern += re.escape(literal)
        if name is not None:
            pattern += f"(?P<{name}>.*?)"
    match = re.fullmatch(pattern, user_text, re.DOTALL)
    return match.groupdict() if match else None


def conversation_turns(text: str, who: str) -> Scored:
    """(prompt messages, last reply) of a ``judges.prompts.conversation`` block, checked by re-rendering."""
    inner, label = blocks(text), f"ASSISTANT {who}".strip()
    users, replies, k = [], [], 1
    while f"USER TURN {k}" in inner and f"{label} TURN {k}" in inner:
        users.append(inner[f"USER TURN {k}"])
        replies.append(inner[f"{label} TURN {k}"])
        k += 1
    if not users or render_conversation(users, replies, who) != text:
        raise ReplyError(400, _error_body(f"cannot read conversation {who or '(single)'} back exactly"))
    messages = []
    for user, reply in zip(users, replies):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return messages[:-1], replies[-1]


def _question(question: str, answer: str) -> Scored:
    return [{"role": "user", "content": question}], answer


def read_request(messages: list) -> tuple[str, list[Scored]]:
    """(template name, what to score) of a harness judge request; ReplyError 400 for anything else."""
    if (not isinstance(messages, list) or len(messages) != 2
            or [m.get("role") if isinstance(m, dict) else None for m in messages] != ["system", "user"]):
        raise ReplyError(400, _error_body("a reward-model judge reads harness's judge requests: one system "
                                          "and one user message"))
    system, user = (m.get("content") for m in messages)
    template = next((t for t in TEMPLATES.values() if t.system == system), None)
    fields = template_fields(template, user) if template is not None and isinstance(user, str) else None
    if fields is None:
        raise ReplyError(400, _error_body("the request is not one of harness's judge templates "
                                          f"({', '.join(TEMPLATES)}) rendered exactly"))
    if template is PAIRWISE:
        return template.name, [_question(fields["question"], fields["answer_a"]),
                               _question(fields["question"], fields["answer_b"])]
    if template is PAIRWISE_MULTI:
        return template.name, [conversation_turns(fields["conversation_a"], "A"),
                               conversation_turns(fields["conversation_b"], "B")]
    if template is ALPACA:
        return template.name, [_question(fields["instruction"], fields["output_1"]),
                               _question(fields["instruction"], fields["output_2"])]
    if template is SINGLE:
        return template.name, [_question(fields["question"], fields["answer"])]
    if template is SINGLE_MULTI:
        return template.name, [conversation_turns(fields["conversation"], "")]
    raise ReplyError(400, _error_body(f"a reward model cannot answer {template.name} requests; it judges "
                                      "pairwise, alpaca and single requests"))


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def pairwise_reply(first: float, second: float) -> ChatResult:
    """``[[A]]``, ``[[B]]`` or ``[[C]]`` from the rewards of answer A and answer B."""
    gap = first - second
    tie = abs(gap) <= TIE_TOLERANCE * max(1.0, abs(first), abs(second))
    token = "[[C]]" if tie else ("[[A]]" if gap > 0 else "[[B]]")
    return ChatResult(f"Reward model: answer A {first:.6g}, answer B {second:.6g}.\n{token}")


def alpaca_reply(first: float, second: float) -> ChatResult:
    """Label 1 or 2 with the Bradley-Terry log-probabilities of each output being the better one."""
    one, two = ALPACA_LABELS
    top = {one: _log_sigmoid(first - second), two: _log_sigmoid(second - first)}
    label = one if first >= second else two
    return ChatResult(label, [TokenLogprob(label, top[label], top)])


def single_reply(reward: float) -> ChatResult:
    grade = 1 + round(9 * math.exp(_log_sigmoid(reward)))
    return ChatResult(f"Reward model: {reward:.6g}, grade 1 + round(9 sigmoid(r)) = {grade}.\n[[{grade}]]")


class RewardJudge:
    """Responder over one reward model (``harness.train.reward_model``) and its tokenizer."""

    def __init__(self, model, tokenizer, device="cpu"):
        if not getattr(tokenizer, "chat_template", None):
            raise HarnessError("the reward model's tokenizer has no chat template; a reward-model judge "
                               "scores each candidate as a chat turn")
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        self._lock = threading.Lock()

    def rewards(self, scored: list[Scored]) -> list[float]:
        """The RM's reward for each (prompt messages, reply), tokenized as training tokenizes pairs."""
        prompts, responses = [], []
        for prompt, reply in scored:
            prompt_ids, (response_ids,), _ = split_prompt_response(
                self.tokenizer, prompt, [[{"role": "assistant", "content": reply}]])
            prompts.append(prompt_ids)
            responses.append(response_ids)
        with self._lock:
            values = score_responses(self.model, prompts, responses, self.tokenizer.pad_token_id, self.device)
        return [float(v) for v in values]

    def __call__(self, body: dict) -> ChatResult:
        name, scored = read_request(body.get("messages"))
        values = self.rewards(scored)
        if name in (PAIRWISE.name, PAIRWISE_MULTI.name):
            return pairwise_reply(*values)
        if name == ALPACA.name:
            return alpaca_reply(*values)
        return single_reply(values[0])


def _error_body(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": 400}})


def load_reward_judge(uri: str, cache_dir: Path, what: str = "judge.model") -> RewardJudge:
    """The judge over the reward model at ``uri`` (a directory saved by an ``rm`` stage, or any
    one-label sequence-classification checkpoint); a clear error for anything else."""
    path = resolve_model_path(uri, Path(cache_dir))
    check_reward_model(path, what)
    tokenizer = load_tokenizer(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_reward_model(path, tokenizer.pad_token_id).to(device)
    print(f"reward-model judge: {uri} (pooling {getattr(model.config, 'harness_pooling', 'last')})",
          file=sys.stderr, flush=True)
    return RewardJudge(model, tokenizer, device)
