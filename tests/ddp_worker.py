"""Worker for test_train.py's two-process check: one optimizer step, saved parameters.

Run as ``python -m torch.distributed.run --nproc_per_node N tests/ddp_worker.py MODEL_DIR OUT``;
accelerate picks up the process group (gloo on CPU) from the environment.
"""

import sys

import torch

from harness.data import load_rows, take_fraction
from harness.methods import METHODS
from harness.models import load_model, load_tokenizer
from harness.tokenization import encode_sft
from harness.train import TrainConfig, train


def main(model_dir: str, out: str) -> None:
    tok = load_tokenizer(model_dir)
    rows = take_fraction(load_rows("toy://arith-sft", "sft"), 0.005, 0)[:7]
    examples, _ = encode_sft(tok, rows, 64)
    model = load_model(model_dir, torch.float64)
    cfg = TrainConfig(lr=1e-2, batch_size=3, grad_accum=3, max_steps=2, shuffle=False, scheduler="constant",
                      warmup_ratio=0.0, max_grad_norm=1e9)
    result = train(model, METHODS["sft"], dict(METHODS["sft"].params), examples, tok.pad_token_id, cfg,
                   progress=False)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    torch.save({"params": [p.detach().cpu() for p in model.parameters()], "loss": result.last_metrics["loss"]}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
