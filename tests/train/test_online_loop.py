"""The online loop (harness.train.online): rollout layout, step normalization, stored log-probs, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from harness.config.spec import LoraSpec
from harness.data.load import Row, load_rows, take_fraction
from harness.errors import DataError, HarnessError
from harness.methods import grpo_token_losses, pair_preferences
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.loop import Callbacks
from harness.train.models import load_model, load_tokenizer
from harness.train.online import OnlineTrainer, Rollout, _padded, split
from harness.train.plan import TrainConfig
from harness.train.rewards import VerifierReward
from harness.train.rollout import Samples, completion_logps, encode_prompts, sequence_batch
from harness.train.values import build_value_model, check_value_lora


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = toy_model_path("micro", tmp_path_factory.mktemp("cache"))
    return str(path), load_tokenizer(str(path))


def _prompts(tokenizer, n=3, max_new_tokens=6):
    rows = take_fraction(load_rows("toy://arith-prompts", "eval"), 0.01, 0)[:n]
    return encode_prompts(tokenizer, rows, 64, None, "keep_end_of_prompt", max_new_tokens)


def test_split_is_even_and_keeps_order():
    assert split(list(range(8)), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert split([5, 1], 4) == [[5], [1]]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_completion_logps_equal_each_row_alone(micro, temperature):
    """Left-padded prompts and right-padded completions give every row the log-probs it has unpadded,
    under the sampling temperature (logits / T, the distribution the completions were drawn from)."""
    path, tok = micro
    model = load_model(path, torch.float64).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    completions = [[20, 21], [22, 23, 24, 25], [tok.eos_token_id]]
    batch = sequence_batch(prompts, completions, tok.pad_token_id)
    with torch.no_grad():
        logps, logits = completion_logps(model, batch, with_logits=True, temperature=temperature)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            ids = torch.tensor([p + c])
            alone = torch.log_softmax(model(input_ids=ids).logits[0] / temperature, -1)
            alone = alone[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)]
            torch.testing.assert_close(logps[i, : len(c)], alone, rtol=1e-10, atol=1e-10)
            assert torch.all(logps[i, len(c):] == 0)
    assert batch.completion_mask.sum(-1).tolist() == [2, 4, 1]
    assert logits.shape[1] == batch.completion_mask.shape[1] + 1


def _trainer(path, tok, prompts, grad_accum, **params):
    model = load_model(path, torch.float64)
    method = METHODS["grpo"]
    params = {**method.params, "group_size": 4, "max_new_tokens": 6, "reward": {"verifier": "arith"}, **params}
    cfg = TrainConfig(lr=1e-2, batch_size=2, grad_accum=grad_accum, max_steps=1, shuffle=False,
                      scheduler="constant", warmup_ratio=0.0, max_grad_norm=1e9)
    reference = load_model(path, torch.float64).eval() if params["beta"] > 0 else None
    return OnlineTrainer(model, tok, method, params, prompts, cfg, VerifierReward("arith"), reference,
                         Callbacks(progress=False))


def test_tokens_seen_is_the_exact_sum_of_completion_lengths(micro):
    """7 completions a rollout: tokens_seen counts their lengths, not a float mean times a count
    (int(61 / 7 * 7) is 60 in floating point)."""
    path, tok = micro
    trainer = _trainer(path, tok, _prompts(tok, n=1), 1, group_size=7)
    seen, rollout = [], trainer.rollout

    def recording(iteration, prompt_index):
        ro, metrics = rollout(iteration, prompt_index)
        seen.append(sum(len(c) for c in ro.samples.completion_ids))
        return ro, metrics

    trainer.rollout = recording
    assert trainer.train().tokens_seen == sum(seen) > 0


def _perturbed(ro: Rollout, with_ref: bool) -> Rollout:
    """The rollout with advantages of both signs and old/reference log-probs away from the policy's,
    so that ratios leave the clip range on both sides and every term of the loss is live."""
    gen = torch.Generator().manual_seed(0)
    s = ro.samples  # completions cut to 6, 1, 2, ... tokens: ragged rows, whatever the model sampled
    cut = [c[: 1 + (5 * i + 5) % len(c)] for i, c in enumerate(s.completion_ids)]
    samples = Samples(s.prompt_index, s.prompt_ids, cut, s.texts, s.truncated)
    ro = Rollout(samples, ro.rewards, ro.advantages, ro.keep, None, None)
    n = len(ro.samples)
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    # Computed from the policy itself: the independent computation below reads the same numbers.
    old = [torch.randn(len(c), generator=gen, dtype=torch.float32) * 0.3 - 2.0 for c in ro.samples.completion_ids]
    ref = [torch.randn(len(c), generator=gen, dtype=torch.float32) * 0.3 - 2.0 for c in ro.samples.completion_ids]
    return Rollout(ro.samples, ro.rewards, adv, ro.keep, old, ref if with_ref else None)


def _expected_grads(trainer, ro: Rollout, aggregation: str, beta: float) -> list[torch.Tensor]:
    """The step's gradient computed directly: one forward over every sample, then the aggregation's
    formula written out (not the loop's numerator/denominator code)."""
    s = ro.samples
    index = list(range(len(s)))
    batch = sequence_batch(s.prompt_ids, s.completion_ids, trainer.pad_id)
    logps, _ = completion_logps(trainer.model, batch)
    mask = batch.completion_mask.double()
    old = torch.zeros_like(logps)
    ref = torch.zeros_like(logps)
    for i in index:
        old[i, : len(s.completion_ids[i])] = ro.old_logps[i].double()
        if ro.ref_logps is not None:
            ref[i, : len(s.completion_ids[i])] = ro.ref_logps[i].double()
    tl, _ = grpo_token_losses(logps, old, ref if beta > 0 else None, ro.advantages, mask, 0.2, 0.28, beta)
    if aggregation == "grpo":  # mean over sequences of each sequence's token mean
        loss = ((tl * mask).sum(-1) / mask.sum(-1)).mean()
    elif aggregation in ("bnpo", "dapo"):  # one token mean over the whole step
        loss = (tl * mask).sum() / mask.sum()
    else:  # dr_grpo: token sum over (sequences x max completion length)
        loss = (tl * mask).sum() / (len(index) * trainer.params["max_new_tokens"])
    trainer.model.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in trainer.model.parameters()]
    trainer.model.zero_grad()
    return grads


