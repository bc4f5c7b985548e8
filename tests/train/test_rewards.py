"""Reward sources (harness.train.rewards): the judge reward's probe before the first rollout."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from harness.config.spec import JudgeSpec
from harness.data.load import Row
from harness.errors import HarnessError
from harness.serve.endpoint import judge_client
from harness.serve.server import ChatResult, ReplyError, serve_in_background
from harness.serve.toy_judge import make_responder
from harness.train.rewards import JudgeAccess, JudgeReward

ROW = Row("toy://arith-prompts", 1, {"prompt": [{"role": "user", "content": "What is 12+30?"}], "answer": "42"})


def _access(url: str, cache, **judge) -> JudgeAccess:
    spec = JudgeSpec(base_url=url, model="local-judge", **judge)
    return JudgeAccess(lambda: judge_client(spec, url, cache, backoff_s=0.01), 0.1)


def _counting(responder, seen: Counter):
    def respond(body):
        seen[body["messages"][-1]["content"][:40]] += 1
        return responder(body)

    return respond


@pytest.mark.parametrize("mode", ["pairwise", "single"])
def test_the_probe_judges_one_pair_once_and_a_resumed_run_finds_it_cached(tmp_path, mode):
    """A working judge passes the probe (one pair: two requests, both orders or both grades); a second probe
    with the same cache (a resumed run) sends nothing; the probe leaves the training's metrics alone."""
    seen = Counter()
    with serve_in_background(_counting(make_responder(), seen)) as server:
        reward = JudgeReward(mode, _access(server.base_url, tmp_path / "judge"), "method.reward")
        reward.check([ROW], "method.reward")
        assert sum(seen.values()) == 2
        assert reward.last_metrics == {}  # train/judge_errors is the training's, not the probe's
        JudgeReward(mode, _access(server.base_url, tmp_path / "judge"), "method.reward").check([ROW],
                                                                                             "method.reward")
        assert sum(seen.values()) == 2


@pytest.mark.parametrize("mode", ["pairwise", "single"])
def test_a_judge_that_gives_no_verdict_fails_the_probe_in_one_line(tmp_path, mode):
    with serve_in_background(lambda body: ChatResult("I would rather not say.")) as server:
        reward = JudgeReward(mode, _access(server.base_url, tmp_path / "judge", max_retries=1), "method.reward")
        with pytest.raises(HarnessError) as info:
            reward.check([ROW], "method.reward")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"method.reward: the {mode} judge (model 'local-judge' at {server.base_url})")
    assert "gave no verdict on a probe item from toy://arith-prompts:1 before the first rollout" in message
    assert "rejected by the parser" in message


def test_an_unreachable_judge_fails_the_probe_naming_its_endpoint(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    reward = JudgeReward("pairwise", _access(url, tmp_path / "judge", max_retries=0), "method.reward")
    with pytest.raises(HarnessError, match=rf"^method.reward: the pairwise judge \(model 'local-judge' at {url}\) "
                                           r"gave no verdict .*APIConnectionError"):
        reward.check([ROW], "method.reward")


def test_a_judge_that_refuses_the_key_fails_the_probe_naming_method_reward(tmp_path):
    def refuse(body):
        raise ReplyError(401)

    with serve_in_background(refuse) as server:
        reward = JudgeReward("single", _access(server.base_url, tmp_path / "judge"), "method.reward")
        with pytest.raises(HarnessError, match=r"^method.reward: the single judge failed its probe before the first "
                                               r"rollout: judge endpoint .* HTTP 401"):
            reward.check([ROW], "method.reward")
