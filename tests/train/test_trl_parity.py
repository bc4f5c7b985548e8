"""First-batch losses and reward metrics against the pinned TRL 1.16 trainers (DPO, CPO, Reward, GRPO).

The same rows, the same tiny model (toy://micro) and the same reference model
(a perturbed copy, so margins are not 0) go through TRL's DPOTrainer /
CPOTrainer ``compute_loss`` and through harness's tokenization, collation,
``reference_stats`` and ``forward_method``.  Everything is float32 on CPU; the
whole first batch is one step, so the batch order TRL's sampler picks does not
matter for the means compared here.

Deliberate differences, documented rather than hidden:
- DPOTrainer logs rewards and logps from *summed* log-probs even for
  ``sigmoid_norm`` and ``ipo``, whose losses use token means.  Harness logs the
  reduced log-probs its loss sees, so for those two the reward metrics are
  compared with harness's same method at ``logprob_reduction: sum`` (which is
  exactly what TRL logs); the losses are compared at the default (mean).
- GRPO is compared on its loss alone (``GRPOTrainer._compute_loss`` on a fixed rollout batch, see
  ``test_grpo_loss_parity``): generation, rewards and advantages are inputs there, not computed.
- ORPO: harness's NLL covers the response (TRL's ORPOTrainer, like the original
  code, includes the prompt; ``method.nll_on_prompt: true``), so ORPO is not
  compared here; its loss is tested against numpy in test_losses_pairs.py.
"""

from __future__ import annotations

import json
import tempfile

import pytest
import torch

from harness.data.load import load_rows
from harness.data.tokenization import encode_pairs
from harness.methods import grpo_denominator, grpo_numerators, grpo_token_losses, token_logps
from harness.methods.registry import METHODS
from harness.toy import toy_model_path
from harness.train.forward import reference_stats
from harness.train.inputs import BatchInputs
from harness.train.kinds import forward_method
from harness.train.models import load_model, load_tokenizer

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

SUMS = [(1, 2), (13, 4), (22, 35), (7, 8), (40, 9)]
REL = 1e-5


def _chat_rows():
    def msg(role, text):
        return [{"role": role, "content": text}]

    return [{"prompt": msg("user", f"What is {a}+{b}?"), "chosen": msg("assistant", str(a + b)),
             "rejected": msg("assistant", str(a + b + 1))} for a, b in SUMS]


def _string_rows():
    return [{"prompt": f"Q: {a}+{b}=", "chosen": f" {a + b}", "rejected": f" {a + b - 1}"} for a, b in SUMS]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = str(toy_model_path("micro", tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    ref = load_model(path)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return path, tok, ref


def _harness(world, rows, name, params, tmp_path):
    path, tok, ref_model = world
    file = tmp_path / f"{name}.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = encode_pairs(tok, load_rows(str(file), "pairs"), 512)
    policy = load_model(path).eval()
    ref = reference_stats(ref_model.eval(), examples, tok.pad_token_id, "cpu") if METHODS[name].needs_ref else None
    params = {**METHODS[name].params, **params}
    with torch.no_grad():
        numerators, metrics, _ = forward_method(policy, METHODS[name], params, examples, tok.pad_token_id, "cpu",
                                                BatchInputs(ref=ref))
    return float(numerators.mean()), {k: float(v) for k, v in metrics.items()}


def _trl_dpo(world, rows, loss_type, beta, label_smoothing=0.0):
    path, tok, ref_model = world
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(rows), loss_type=[loss_type],
                         beta=beta, label_smoothing=label_smoothing, report_to=[], use_cpu=True, bf16=False,
                         max_length=None, seed=0)
    trainer = trl.DPOTrainer(model=load_model(path), ref_model=ref_model, args=args,
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, batch))
    return loss, {k: v[-1] for k, v in trainer._metrics["eval"].items()}


def _assert_rewards(ours, theirs):
    pairs = {"rewards/chosen": "rewards/chosen", "rewards/rejected": "rewards/rejected",
             "rewards/margin": "rewards/margins", "rewards/accuracy": "rewards/accuracies",
             "logps/chosen": "logps/chosen", "logps/rejected": "logps/rejected"}
    for mine, trls in pairs.items():
        assert ours[mine] == pytest.approx(theirs[trls], rel=REL, abs=1e-7), mine


CASES = [  # (TRL loss_type, harness method, harness params for the loss, for the metrics)
    ("sigmoid", "dpo", {}, {}),
    ("sigmoid_norm", "dpo", {"logprob_reduction": "mean"}, {"logprob_reduction": "sum"}),
    ("ipo", "ipo", {}, {"logprob_reduction": "sum"}),
    ("hinge", "hinge", {}, {}),
    ("robust", "robust", {"label_smoothing": 0.2}, {"label_smoothing": 0.2}),
]