@pytest.mark.parametrize("aggregation,beta", [("grpo", 0.0), ("bnpo", 0.0), ("dr_grpo", 0.04), ("dapo", 0.04)])
def test_grad_accumulation_over_uneven_micro_batches_equals_one_big_step(micro, aggregation, beta):
    """8 samples as micro-batches of 3, 3 and 2 give the gradient of the whole step computed directly.

    Completion lengths differ, so a per-micro-batch denominator (the mutation this catches) would
    weight the micro-batches' tokens differently and give another gradient.
    """
    path, tok = micro
    prompts = _prompts(tok, n=2)
    expected = None
    for grad_accum in (1, 3):
        trainer = _trainer(path, tok, prompts, grad_accum, loss_aggregation=aggregation, beta=beta,
                           eps_high=0.28)
        ro, _ = trainer.rollout(1, [0, 1])
        assert len(ro.samples) == 8
        ro = _perturbed(ro, with_ref=beta > 0)
        if expected is None:
            expected = _expected_grads(trainer, ro, aggregation, beta)
            assert len({len(c) for c in ro.samples.completion_ids}) > 1, "lengths must differ"
        trainer.model.train()
        trainer.optimizer_step(ro, list(range(8)), want_logs=False)
        got = [p.grad for p in trainer.model.parameters()]
        assert sum(float(g.abs().sum()) for g in got) > 0
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)


