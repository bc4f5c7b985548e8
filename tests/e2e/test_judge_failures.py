"""A judge that cannot be reached, or fails too often, is an error, never a result (issue 17, item 6).

``harness judge`` exits 2 with one ``error:`` line; in a sweep the trial is FAILED
with its training cached, and a re-run against a working judge judges again
without retraining.  The judge is the embedded toy judge's responder behind a
real local server, so the failures are real HTTP failures.
"""

from __future__ import annotations

import logging
import socket

import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.serve.server import ReplyError, serve_in_background
from harness.serve.toy_judge import make_responder
from tests.e2e.test_judge import outputs_file
from tests.logged import steps


def dead_url() -> str:
    """A local URL where nothing listens (a port the OS just handed out and took back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def judge(tmp_path, *args: str) -> int:
    cand = outputs_file(tmp_path / "cand.jsonl", "cand", {0, 1, 2, 3})
    base = outputs_file(tmp_path / "base.json", "base", {0, 1})
    return main(["judge", "--outputs", str(cand), "--baseline", str(base), "--suite", "pairwise", "--no-track",
                 "--results-dir", str(tmp_path / "results"), "--set", "judge.max_retries=0", *args])


def error_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.startswith("error:")]


def test_unreachable_judge_is_one_error_line_and_exit_2(tmp_path, capsys, caplog):
    url = dead_url()
    with caplog.at_level(logging.WARNING):
        code = judge(tmp_path, "--judge-url", url, "--judge-model", "gpt-4o")
    assert code == 2
    [line] = error_lines(capsys)
    assert "12 of 12 judge requests failed (all)" in line and f"{url} is unreachable" in line, line
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert 1 <= len(gave_up) <= 3  # the first few, not one line per request


def test_unreachable_judge_without_model_says_unreachable(tmp_path, capsys):
    url = dead_url()
    assert judge(tmp_path, "--judge-url", url) == 2
    [line] = error_lines(capsys)
    assert f"{url} is unreachable" in line and "set judge.model" not in line, line


def _flaky_judge(bad_word: str):
    """The toy judge, answering HTTP 500 to every request that mentions ``bad_word``."""
    toy = make_responder()

    def respond(body):
        if bad_word in str(body["messages"]):
            raise ReplyError(500)
        return toy(body)

    return serve_in_background(respond, model_name="toy")


def test_error_rate_above_max_error_rate_fails(tmp_path, capsys):
    """1 of 6 prompts fails in both orders: 2 of 12 requests, 17%: above the default 0.1, below 0.2."""
    from harness.toy import toy_dataset

    word = toy_dataset("arith-eval")[5]["prompt"][0]["content"]
    with _flaky_judge(word) as server:
        assert judge(tmp_path, "--judge-url", server.base_url, "--judge-model", "toy") == 2
        [line] = error_lines(capsys)
        assert "2 of 12 judge requests failed (17%, above judge.max_error_rate 0.1)" in line, line
        assert judge(tmp_path, "--judge-url", server.base_url, "--judge-model", "toy", "--format", "json",
                     "--set", "judge.max_error_rate=0.2") == 0
        assert '"errors": 1' in capsys.readouterr().out


def test_sweep_trial_with_unreachable_judge_fails_and_rejudges_without_retraining(tmp_path, capsys):
    url = dead_url()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    spec = {
        "name": "judgefail", "results_dir": str(tmp_path / "results"), "model": "toy://micro",
        "method": {"name": "sft"}, "data": {"train": "toy://arith-sft", "fraction": 0.01},
        "train": {"batch_size": 4, "max_length": 64, "max_steps": 2},
        "judge": {"base_url": url, "model": "toy", "max_retries": 0},
        "eval": {"suites": ["pairwise"], "generation": {"max_new_tokens": 4},
                 "pairwise": {"limit": 2, "baseline": "base"}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "judge requests failed (all)" in out and "unreachable" in out
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("judgefail")
    [trial] = [r for r in client.search_runs([exp.experiment_id]) if "harness.trial_id" in r.data.tags]
    assert trial.info.status == "FAILED" and "unreachable" in trial.data.tags["harness.error"]
    assert not any(k.startswith("eval/pairwise/") for k in trial.data.metrics)
    trained = steps(tmp_path / "results")
    assert trained == 2

    # The same URL now answers: the re-run resumes the trial, judges it, and trains nothing.
    with serve_in_background(make_responder(), port=port, model_name="toy"):
        assert main(["sweep", str(path)]) == 0
    again = client.get_run(trial.info.run_id)
    assert again.info.status == "FINISHED" and "harness.error" not in again.data.tags
    assert again.data.metrics["eval/pairwise/n"] == 2 and again.data.metrics["eval/pairwise/judge_failures"] == 0
    assert steps(tmp_path / "results") == trained
    assert len(client.search_runs([exp.experiment_id])) == 2  # the sweep's parent run and the trial's
