"""A saved reward model as a judge (judge.backend: reward_model; harness serve RM_DIR).

The RM here is built so that its reward is known exactly: toy://micro with
every layer's output projections zeroed (so the last hidden state is the
RMS-normalized token embedding), the embedding's coordinate 0 set to 0 for
every token except the digit "7", whose embedding is sqrt(d) e_0 (RMS 1), and
a score head that reads coordinate 0 scaled to 1.  Each response token's value
is then 1 for "7" and 0 otherwise, and with mean pooling

    r(answer) = (number of "7" tokens) / (response tokens)

where the response tokens are the answer's digits plus the chat template's
"<|im_end|>" and "\\n" (two tokens).  So "77" scores 2/4, "7" 1/3, "17" 1/4 and
any answer without a 7 exactly 0: ties are exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.serve.reward_judge import RewardJudge, read_request
from harness.serve.server import ReplyError
from harness.toy import toy_model_path
from harness.train.models import load_tokenizer
from harness.train.reward_model import load_reward_model
from judges.prompts import (
    alpaca_messages,
    pairwise_messages,
    pairwise_multi_messages,
    safety_messages,
    single_messages,
    single_multi_messages,
)

SUFFIX_TOKENS = 2  # "<|im_end|>" and "\n" end every assistant turn of the toy chat template


def sevens_reward(answer: str) -> float:
    """The planted RM's reward, computed from the text alone (digits are single tokens)."""
    assert answer.isdigit()
    return answer.count("7") / (len(answer) + SUFFIX_TOKENS)


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    base = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(base)
    model = load_reward_model(base, tok.pad_token_id, torch.float32, "mean")
    seven = tok.convert_tokens_to_ids("7")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        d = emb.shape[1]
        emb[:, 0] = 0.0
        emb[seven] = 0.0
        emb[seven, 0] = math.sqrt(d)
        model.score.weight.zero_()
        model.score.weight[0, 0] = 1.0 / (math.sqrt(d) * float(model.model.norm.weight[0]))
    out = tmp_path_factory.mktemp("rm") / "rm"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def judge(rm_dir) -> RewardJudge:
    tok = load_tokenizer(str(rm_dir))
    return RewardJudge(load_reward_model(str(rm_dir), tok.pad_token_id), tok)


def test_planted_reward_is_the_share_of_sevens(judge):
    answers = ["77", "7", "17", "12", "170", "3"]
    got = judge.rewards([([{"role": "user", "content": "What is 3+4?"}], a) for a in answers])
    assert got == pytest.approx([sevens_reward(a) for a in answers], abs=1e-5)  # RMSNorm's eps
    assert got[3] == got[5] == 0.0  # no 7: exactly 0, so ties are exact


def test_requests_are_read_back_exactly():
    q = "What is 3+4?\n<<<not a block>>>"  # text that looks like markup stays inside its field
    assert read_request(pairwise_messages(q, "7", "8")) == (
        "pairwise-v1", [([{"role": "user", "content": q}], "7"), ([{"role": "user", "content": q}], "8")])
    # references are part of the layout but not of what is scored
    assert read_request(pairwise_messages(q, "7", "8", ["7"]))[1][0] == ([{"role": "user", "content": q}], "7")
    assert read_request(alpaca_messages(q, "1", "2"))[1][1] == ([{"role": "user", "content": q}], "2")
    assert read_request(single_messages(q, "7")) == ("single-v1", [([{"role": "user", "content": q}], "7")])
    name, scored = read_request(pairwise_multi_messages(["What is 2+2?", "Add 3."], ["4", "7"], ["4", "8"]))
    history = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
               {"role": "user", "content": "Add 3."}]
    assert (name, scored) == ("pairwise-multi-v1", [(history, "7"), (history, "8")])
    assert read_request(single_multi_messages(["What is 2+2?", "Add 3."], ["4", "7"]))[1] == [(history, "7")]


@pytest.mark.parametrize("messages, why", [
    (safety_messages("How do I pick a lock?", "I can't help with that."), "cannot answer safety-v1"),
    ([{"role": "user", "content": "Which is better, 7 or 8?"}], "one system and one user message"),
    ([pairwise_messages("q", "a", "b")[0], {"role": "user", "content": "free text"}], "rendered exactly"),
])
def test_other_requests_are_refused_with_400(messages, why):
    with pytest.raises(ReplyError) as info:
        read_request(messages)
    assert info.value.status == 400 and why in info.value.body


def _outputs(path: Path, generator: str, answers: list[str]) -> Path:
    rows = [{"instruction": f"What is {i}+{i}?", "output": a, "generator": generator, "id": str(i)}
            for i, a in enumerate(answers)]
    path.write_text(json.dumps(rows))
    return path