def test_rollout_keeps_the_sampling_policys_logps_when_updates_follow_each_other(micro):
    """With two minibatches the second update's ratio is against the log-probs stored at sampling
    time, which differ from the policy's after the first update."""
    path, tok = micro
    trainer = _trainer(path, tok, _prompts(tok, n=2), 1, minibatches=2)
    assert trainer.updates == 2
    ro, metrics = trainer.rollout(1, [0, 1])
    assert ro.old_logps is not None and len(ro.old_logps) == 8
    batch = sequence_batch(ro.samples.prompt_ids, ro.samples.completion_ids, trainer.pad_id)
    with torch.no_grad():
        now, _ = completion_logps(trainer.model, batch)
    for i, old in enumerate(ro.old_logps):
        torch.testing.assert_close(old.double(), now[i, : len(old)], rtol=1e-6, atol=1e-6)
    ro = _perturbed(ro, with_ref=False)
    ro.old_logps = [o.clone() for o in trainer._minibatch(ro, list(range(8)), False)[0].logps.detach().unbind()]
    trainer.model.train()
    trainer.optimizer_step(ro, [0, 1, 2, 3], False)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    mb, _ = trainer._minibatch(ro, [4, 5, 6, 7], False)
    torch.testing.assert_close(mb.old_logps, torch.stack([ro.old_logps[i] for i in [4, 5, 6, 7]]).to(mb.logps))
    assert not torch.allclose(mb.logps.detach() * mb.mask, mb.old_logps * mb.mask)
    for key in ("reward/mean", "reward/std", "pass_rate", "zero_signal_groups", "truncated_fraction",
                "response_length", "advantages/mean", "generation_s"):
        assert key in metrics, key


def test_a_prompt_without_an_answer_is_named_before_any_rollout(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "What is 2+2?", "answer": "4"}) + "\n"
                    + json.dumps({"prompt": "What is 3+3?"}) + "\n"
                    + json.dumps({"prompt": "What is 1+1?", "answer": "two"}) + "\n")
    rows = load_rows(str(path), "eval")
    with pytest.raises(DataError, match=r"prompts.jsonl:2: method.reward: .*field 'answer': missing"):
        VerifierReward("arith").check(rows, "method.reward")
    with pytest.raises(DataError, match=r"prompts.jsonl:3: .*no number"):
        VerifierReward("arith").check([rows[0], rows[2]], "method.reward")


def test_a_format_reward_adds_its_weight_to_matching_samples_and_pass_rate_counts_the_verifier_alone():
    row = Row("p", 1, {"prompt": "What is 40+2?", "answer": "42"})
    texts = ["42", "42, I am 90% sure.", "41", "41, I am 90% sure.", " 42"]
    reward = VerifierReward("arith", {"pattern": r"-?\d+", "weight": 0.25})
    scores = reward.score([row] * 5, None, None, texts)
    # by hand: verifier 1, 0 (the last number is 90), 0, 0, 1; the pattern matches "42" and "41" only
    # (fullmatch: the leading space of " 42" does not match)
    assert scores.tolist() == [1.25, 0.0, 0.25, 0.0, 1.0]
    assert reward.last_metrics == {"pass_rate": 0.4, "format_rate": 0.4}
    plain = VerifierReward("arith")
    assert plain.score([row] * 5, None, None, texts).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert plain.last_metrics == {"pass_rate": 0.4}