# Plain strings for every loss type; chat-template rows once (tokenization parity is test_tokenization's).
PARAMS = [(c, _string_rows) for c in CASES] + [(CASES[0], _chat_rows)]


@pytest.mark.parametrize(("case", "rows"), PARAMS, ids=[c[0] + "-" + r.__name__.strip("_") for c, r in PARAMS])
def test_dpo_trainer_parity(world, case, rows, tmp_path):
    loss_type, name, loss_params, metric_params = case
    beta = 0.5
    theirs_loss, theirs = _trl_dpo(world, rows(), loss_type, beta, loss_params.get("label_smoothing", 0.0))
    ours_loss, _ = _harness(world, rows(), name, {"beta": beta, **loss_params}, tmp_path)
    _, ours = _harness(world, rows(), name, {"beta": beta, **metric_params}, tmp_path)
    assert ours_loss == pytest.approx(theirs_loss, rel=REL)
    _assert_rewards(ours, theirs)
    assert abs(theirs["rewards/margins"]) > 0.05  # the reference really differs from the policy


def test_cpo_trainer_simpo_parity(world, tmp_path):
    """CPOTrainer loss_type simpo, cpo_alpha 0 (pure SimPO) on plain-string pairs."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    path, tok, _ = world
    beta, gamma = 2.0, 0.7
    args = CPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(SUMS), loss_type="simpo",
                     cpo_alpha=0.0, simpo_gamma=gamma, beta=beta, report_to=[], use_cpu=True, bf16=False,
                     max_length=512, seed=0, remove_unused_columns=False)
    trainer = CPOTrainer(model=load_model(path), args=args, train_dataset=datasets.Dataset.from_list(_string_rows()),
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        theirs_loss = float(trainer.compute_loss(trainer.model, batch))
    theirs = {k: v[-1] for k, v in trainer._stored_metrics["train"].items()}
    ours_loss, ours = _harness(world, _string_rows(), "simpo", {"beta": beta, "gamma": gamma}, tmp_path)
    assert ours_loss == pytest.approx(theirs_loss, rel=REL)
    _assert_rewards(ours, theirs)


def test_reward_trainer_parity(world, tmp_path):
    """RewardTrainer's first-batch loss (margin field, centering) and accuracy/margin vs harness's rm."""
    from harness.train.reward_model import load_reward_model

    path, tok, _ = world
    torch.manual_seed(3)
    rm = load_reward_model(path, tok.pad_token_id)
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rows = [{**r, "margin": 0.1 * i} for i, r in enumerate(_chat_rows())]
    args = trl.RewardConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(rows), report_to=[],
                            use_cpu=True, bf16=False, center_rewards_coefficient=0.05, seed=0, max_length=512)
    trainer = trl.RewardTrainer(model=load_reward_model(str(tmp_path / "rm"), tok.pad_token_id), args=args,
                                train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" in batch
    trainer.model.eval()
    with torch.no_grad():
        theirs_loss = float(trainer.compute_loss(trainer.model, batch))
    theirs = {k: v[-1] for k, v in trainer._metrics["eval"].items()}

    file = tmp_path / "rm.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = encode_pairs(tok, load_rows(str(file), "pairs"), 512)
    ours_model = load_reward_model(str(tmp_path / "rm"), tok.pad_token_id).eval()
    params = {**METHODS["rm"].params, "center_rewards_coefficient": 0.05}
    margin = torch.tensor([r["margin"] for r in rows], dtype=torch.float64)
    with torch.no_grad():
        numerators, ours, _ = forward_method(ours_model, METHODS["rm"], params, examples, tok.pad_token_id, "cpu",
                                             BatchInputs(margins=margin))
    # TRL centers on the batch mean of (r_c + r_r)^2 and averages the log-sigmoid term: the same mean.
    assert float(numerators.mean()) == pytest.approx(theirs_loss, rel=REL)
    assert float(ours["rewards/accuracy"]) == pytest.approx(theirs["accuracy"], rel=REL)
    assert float(ours["rewards/margin"]) == pytest.approx(theirs["margin"], rel=REL, abs=1e-7)
    assert float(ours["rewards/mean"]) == pytest.approx(theirs["mean_reward"], rel=REL, abs=1e-7)


def test_conservative_dpo_is_not_trl_sigmoid(world, tmp_path):
    """A deliberate difference (README): TRL 1.16's ``sigmoid`` loss ignores ``label_smoothing``.

    TRL applies ε only to ``robust`` and ``exo_pair``, so DPOTrainer(sigmoid, ε=0.2) gives plain DPO,
    -mean log σ(z); harness's ``dpo`` at ε=0.2 is conservative DPO, mean(-(1-ε) log σ(z) - ε log σ(-z)).
    Both sides are checked against the formula on harness's margins, z = β·h (rewards/margin = mean z).
    """
    beta, eps = 0.5, 0.2
    theirs_smoothed, _ = _trl_dpo(world, _string_rows(), "sigmoid", beta, eps)
    theirs_plain, _ = _trl_dpo(world, _string_rows(), "sigmoid", beta, 0.0)
    ours_plain, _ = _harness(world, _string_rows(), "dpo", {"beta": beta}, tmp_path)
    ours_smoothed, _ = _harness(world, _string_rows(), "dpo", {"beta": beta, "label_smoothing": eps}, tmp_path)
    assert theirs_smoothed == pytest.approx(theirs_plain, rel=1e-7)  # TRL ignores ε for sigmoid
    assert ours_plain == pytest.approx(theirs_plain, rel=REL)
    # -(1-ε) log σ(z) - ε log σ(-z) = -log σ(z) + ε z for every z, so the means differ by ε · mean(z).
    _, ours = _harness(world, _string_rows(), "dpo", {"beta": beta}, tmp_path)
    assert ours_smoothed == pytest.approx(ours_plain + eps * ours["rewards/margin"], rel=REL)
    assert abs(ours_smoothed - theirs_smoothed) > 0.01


def _uneven_rows():
    """Chosen answers of 1 to 30 characters, so per-example and batch token means differ."""
    return [{"prompt": f"Q: {a}+{b}=", "chosen": f" {a + b}" * (1 + 7 * i), "rejected": f" {a + b - 1}"}
            for i, (a, b) in enumerate(SUMS)]


def test_orpo_nll_reduction_differs_from_trl(world, tmp_path):
    """A deliberate difference (README): ORPO's NLL reduction.

    TRL's ORPOTrainer (like the original code) takes one token mean of the chosen NLL over the whole
    batch, prompt included; harness takes each example's token mean and averages over examples
    (``nll_on_prompt: true``).  The odds-ratio term is the same, so the losses differ by exactly the
    NLL terms, and TRL's is checked against a batch token mean computed here from the model's logits.
    """
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    path, tok, _ = world
    beta = 0.1
    rows = _uneven_rows()
    args = ORPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(rows), beta=beta,
                      report_to=[], use_cpu=True, bf16=False, max_length=512, seed=0, remove_unused_columns=False)
    trainer = ORPOTrainer(model=load_model(path), args=args, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        theirs_loss = float(trainer.compute_loss(trainer.model, batch))
    theirs_nll = trainer._stored_metrics["train"]["nll_loss"][-1]
    ours_loss, ours = _harness(world, rows, "orpo", {"beta": beta, "nll_on_prompt": True}, tmp_path)

    file = tmp_path / "uneven.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = encode_pairs(tok, load_rows(str(file), "pairs"), 512)
    model = load_model(path).eval()
    token_nlls, per_example = [], []
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex.prompt_ids + ex.chosen_ids])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            nll = -logp.gather(-1, ids[0, 1:, None])[:, 0]
            token_nlls.append(nll)
            per_example.append(float(nll.mean()))
    batch_mean = float(torch.cat(token_nlls).mean())
    example_mean = sum(per_example) / len(per_example)
    assert theirs_nll == pytest.approx(batch_mean, rel=REL)
    assert ours["nll"] == pytest.approx(example_mean, rel=REL)
    assert ours_loss - ours["nll"] == pytest.approx(theirs_loss - theirs_nll, rel=REL, abs=1e-6)
    assert abs(batch_mean - example_mean) > 1e-3


def test_default_learning_rates_against_trl():
    """registry's lr defaults: TRL 1.16's for SFT and the preference family; rm's 1e-5 is a documented
    difference from RewardConfig's 1e-4 (README, "Deliberate differences")."""
    from pathlib import Path

    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    from harness.methods.registry import PREFERENCE_LR, RM_LR, SFT_LR

    assert SFT_LR == trl.SFTConfig.learning_rate
    for config in (trl.DPOConfig, trl.KTOConfig, CPOConfig, ORPOConfig):
        assert PREFERENCE_LR == config.learning_rate, config.__name__
    assert (RM_LR, trl.RewardConfig.learning_rate) == (1e-5, 1e-4)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "RewardConfig's 1e-4" in readme


