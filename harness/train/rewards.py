"""Reward sources of the online methods (``method.reward``): what scores a rollout's samples.

- ``{verifier: NAME}``: a verifier of ``judges.verifiers.VERIFIERS`` on each
  sample's text and its prompt row (the arith verifier reads the row's
  ``answer``): reward 1 if correct, else 0.
- ``{model: PATH}``: a reward model directory saved by an ``rm`` stage
  (or ``harness.train.reward_model``), scoring prompt + completion token ids;
  it must share the policy's tokenizer.
- ``{judge: pairwise | single}``: the sweep's judge (online DPO): a pair's
  winner judged in both orders, or each sample's 1-10 grade.
- no ``method.reward`` (SPIN): the data's own response is preferred.

Every source is checked before the first rollout (``check``): a verifier on
every prompt row, a reward model by loading it and scoring one sample, a judge
by judging one pair on the first prompt row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.data.load import Row
from harness.data.tokenization import chat_ids
from harness.errors import DataError, HarnessError
from harness.train.models import device, load_tokenizer, resolve_model_path
from harness.train.reward_model import check_reward_model, load_reward_model, score_responses
from judges.pairwise import pairwise_judge
from judges.sandbox.runner import check_isolation
from judges.single import single_judge
from judges.verifiers import VERIFIERS


@dataclass
class VerifierReward:
    """1.0 for a sample its verifier accepts, 0.0 otherwise; with ``format`` ({pattern, weight}), plus
    ``weight`` for a sample whose whole text matches ``pattern`` (``re.fullmatch``): the accuracy + format
    reward of DeepSeek-R1 (Guo et al. 2025).  ``last_metrics``: the batch's pass rate (the verifier's
    verdicts alone) and, with a format reward, the share of samples that match it."""

    name: str
    format: dict | None = None
    last_metrics: dict = field(default_factory=dict)

    def check(self, rows: list[Row], key: str) -> None:
        """Every prompt row must be checkable by the verifier (the code verifier's sandbox must be available)."""
        verifier = VERIFIERS[self.name]
        for row in rows:
            try:
                verifier.check_row(row.data)
            except (KeyError, ValueError, TypeError) as exc:
                what = f"field {exc.args[0]!r}: missing" if isinstance(exc, KeyError) else str(exc)
                raise DataError(f"{row.where}: {key}: the {self.name} verifier cannot check this prompt ({what})")
        if verifier.sandboxed:
            check_isolation()

    def score(self, rows: list[Row], prompt_ids, completion_ids, texts: list[str]) -> torch.Tensor:
        verify = VERIFIERS[self.name].verify
        passes = torch.tensor([float(verify(text, row.data)) for row, text in zip(rows, texts)], dtype=torch.float64)
        self.last_metrics = {"pass_rate": passes.mean().item()}
        if not self.format:
            return passes
        pattern = re.compile(self.format["pattern"])
        matches = torch.tensor([float(pattern.fullmatch(text) is not None) for text in texts], dtype=torch.float64)
        self.last_metrics["format_rate"] = matches.mean().item()
        return passes + self.format["weight"] * matches


def end_of_turn_suffix(tokenizer) -> list[int]:
    """The tokens a chat template puts after the EOS that closes an assistant turn (ChatML: a newline).
    Pair data is encoded with them (``split_prompt_response``: the full render after the prompt), so a
    reward model trained on it last saw them; a sampled completion stops at its EOS."""
    if getattr(tokenizer, "chat_template", None) is None or tokenizer.eos_token_id is None:
        return []
    turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    ids = chat_ids(tokenizer, turn, add_generation_prompt=False)
    eos = tokenizer.eos_token_id
    return ids[len(ids) - ids[::-1].index(eos):] if eos in ids else []


class ModelReward:
    """The scalar output of a reward model on prompt + completion ids."""

    def __init__(self, path: str, tokenizer, key: str):
        check_reward_model(path, key)
        if load_tokenizer(path).get_vocab() != tokenizer.get_vocab():
            raise HarnessError(f"{key}: the reward model at {path!r} has a different tokenizer than the policy; "
                               "it must share the policy's tokenizer")
        self.pad_id = tokenizer.pad_token_id
        self.eos, self.suffix = tokenizer.eos_token_id, end_of_turn_suffix(tokenizer)
        self.model = load_reward_model(path, self.pad_id).to(device()).eval()

    def check(self, rows: list[Row], key: str) -> None:
        """Loading succeeded in ``__init__``; scoring one sample here shows it runs."""
        self.score(rows[:1], [[self.pad_id]], [[self.pad_id]], [""])

    def score(self, rows, prompt_ids, completion_ids, texts) -> torch.Tensor:
        """Scores of prompt + completion; a chat completion that ended its turn gets the tokens its template
        puts after the end-of-turn token, as the reward model saw every response in training."""
        responses = [list(c) + self.suffix if isinstance(row.data.get("prompt"), list) and c and c[-1] == self.eos
                     else list(c) for row, c in zip(rows, completion_ids)]
        return score_responses(self.model, prompt_ids, responses, self.pad_id, device())


def check_reward_data(reward: dict | None, rows: list[Row], earlier_stages: list[str],
                      key: str = "method.reward") -> None:
    """Before anything trains: a verifier can check every prompt row; a reward model that is not the
    output of an earlier rm stage (``earlier_stages``: their names) is a reward-model directory."""
    if not reward:
        return
    if reward.get("verifier") is not None:
        VerifierReward(reward["verifier"]).check(rows, key)
    model = reward.get("model")
    if model is not None and model not in earlier_stages:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise HarnessError(f"{key}.model: {model!r} is neither a reward-model directory nor the name of an "
                               f"earlier rm stage (earlier rm stages: {earlier_stages or 'none'})")
        check_reward_model(str(path), f"{key}.model")


@dataclass(frozen=True)
class JudgeAccess:
    """How a stage reaches the sweep's judge: ``client()`` opens (or reuses) the endpoint; a judge whose failed
    calls exceed ``max_error_rate`` (judge.max_error_rate) stops the stage."""

    client: Callable[[], object]
    max_error_rate: float


# The probe's texts: the row's own answer (or the first) against a different one.
PROBE_TEXTS = ("I think the answer is 42.", "I do not know.")


class JudgeReward:
    """The judge stack as online DPO's reward (judge client: cached, retried).

    ``pairwise``: each pair of samples is judged in both orders (position swap); the winner gets 1 and the
    other 0, and a tie, or a pair with no verdict after retries, gets 0.5 for both (a tie: skipped).
    ``single``: each sample's 1-10 grade; a sample with no grade makes its pair a tie.
    Unjudged pairs are counted (``train/judge_errors``).
    """

    def __init__(self, mode: str, judge: JudgeAccess | None, key: str):
        if judge is None:
            raise HarnessError(f"{key}: a judge reward needs the sweep's judge (run the stage with harness sweep or "
                               "harness train)")
        self.mode, self.judge, self.key = mode, judge, key
        self.last_metrics: dict[str, float] = {}

    def check(self, rows: list[Row], key: str) -> None:
        """Before the first rollout, one real item through the judge: the first prompt row with its own
        ``answer`` (or a stock text) against a different text: one pair, judged in both orders (pairwise)
        or each graded (single).  A judge that cannot be reached, is misconfigured, or gives no verdict
        on the stage's prompts fails here, in one line.  The probe's client comes from the same cached, retried factory
        (a resumed run finds its verdicts cached) and is not the training's: no train/ metric counts it."""
        row = rows[0]
        answer = row.data.get("answer")
        first = str(answer) if answer not in (None, "") else PROBE_TEXTS[0]
        texts = [first, PROBE_TEXTS[1] if first != PROBE_TEXTS[1] else PROBE_TEXTS[0]]
        try:
            client = self.judge.client()
            _, errors = self._judge(client, [row.data["prompt"]] * 2, texts)
        except HarnessError as exc:
            raise HarnessError(f"{key}: the {self.mode} judge failed its probe before the first rollout: {exc}") \
                from None
        if errors:
            raise HarnessError(f"{key}: the {self.mode} judge (model {client.model!r} at {client.base_url}) gave no "
                               f"verdict on a probe item from {row.where} before the first rollout "
                               f"(last failure: {client.last_failure or 'none'})")

    def score(self, rows, prompt_ids, completion_ids, texts) -> torch.Tensor:
        client = self.judge.client()
        rewards, errors = self._judge(client, [row.data["prompt"] for row in rows], texts)
        client.check_failures(self.judge.max_error_rate, f"{self.key} (judge: {self.mode})")
        self.last_metrics = {"judge_errors": float(errors)}
        return rewards

    def _judge(self, client, prompts: list, texts: list[str]) -> tuple[torch.Tensor, int]:
        """Rewards of consecutive pairs of samples [len(texts)] float64, and how many pairs went unjudged."""
        if self.mode == "pairwise":
            items = [{"id": f"pair-{k}", "prompt": prompts[2 * k], "candidate": texts[2 * k],
                      "baseline": texts[2 * k + 1]} for k in range(len(texts) // 2)]
            judged = pairwise_judge(client, items).judgments
            first = [0.5 if r["score"] is None else float(r["score"]) for r in judged]
            rewards = torch.tensor([v for f in first for v in (f, 1.0 - f)], dtype=torch.float64)
            return rewards, sum(r["score"] is None for r in judged)
        items = [{"id": f"sample-{k}", "prompt": p, "answer": t} for k, (p, t) in enumerate(zip(prompts, texts))]
        grades = [r["score"] for r in single_judge(client, items).judgments]
        pairs = [(grades[k], grades[k + 1]) for k in range(0, len(grades), 2)]
        unjudged = [a is None or b is None for a, b in pairs]
        rewards = torch.tensor([0.0 if bad else float(g) for (a, b), bad in zip(pairs, unjudged) for g in (a, b)],
                               dtype=torch.float64)
        return rewards, sum(unjudged)


class DataResponseReward:
    """SPIN's preference: 1 for a prompt's own data response, 0 for the policy's sample (0 for both, a tie,
    when the policy reproduced the data response token for token)."""

    def __init__(self, prompts):
        self.responses = {id(row): tuple(r) for row, r in zip(prompts.rows, prompts.responses)}

    def check(self, rows: list[Row], key: str) -> None:
        return None

    def score(self, rows, prompt_ids, completion_ids, texts) -> torch.Tensor:
        return torch.tensor([float(tuple(c) == self.responses[id(row)]) for row, c in zip(rows, completion_ids)],
                            dtype=torch.float64)


def reward_source(reward: dict | None, tokenizer, cache_dir: Path, prompts=None, judge: JudgeAccess | None = None,
                  key: str = "method.reward"):
    """The reward source ``method.reward`` names (a mapping with exactly one of verifier, model, judge);
    None (SPIN): the data's own responses are preferred."""
    if reward is None:
        return DataResponseReward(prompts)
    if reward.get("judge") is not None:
        return JudgeReward(reward["judge"], judge, key)
    if reward.get("verifier") is not None:
        return VerifierReward(reward["verifier"], reward.get("format"))
    if reward.get("model") is not None:
        return ModelReward(resolve_model_path(reward["model"], cache_dir), tokenizer, f"{key}.model")
    raise HarnessError(f"{key}: {reward!r} names no reward source (verifier, model or judge)")