def test_prompts_longer_than_the_budget_are_cut_dropped_or_refused(micro):
    _, tok = micro
    rows = take_fraction(load_rows("toy://arith-prompts", "eval"), 0.01, 0)[:2]
    full = encode_prompts(tok, rows, 64, None, "keep_end_of_prompt", 8)
    longest = max(len(p) for p in full.ids)
    # The budget: data.max_prompt_length, and no more than train.max_length - max_new_tokens.
    for max_length, max_prompt in ((64, longest - 1), (longest + 8 - 1, longest + 6)):
        cut = encode_prompts(tok, rows, max_length, max_prompt, "keep_end_of_prompt", 8)
        assert cut.stats["data/truncated"] >= 1 and max(len(p) for p in cut.ids) == longest - 1
        assert [p[-3:] for p in cut.ids] == [p[-3:] for p in full.ids]  # the prompt's end is kept
    dropped = encode_prompts(tok, rows, 64, longest - 1, "drop", 8)
    assert dropped.stats["data/dropped"] == len(rows) - len(dropped.rows) >= 1
    with pytest.raises(DataError, match="data.truncation: error"):
        encode_prompts(tok, rows, 64, longest - 1, "error", 8)


def test_pair_preferences_by_hand():
    got = pair_preferences(torch.tensor([1.0, 0.0, 0.5, 0.5, -1.0, 2.0], dtype=torch.float64))
    assert got.tolist() == [1.0, -1.0, 0.0, 0.0, -1.0, 1.0]


def test_split_never_cuts_a_pair():
    assert split(list(range(8)), 3, unit=2) == [[0, 1, 2, 3], [4, 5], [6, 7]]


def test_online_dpo_step_over_uneven_micro_batches_equals_the_dpo_loss_of_its_untied_pairs(micro):
    """4 pairs (one tied) as micro-batches of 2, 1 and 1 pairs: the gradient of the mean DPO loss over the
    3 untied pairs, each ordered by its rewards, written out directly with log-sigmoid."""
    path, tok = micro
    prompts = _prompts(tok, n=4)
    beta = 0.1
    expected = None
    for grad_accum in (1, 3):
        model = load_model(path, torch.float64)
        method = METHODS["online-dpo"]
        params = {**method.params, "max_new_tokens": 6, "reward": {"verifier": "arith"}, "beta": beta}
        cfg = TrainConfig(lr=1e-2, batch_size=4, grad_accum=grad_accum, max_steps=1, shuffle=False,
                          scheduler="constant", warmup_ratio=0.0, max_grad_norm=1e9)
        trainer = OnlineTrainer(model, tok, method, params, prompts, cfg, VerifierReward("arith"),
                                load_model(path, torch.float64).eval(), Callbacks(progress=False))
        ro, _ = trainer.rollout(1, [0, 1, 2, 3])
        rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.0, 2.0], dtype=torch.float64)
        ragged = _perturbed(ro, with_ref=True)  # ragged completions and reference log-probs away from the policy's
        ro = Rollout(ragged.samples, rewards, pair_preferences(rewards),
                     trainer.hooks.keep(rewards, rewards * 0, params), None, ragged.ref_logps)
        if expected is None:
            s = ro.samples
            batch = sequence_batch(s.prompt_ids, s.completion_ids, trainer.pad_id)
            logps, _ = completion_logps(trainer.model, batch)
            policy = (logps * batch.completion_mask).sum(-1)
            ref = torch.tensor([float(r.double().sum()) for r in ro.ref_logps], dtype=torch.float64)
            # (chosen, rejected) sample indices by the rewards above; pair (4, 5) is tied
            z = [beta * ((policy[c] - ref[c]) - (policy[r] - ref[r])) for c, r in ((0, 1), (3, 2), (7, 6))]
            loss = -sum(torch.nn.functional.logsigmoid(v) for v in z) / 3
            trainer.model.zero_grad()
            loss.backward()
            expected = [p.grad.clone() for p in trainer.model.parameters()]
            trainer.model.zero_grad()
        trainer.model.train()
        metrics = trainer.optimizer_step(ro, list(range(8)), want_logs=False)
        assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=1e-9)
        for g, e in zip((p.grad for p in trainer.model.parameters()), expected):
            torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("mode", ["pairwise", "single"])
