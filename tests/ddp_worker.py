"""Worker for test_train.py's two-process check: two optimizer steps, saved parameters and logged metrics.

Run as ``python -m torch.distributed.run --nproc_per_node N tests/ddp_worker.py MODEL_DIR OUT_DIR METHOD[,METHOD...]``;
accelerate picks up the process group (gloo on CPU) from the environment; each METHOD's results go to
OUT_DIR/METHOD.pt.  METHOD is ``sft``,
``kto`` (the step-wide KL estimate from the mismatched pairs of all micro-batches), ``iw-sft``
(weights self-normalized over the whole step), ``rm`` (a reward model with a fresh scalar head and
per-pair margins) or ``rm-lora`` (the same under a rank-4 LoRA adapter).
"""

import sys

import torch

from harness.data.load import load_rows, pairs_to_kto, take_fraction
from harness.data.tokenization import encode_kto, encode_pairs, encode_sft
from harness.methods.registry import METHODS
from harness.train.forward import kl_pair_logps
from harness.train.inputs import ExampleSet
from harness.train.loop import Callbacks, TrainConfig, train
from harness.train.models import attach_lora, load_model, load_tokenizer
from harness.train.reference import plan_kl_pairs
from harness.train.reward_model import load_reward_model

# Distinct IW-SFT weights for the 7 examples, so self-normalization over a shard would show.
IW_WEIGHTS = [0.5, 2.0, 1.0, 4.0, 0.25, 1.5, 3.0]
# Distinct RM margins, so a margin sliced for the wrong examples would show.
RM_MARGINS = [0.0, 0.5, -0.25, 1.0, 0.0, 2.0, -1.0]


def kto_inputs(model_dir: str, tok, cfg: TrainConfig) -> tuple[list, dict]:
    """7 KTO rows (from correctness pairs) and the loop's reference inputs from a perturbed reference model."""
    rows = pairs_to_kto(take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.005, 0)[:4])[:7]
    examples, _ = encode_kto(tok, rows, 64)
    ref_model = load_model(model_dir, torch.float64).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a reference unlike the policy, so log-ratios and the KL estimate are not 0
        for p in ref_model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    own = kl_pair_logps(ref_model, examples, [(i, i) for i in range(len(examples))], tok.pad_token_id, "cpu")
    pairs = plan_kl_pairs(len(examples), cfg)
    kl_ref = dict(zip(pairs, kl_pair_logps(ref_model, examples, pairs, tok.pad_token_id, "cpu").tolist()))
    return examples, {"ref": own, "kl_ref": kl_ref}


def rm_model(model_dir: str, tok, lora: bool):
    """A float64 reward model with a seeded new head (and a seeded rank-4 adapter with ``lora``)."""
    torch.manual_seed(0)
    model = load_reward_model(model_dir, tok.pad_token_id, torch.float64, "last")
    return attach_lora(model, 4, None, 0.0, "all-linear", "SEQ_CLS") if lora else model


def main(model_dir: str, out_dir: str, methods: str = "sft") -> None:
    """Each of the comma-separated ``methods`` in turn (one launch pays the start-up once), to OUT_DIR/METHOD.pt."""
    for method in methods.split(","):
        run(model_dir, f"{out_dir}/{method}.pt", method)


def run(model_dir: str, out: str, method: str) -> None:
    tok = load_tokenizer(model_dir)
    cfg = TrainConfig(lr=1e-2, batch_size=3, grad_accum=3, max_steps=2, shuffle=False, scheduler="constant",
                      warmup_ratio=0.0, max_grad_norm=1e9, log_every=1)
    extra = {}
    model = None
    if method == "kto":
        examples, extra = kto_inputs(model_dir, tok, cfg)
    elif method.startswith("rm"):
        rows = take_fraction(load_rows("toy://arith-pairs", "pairs"), 0.005, 0)[:7]
        examples, _ = encode_pairs(tok, rows, 64)
        extra = {"margins": torch.tensor(RM_MARGINS, dtype=torch.float64)}
        model, method = rm_model(model_dir, tok, method == "rm-lora"), "rm"
    else:
        rows = take_fraction(load_rows("toy://arith-sft", "sft"), 0.005, 0)[:7]
        examples, _ = encode_sft(tok, rows, 64)
        if method == "iw-sft":
            extra = {"log_weights": torch.tensor(IW_WEIGHTS, dtype=torch.float64).log()}
    assert len(examples) == 7
    model = model if model is not None else load_model(model_dir, torch.float64)
    logged = []
    data = ExampleSet(examples, tok.pad_token_id, **extra)
    result = train(model, METHODS[method], dict(METHODS[method].params), data, cfg,
                   Callbacks(log=lambda metrics, step: logged.append((step, metrics)), progress=False))
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    from accelerate import PartialState

    torch.save({"params": [p.detach().cpu() for p in model.parameters()], "loss": result.last_metrics["loss"],
                "logged": logged, "world": PartialState().num_processes}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