GRPO_COMPLETIONS = [" 3", " 17 and more", " 57 57 57", " 15!", " 9", " 81 81"]


def _grpo_rollout(tok):
    """A fixed rollout batch as TRL stores it: prompts left-padded, completions (+ EOS) right-padded, ragged."""
    prompts = [tok(f"Q: {a}+{b}=")["input_ids"] for a, b in SUMS] + [tok("Q: 4+5=")["input_ids"]]
    completions = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in GRPO_COMPLETIONS]
    p_len, c_len = max(map(len, prompts)), max(map(len, completions))
    pad = tok.pad_token_id
    return {
        "prompt_ids": torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts]),
        "prompt_mask": torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts]),
        "completion_ids": torch.tensor([c + [pad] * (c_len - len(c)) for c in completions]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (c_len - len(c)) for c in completions]),
    }


@pytest.fixture(scope="module")
def grpo_batch(world):
    """The rollout, harness's policy log-probs of its completions (float64, from the model's logits), and
    stored old and reference log-probs (the policy's, perturbed, so ratios leave the clip range and k3 > 0)."""
    path, tok, _ = world
    batch = _grpo_rollout(tok)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logits = load_model(path).eval()(input_ids=ids, attention_mask=attention).logits.double()
    # Column t of token_logps predicts token t + 1: the completion's columns start at the prompt width - 1.
    logps = token_logps(logits, ids)[:, batch["prompt_ids"].shape[1] - 1:]
    g = torch.Generator().manual_seed(0)
    old = (logps + 0.5 * torch.randn(logps.shape, generator=g, dtype=torch.float64)).float()
    ref = (logps + 0.5 * torch.randn(logps.shape, generator=g, dtype=torch.float64)).float()
    advantages = torch.tensor([1.0, 0.5, 0.7, -0.2, -1.3, 0.4])
    return batch, logps, old, ref, advantages