def test_judge_reward_orders_each_pair_by_the_judges_verdicts(toy_url, tmp_path, mode):
    """The real toy judge over HTTP: a correct answer beats a wrong one whichever comes first; two correct
    answers tie (equal rewards, so the pair is skipped)."""
    from harness.config.spec import JudgeSpec
    from harness.serve.endpoint import judge_client
    from harness.train.rewards import JudgeAccess, JudgeReward

    spec = JudgeSpec(base_url=toy_url)
    access = JudgeAccess(lambda: judge_client(spec, toy_url, tmp_path / "judge"), 0.1)
    row = Row("toy://arith-prompts", 1, {"prompt": [{"role": "user", "content": "What is 12+30?"}], "answer": "42"})
    texts = ["42", "41", "40", "42", "42", "42"]
    rewards = JudgeReward(mode, access, "method.reward").score([row] * 6, None, None, texts)
    prefs = pair_preferences(rewards).tolist()
    assert prefs == [1.0, -1.0, -1.0, 1.0, 0.0, 0.0]


def test_the_code_verifier_rewards_a_program_that_passes_the_rows_tests():

    row = Row("prompts.jsonl", 1, {"prompt": "Write add(a, b).", "tests": "assert add(2, 3) == 5\n"})
    texts = ["```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a - b\n"]
    reward = VerifierReward("code")
    reward.check([row], "method.reward")
    assert reward.score([row, row], None, None, texts).tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match=r"prompts.jsonl:2: method.reward: the code verifier .*'tests'"):
        reward.check([Row("prompts.jsonl", 2, {"prompt": "Write add."})], "method.reward")


# ---- PPO through the loop


class FixedScores:
    """A reward source at the process boundary: the scores it is given, in sample order."""

    def __init__(self, scores):
        self.scores = scores

    def score(self, rows, prompt_ids, completion_ids, texts):
        return torch.tensor(self.scores[: len(texts)], dtype=torch.float64)


def _ppo_trainer(path, tok, prompts, grad_accum=1, reward=None, checkpointing=False, **params):
    model = load_model(path, torch.float64)
    method = METHODS["ppo"]
    params = {**method.params, "max_new_tokens": 6, "reward": {"verifier": "arith"}, **params}
    cfg = TrainConfig(lr=1e-2, batch_size=8, grad_accum=grad_accum, max_steps=1, shuffle=False,
                      scheduler="constant", warmup_ratio=0.0, max_grad_norm=1e9, gradient_checkpointing=checkpointing)
    reference = load_model(path, torch.float64).eval() if params["beta"] > 0 else None
    critic = build_value_model(params["value_model"], path, model, tok.pad_token_id, torch.float64, LoraSpec(), 0)
    return OnlineTrainer(model, tok, METHODS["ppo"], params, prompts, cfg, reward or VerifierReward("arith"),
                         reference, Callbacks(progress=False), critic)


def _cut(samples: Samples, lengths) -> Samples:
    cut = [c[:n] for c, n in zip(samples.completion_ids, lengths)]
    return Samples(samples.prompt_index, samples.prompt_ids, cut, samples.texts, [True] * len(cut))


def test_ppo_score_lands_on_the_last_response_token_of_each_sample(micro):
    """beta 0, gamma 0.5, lam 1: GAE's returns are the discounted score, R_t = s * 0.5^(n - 1 - t) for a
    completion of n tokens, whatever the values; so the score sits on token n - 1, never on padding.
    missing_eos_penalty 1 and reward_clip 2 shape the scores (all samples are cut, so truncated)."""
    path, tok = micro
    prompts = _prompts(tok, n=4)
    raw = [3.0, -0.5, 1.0, 0.25]
    trainer = _ppo_trainer(path, tok, prompts, reward=FixedScores(raw), beta=0.0, gamma=0.5, lam=1.0,
                           missing_eos_penalty=1.0, reward_clip=2.0)
    ro, _ = trainer.rollout(1, [0, 1, 2, 3])
    lengths = [1, 3, 6, 2]
    ro, metrics = trainer.build_rollout(_cut(ro.samples, lengths), [prompts.rows[i] for i in range(4)])
    scores = [2.0, -1.5, 0.0, -0.75]  # raw - 1, clipped to [-2, 2]
    assert ro.rewards.tolist() == scores
    assert metrics["reward_raw/mean"] == pytest.approx(sum(raw) / 4)
    assert metrics["reward/mean"] == pytest.approx(sum(scores) / 4)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        expected = torch.tensor([s * 0.5 ** (n - 1 - t) for t in range(n)], dtype=torch.float64)
        torch.testing.assert_close(ro.returns[i, :n], expected)
        assert torch.all(ro.returns[i, n:] == 0)
    assert ro.advantages.shape == ro.returns.shape  # per token
    assert metrics["beta"] == 0.0 and "kl_per_sequence" in metrics


