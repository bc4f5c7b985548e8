"""Limits that cut a suite's prompts are said out loud; MT-Bench judges every question by default."""

from __future__ import annotations

import json

from harness.cli import main
from harness.config.spec import EvalSpec
from harness.eval.suite import suite_options
from harness.eval.suites import limited_items
from harness.toy import toy_dataset


def test_a_limit_that_cuts_names_itself_and_the_total():
    items, cut = limited_items("pairwise", suite_options(EvalSpec(), "pairwise"))
    assert len(items) == 50 and cut == "pairwise: 50 of 1000 prompts (eval.pairwise.limit)"
    assert [i["id"] for i in items] == [i["id"] for i in limited_items("pairwise", {
        **suite_options(EvalSpec(), "pairwise"), "limit": None})[0][:50]]


def test_mtbench_judges_every_question_unless_limited():
    options = suite_options(EvalSpec(), "mtbench")
    items, cut = limited_items("mtbench", options)
    assert options["limit"] is None and cut is None and len(items) == 200
    items, cut = limited_items("mtbench", {**options, "limit": 500})
    assert len(items) == 200 and cut is None  # a limit above the data cuts nothing


def test_a_limit_with_outputs_files_is_refused_not_ignored(tmp_path, capsys):
    rows = [{"instruction": item["prompt"][0]["content"], "output": "1", "generator": "m"}
            for item in toy_dataset("arith-eval")[:3]]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows))
    code = main(["judge", "--outputs", str(path), "--suite", "arith", "--set", "eval.arith.limit=2", "--no-track",
                 "--results-dir", str(tmp_path / "results")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--set eval.arith.limit=2: with --outputs every row of the files is judged" in err