GRPO_MAX_COMPLETION = 16


def _trl_grpo_loss(world, batch, old, ref, advantages, loss_type, beta):
    """TRL 1.16 GRPOTrainer._compute_loss on the stored rollout (eval mode: one batch, no accumulation)."""
    path, tok, _ = world
    args = trl.GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(advantages),
                          num_generations=2, loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28,
                          max_completion_length=GRPO_MAX_COMPLETION, report_to=[], use_cpu=True, bf16=False, seed=0)
    trainer = trl.GRPOTrainer(model=load_model(path), reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=args, train_dataset=datasets.Dataset.from_list([{"prompt": "Q: 1+2="}] * 2),
                              processing_class=tok)
    trainer.model.eval()
    inputs = {**batch, "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": batch["completion_mask"].sum()}
    with torch.no_grad():
        loss = float(trainer._compute_loss(trainer.model, inputs))
    return loss, {k: v[-1] for k, v in trainer._metrics["eval"].items()}


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_parity(world, grpo_batch, loss_type, beta):
    """harness's grpo_token_losses + grpo_numerators / grpo_denominator over one batch vs TRL's _compute_loss.

    What is compared: TRL computes its policy log-probs with its own forward (fused LM head, float32) from
    prompt_ids/completion_ids; harness's come from the same weights through ``token_logps`` (float64).  The
    stored old and reference log-probs, advantages and masks are the same tensors.  Loss, clip ratios and
    the kl metric must agree to 1e-5 relative.  TRL weights its k3 term by the ratio (use_bias_correction_kl,
    its default), and so does harness: without that weight the beta > 0 losses differ (checked).
    """
    batch, logps, old, ref, advantages = grpo_batch
    theirs, metrics = _trl_grpo_loss(world, batch, old, ref, advantages, loss_type, beta)
    mask = batch["completion_mask"].double()

    def ours(**kw):
        token_losses, ours_metrics = grpo_token_losses(logps, old.double(), ref.double(), advantages.double(), mask,
                                                       0.2, 0.28, beta, **kw)
        denominator = grpo_denominator([mask], loss_type, GRPO_MAX_COMPLETION)
        return float(grpo_numerators(token_losses, mask, loss_type).sum() / denominator), ours_metrics

    loss, ours_metrics = ours()
    assert loss == pytest.approx(theirs, rel=REL)
    assert abs(theirs) > 0.01
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean") + (("kl",) if beta else ()):
        assert float(ours_metrics[key]) == pytest.approx(metrics[key], rel=REL, abs=1e-7), key
    assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0
    if beta:
        uncorrected, _ = ours(kl_ratio_correction=False)
        assert abs(uncorrected - theirs) > 1e-4 * abs(theirs)