def test_ppo_empty_response_raises(micro):
    path, tok = micro
    prompts = _prompts(tok, n=2)
    trainer = _ppo_trainer(path, tok, prompts, beta=0.0)
    ro, _ = trainer.rollout(1, [0, 1])
    with pytest.raises(ValueError, match=r"empty response: rows \[1\]"):
        trainer.build_rollout(_cut(ro.samples, [2, 0]), prompts.rows[:2])


@pytest.mark.parametrize("value_model", ["separate", "shared_head"])
def test_ppo_ratio_uses_the_stored_rollout_logps_across_epochs(micro, value_model):
    """ppo_epochs 2: the second epoch's ratio is against the log-probs stored at sampling time (the
    KL-shaped rewards need them even for one update), not the policy's after the first update."""
    path, tok = micro
    trainer = _ppo_trainer(path, tok, _prompts(tok, n=4), ppo_epochs=2, value_model=value_model)
    assert trainer.updates == 2
    ro, _ = trainer.rollout(1, [0, 1, 2, 3])
    assert ro.old_logps is not None and ro.old_values is not None and ro.ref_logps is not None
    trainer._train_mode(True)
    trainer.optimizer_step(ro, [0, 1, 2, 3], False)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    mb, _ = trainer._minibatch(ro, [0, 1, 2, 3], False)
    stored = _padded(ro.old_logps, [0, 1, 2, 3], mb.logps.shape[1], "cpu").to(mb.logps)
    torch.testing.assert_close(mb.old_logps, stored)
    assert not torch.allclose(mb.logps.detach() * mb.mask, mb.old_logps * mb.mask)
    torch.testing.assert_close(mb.old_values, ro.old_values[:, : mb.logps.shape[1]].to(mb.values))
    assert not torch.allclose(mb.values.detach() * mb.mask, mb.old_values * mb.mask)


def _ppo_expected_grads(trainer, ro: Rollout, p: dict) -> list[torch.Tensor]:
    """The step's gradient computed directly: one forward of policy and value model over every sample,
    PPO's three terms written out, and one token mean over the whole step."""
    s = ro.samples
    batch = sequence_batch(s.prompt_ids, s.completion_ids, trainer.pad_id)
    out = trainer.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, output_hidden_states=True)
    start, width = batch.prompt_width - 1, batch.completion_mask.shape[1]
    logits = out.logits[:, start: start + width]
    logp_all = torch.log_softmax(logits, -1)
    logps = logp_all.gather(-1, batch.input_ids[:, start + 1: start + 1 + width, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    values = trainer.critic.values(batch, out)
    mask = batch.completion_mask.double()
    old = torch.stack([torch.cat([o.double(), torch.zeros(width - len(o), dtype=torch.float64)]) for o in ro.old_logps])
    adv, old_v, ret = ro.advantages[:, :width], ro.old_values[:, :width], ro.returns[:, :width]
    ratio = torch.exp(logps - old)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - p["cliprange"], 1 + p["cliprange"]))
    v_clip = old_v + (values - old_v).clamp(-p["cliprange_value"], p["cliprange_value"])
    vf = 0.5 * torch.maximum((values - ret) ** 2, (v_clip - ret) ** 2)
    loss = ((pg + p["vf_coef"] * vf - p["ent_coef"] * entropy) * mask).sum() / mask.sum()
    for param in trainer.trainable:
        param.grad = None
    loss.backward()
    grads = [param.grad.clone() for param in trainer.trainable]
    for param in trainer.trainable:
        param.grad = None
    return grads


