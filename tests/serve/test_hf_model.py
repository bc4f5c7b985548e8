"""`harness serve MODEL` over toy://micro: the real CLI process, the real openai client, logprobs
checked against an independent greedy decode with plain forward passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import torch

from harness.data.tokenization import chat_ids
from harness.serve.endpoint import serve_responder
from harness.serve.hf_model import HFResponder
from harness.serve.server import serve_in_background
from harness.train.models import load_model, load_tokenizer, resolve_model_path

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "system", "content": "You grade."}, {"role": "user", "content": "What is 2+3?"}]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    path = resolve_model_path("toy://micro", results / "cache")
    return results, load_model(path).eval(), load_tokenizer(path)


@torch.no_grad()
def greedy_reference(model, tok, messages, steps: int) -> list[tuple[str, float, list[float], int]]:
    """(token text, its logprob, the 3 best logprobs, token id) per step, by argmax over full forward passes."""
    ids = chat_ids(tok, messages, add_generation_prompt=True)
    out = []
    for _ in range(steps):
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), dim=-1)
        nxt = int(logp.argmax())
        if nxt == tok.eos_token_id:
            break
        out.append((tok.decode([nxt]), float(logp[nxt]), logp.topk(3).values.tolist(), nxt))
        ids.append(nxt)
    return out


def test_hf_responder_returns_the_models_own_greedy_tokens_and_logprobs(micro):
    _, model, tok = micro
    expected = greedy_reference(model, tok, MESSAGES, 6)
    with serve_in_background(HFResponder(model, tok), model_name="toy://micro") as server:
        c = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="toy://micro", messages=MESSAGES, temperature=0, max_tokens=6,
                                      logprobs=True, top_logprobs=3)
    got = r.choices[0].logprobs.content
    assert [t.token for t in got] == [e[0] for e in expected]
    for t, (_, lp, top3, _) in zip(got, expected):
        assert t.logprob == pytest.approx(lp, abs=1e-4)
        assert t.top_logprobs[0].logprob == pytest.approx(top3[0], abs=1e-4)  # greedy: the chosen one is best
        assert len(t.top_logprobs) <= 3
    assert r.usage.prompt_tokens == len(chat_ids(tok, MESSAGES, add_generation_prompt=True))
    assert r.usage.completion_tokens == len(expected)
    assert r.choices[0].message.content == tok.decode([e[3] for e in expected], skip_special_tokens=True).strip()


def test_seeded_sampling_repeats_and_stop_strings_cut(micro):
    _, model, tok = micro
    responder = HFResponder(model, tok)
    body = {"messages": MESSAGES, "temperature": 1.0, "seed": 0, "max_tokens": 12}
    first, again = responder(body), responder(dict(body))
    assert first.text == again.text and first.completion_tokens == 12
    assert responder({**body, "seed": 1}).text != first.text
    assert " " in first.text  # the random model's seeded sample has words; cut at the first space
    cut = responder({**body, "stop": [" "]})
    assert cut.text == first.text[: first.text.index(" ")].strip()
    assert cut.completion_tokens < first.completion_tokens


def test_serve_responder_for_a_model_serves_it(micro):
    results, model, tok = micro
    responder = serve_responder("toy://micro", 0.0, 0.0, results / "cache")  # built already: a load
    body = {"messages": MESSAGES, "temperature": 1.0, "seed": 0, "max_tokens": 12}
    assert responder(body).text == HFResponder(model, tok)(body).text


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~10 s of CPU
def test_serve_cli_over_toy_micro(micro):
    results, _, _ = micro
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "toy://micro", "--port", "0",
                             "--results-dir", str(results)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line).group(1)
        c = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=60)
        assert [m.id for m in c.models.list()] == ["toy://micro"]
        r = c.chat.completions.create(model="toy://micro", messages=MESSAGES, temperature=0, max_tokens=4,
                                      logprobs=True, top_logprobs=2)
        assert r.choices[0].logprobs.content and all(t.logprob <= 0 for t in r.choices[0].logprobs.content)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bias_flags_are_refused_for_a_model():
    from harness.cli import main

    assert main(["serve", "toy://micro", "--position-bias", "0.3"]) == 2