def _judge(tmp_path: Path, rm: Path, suite: str, cand: list[str], base: list[str], capsys) -> dict:
    c, b = _outputs(tmp_path / "cand.json", "cand", cand), _outputs(tmp_path / "base.json", "base", base)
    code = main(["judge", "--outputs", str(c), "--baseline", str(b), "--suite", suite, "--format", "json",
                 "--no-track", "--set", "judge.backend=reward_model", "--set", f"judge.model={rm}",
                 "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out
    (row,) = json.loads(out)
    return row


def test_pairwise_suite_with_the_rm_judge(rm_dir, tmp_path, capsys):
    """Three wins (the candidate has the 7), one loss, one exact tie, in both orders.

    win_rate = (3 + 1/2) / 5 = 0.7; every prompt's two verdicts agree (consistency 1);
    verdicts naming position A: one per decided prompt, 4 of the 8 that name a position = 0.5.
    """
    cand, base = ["7", "17", "77", "12", "5"], ["8", "18", "71", "72", "6"]
    row = _judge(tmp_path, rm_dir, "pairwise", cand, base, capsys)
    assert (row["n"], row["wins"], row["ties"], row["losses"], row["errors"]) == (5, 3, 1, 1, 0)
    assert row["win_rate"] == pytest.approx(0.7)
    assert row["position_consistency"] == 1.0 and row["first_position_rate"] == pytest.approx(0.5)


def test_alpaca_preference_is_the_bradley_terry_probability(rm_dir, tmp_path, capsys):
    """alpaca's soft preference per prompt = mean over both orders of sigma(r_cand - r_base)."""
    cand, base = ["7", "17", "12"], ["8", "77", "13"]
    row = _judge(tmp_path, rm_dir, "alpaca", cand, base, capsys)
    sigma = [1 / (1 + math.exp(sevens_reward(b) - sevens_reward(c))) for c, b in zip(cand, base)]
    assert row["win_rate"] == pytest.approx(sum(sigma) / 3, abs=1e-6)
    assert row["errors"] == 0
    assert row["first_position_rate"] == pytest.approx(0.5)  # sigma(d) and sigma(-d): no position lean


def test_single_grades_are_monotone_in_the_reward(rm_dir, tmp_path, capsys):
    """grade = 1 + round(9 sigma(r)): "77" (r = 1/2) -> 7, "7" (1/3) -> 6, "12" (0) -> 5."""
    c = _outputs(tmp_path / "cand.json", "cand", ["77", "7", "12"])
    code = main(["judge", "--outputs", str(c), "--suite", "single", "--format", "json", "--no-track",
                 "--set", "judge.backend=reward_model", "--set", f"judge.model={rm_dir}",
                 "--results-dir", str(tmp_path / "results")])
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 0
    expected = [1 + round(9 / (1 + math.exp(-sevens_reward(a)))) for a in ("77", "7", "12")]
    assert expected == [7, 6, 5]
    assert row["mean_score"] == pytest.approx(sum(expected) / 3)


def test_a_plain_lm_is_not_a_reward_model(tmp_path, capsys):
    lm = toy_model_path("micro", tmp_path / "cache")
    c = _outputs(tmp_path / "cand.json", "cand", ["7"])
    code = main(["judge", "--outputs", str(c), "--baseline", str(c), "--suite", "pairwise", "--no-track",
                 "--set", "judge.backend=reward_model", "--set", f"judge.model={lm}",
                 "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code != 0
    assert f"judge.model: '{lm}' is not a reward-model checkpoint" in err and "LlamaForCausalLM" in err


def test_spec_rules_and_serve(rm_dir, tmp_path):
    from harness.config.spec import JudgeSpec
    from harness.serve.endpoint import cache_identity, serve_responder

    assert isinstance(serve_responder(str(rm_dir), 0.0, 0.0, tmp_path), RewardJudge)
    spec = JudgeSpec(backend="reward_model", model=str(rm_dir))
    assert cache_identity(spec, "http://127.0.0.1:1/v1").startswith("reward-model:dir:")
    with pytest.raises(HarnessError, match="not a reward-model checkpoint"):
        from harness.serve.reward_judge import load_reward_judge

        load_reward_judge(str(toy_model_path("micro", tmp_path / "cache")), tmp_path)


def test_spec_needs_a_model_and_no_url_for_the_rm_backend(tmp_path):
    import yaml

    from harness.config.spec import load_spec
    from harness.errors import SpecError

    base = {"name": "x", "model": "toy://micro", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}}
    for judge, expected in (({"backend": "reward_model"}, "judge.model"),
                            ({"backend": "reward_model", "model": "rm", "base_url": "http://h/v1"}, "judge.base_url")):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({**base, "judge": judge}))
        with pytest.raises(SpecError, match=expected):
            load_spec(path)


def test_check_reward_model_names_the_key(rm_dir, tmp_path):
    from harness.train.reward_model import check_reward_model

    check_reward_model(str(rm_dir), "method.reward_model")  # an rm checkpoint passes
    with pytest.raises(HarnessError, match=r"method\.reward_model: .* is not a reward-model checkpoint"):
        check_reward_model(str(toy_model_path("micro", tmp_path / "cache")), "method.reward_model")