@pytest.mark.parametrize("value_model", ["separate", "shared_head"])
def test_ppo_grad_accumulation_over_uneven_micro_batches_equals_one_big_step(micro, value_model):
    """8 samples of different lengths as micro-batches of 3, 3 and 2 give the gradient (policy and value
    model) of the whole step computed directly; old log-probs and values moved off the current ones
    so that both clips are live on some tokens and not on others."""
    path, tok = micro
    prompts = _prompts(tok, n=8)
    p = {"value_model": value_model, "ent_coef": 0.01, "vf_coef": 0.5}
    expected = None
    for grad_accum in (1, 3):
        trainer = _ppo_trainer(path, tok, prompts, grad_accum, **p)
        ro, _ = trainer.rollout(1, list(range(8)))
        if expected is None:
            gen = torch.Generator().manual_seed(0)
            s = ro.samples
            samples = _cut(s, [1 + (5 * i + 5) % len(c) for i, c in enumerate(s.completion_ids)])
            ro, _ = trainer.build_rollout(samples, [prompts.rows[i] for i in range(8)])
            assert len({len(c) for c in ro.samples.completion_ids}) > 1, "lengths must differ"
            ro.old_logps = [o + 0.3 * torch.randn(len(o), generator=gen) for o in ro.old_logps]
            ro.old_values = ro.old_values + 0.3 * torch.randn(ro.old_values.shape, generator=gen, dtype=torch.float64)
            ro.returns = ro.returns + torch.randn(ro.returns.shape, generator=gen, dtype=torch.float64)
            fixed = ro
            expected = _ppo_expected_grads(trainer, fixed, {**trainer.params})
        trainer._train_mode(True)
        trainer.optimizer_step(fixed, list(range(8)), want_logs=True)
        got = [param.grad for param in trainer.trainable]
        assert len(got) == len(expected) and sum(float(g.abs().sum()) for g in got[-2:]) > 0
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)


def test_gradient_checkpointing_covers_the_separate_value_model_and_keeps_every_gradient(micro):
    """train.gradient_checkpointing switches checkpointing on in PPO's separate value model too (a full LM of
    its own), and the step's gradients, policy and value model, equal those computed without it (float64)."""
    path, tok = micro
    prompts = _prompts(tok, n=4)
    grads = []
    for checkpointing in (False, True):
        trainer = _ppo_trainer(path, tok, prompts, checkpointing=checkpointing, value_model="separate", vf_coef=0.5)
        assert trainer.critic.model.is_activation_checkpointing is checkpointing
        assert trainer.model.is_activation_checkpointing is checkpointing
        ro, _ = trainer.rollout(1, list(range(4)))
        ro.returns = ro.returns + 1.0  # a value target away from the values: the value loss has a gradient
        trainer._train_mode(True)
        trainer.optimizer_step(ro, list(range(4)), want_logs=False)
        grads.append([param.grad.clone() for param in trainer.trainable])
    assert sum(float(g.abs().sum()) for g in grads[0][-2:]) > 0  # the value head learns
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-10, atol=1e-13)


def test_a_value_model_that_cannot_take_the_lora_rank_is_named(micro):
    path, _ = micro
    with pytest.raises(HarnessError, match=r"lora.rank: 100000 is more than the hidden size \d+ of the value model"):
        check_value_lora("separate", path, LoraSpec(rank=100000))
    check_value_lora("shared_head", path, LoraSpec(rank=100000))  # the head is trained in full


def test_under_lora_a_separate_value_model_trains_its_own_adapter_and_head_only(micro):
    path, tok = micro
    policy = load_model(path, torch.float32)
    critic = build_value_model("separate", path, policy, tok.pad_token_id, torch.float32, LoraSpec(rank=4), 0)
    trained = [n for n, p in critic.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n or "score" in n for n in trained)
    assert any("score" in n for n in trained)


def test_spin_pairs_end_at_eos_and_a_sample_equal_to_the_data_response_ties(micro):
    """The data response stops at its EOS, as a sampled completion does (ChatML's newline after the
    end-of-turn token is never sampled), so a policy that reproduces it exactly makes a tie."""
    from harness.train.rewards import DataResponseReward
    from harness.train.rollout import with_data_responses

    _, tok = micro
    rows = take_fraction(load_rows("toy://arith-sft", "sft"), 0.002, 0)[:2]
    prompts = encode_prompts(tok, rows, 64, None, "keep_end_of_prompt", 8, with_responses=True)
    assert all(r[-1] == tok.eos_token_id and r.count(tok.eos_token_id) == 1 for r in prompts.responses)
    assert prompts.stats["data/prefix_mismatch"] == 0
    sampled = Samples([0, 1], prompts.ids, [list(prompts.responses[0]), [tok.eos_token_id]], ["", ""], [False, False])
    pairs = with_data_responses(sampled, prompts.responses, tok)
    rewards = DataResponseReward(prompts).score([prompts.rows[i] for i in pairs.prompt_index], None,
                                                pairs.completion_ids, pairs.texts)
    assert pair_preferences(rewards).tolist() == [0.0, 0.0, -1.0, 1.0]  # a tie, then the data's response chosen


def test_a_reward_model_scores_a_finished_chat_completion_as_it_was_trained(micro, tmp_path):
    """An rm stage trains on ChatML responses that end with the end-of-turn token and its newline; a
    sampled completion stops at the end-of-turn token, so the newline is put back before scoring."""
    from harness.train.reward_model import load_reward_model, score_responses
    from harness.train.rewards import ModelReward, end_of_turn_suffix

    path, tok = micro
    rm = load_reward_model(path, tok.pad_token_id, pooling="last")
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    assert [tok.decode([i]) for i in end_of_turn_suffix(tok)] == ["\n"]
    reward = ModelReward(str(tmp_path / "rm"), tok, "method.reward.model")
    chat = Row("p", 1, {"prompt": [{"role": "user", "content": "What is 2+2?"}]})
    text = Row("p", 2, {"prompt": "What is 2+2?"})
    prompt, done, cut = [5, 6, 7], [23, tok.eos_token_id], [23, 24]
    got = reward.score([chat, chat, text], [prompt] * 3, [done, cut, done], None)
    want = score_responses(reward.model, [prompt] * 3, [done + end_of_turn_suffix(tok), cut, done], tok.pad_token_id,
                           reward.model.device)
    torch.testing.assert_close(got, want)
    assert got[0] != score_responses(reward.model, [prompt], [done], tok.pad_token_id, reward.model.device)[0]


def test_the_schedule_spans_the_steps_that_run_when_minibatches_outnumber_the_pairs(micro):
    """online-dpo with 2 prompts (2 pairs) and minibatches 16 runs 2 steps a rollout; a cosine schedule
    sized for those steps ends at 0 (sized for 16 it would end near the peak)."""
    path, tok = micro
    method = METHODS["online-dpo"]
    params = {**method.params, "max_new_tokens": 4, "reward": {"verifier": "arith"}, "minibatches": 16}
    cfg = TrainConfig(lr=1e-3, batch_size=2, max_steps=2, shuffle=False, scheduler="cosine", warmup_ratio=0.0)
    trainer = OnlineTrainer(load_model(path), tok, method, params, _prompts(tok, n=2), cfg, VerifierReward("arith"),
                            load_model(path).eval(), Callbacks(progress=False))
    trainer.train()
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
