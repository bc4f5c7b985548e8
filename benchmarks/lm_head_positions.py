"""The LM head at response positions only (``logits_to_keep``) against every position, in one process.

Usage:  python benchmarks/lm_head_positions.py [--shape bench|qwen0.5b] [--batch 16] [--batches 4] [--repeats 2]

A DPO pair's loss needs the logits only where a response token is predicted: the prompt's last position
and the responses' positions but their last.  ``harness.train.forward.pair_logps`` passes those columns
as ``logits_to_keep``, so the LM head and its log-softmax skip the prompt.  This times a forward and a
backward through the pair log-probs (sum + mean, as DPO's loss uses them) with the head at those columns
and at every column (``every_position=True``, what ORPO's ``nll_on_prompt`` needs), interleaved, in both
``train.pair_forward`` layouts, on toy://arith-pairs (prompts ~16 tokens, responses ~5).  Shapes:

- ``bench``: the DPO benchmark's model (benchmarks/world.py: d=256, 4 layers, the toy vocabulary of 384);
- ``qwen0.5b``: Qwen2.5-0.5B's shape (d=896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary 151,936,
  tied embeddings), random weights: where the LM head is a large share of the model.

Prints one JSON report: LM-head columns per step (kept / all), seconds per mode and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from world import build_world  # benchmarks/world.py, beside this script

from harness.data.load import load_rows
from harness.data.tokenization import encode_pairs
from harness.methods import reduce_logps
from harness.train.forward import pair_logps
from harness.train.models import load_model, load_tokenizer

SHAPES = {
    "bench": {"hidden": 256, "layers": 4, "config": {}},
    "qwen0.5b": {"hidden": 896, "layers": 24,
                 "config": {"intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2,
                            "vocab_size": 151936, "tie_word_embeddings": True}},
}
MODES = {"response positions": False, "every position": True}


def step(model, batch: list, pad_id: int, layout: str, every: bool) -> tuple[float, int]:
    """Seconds for one forward + backward, and the LM-head columns it ran."""
    start = time.perf_counter()
    out = pair_logps(model, batch, pad_id, "cpu", layout, every_position=every)
    (out.sums.sum() + reduce_logps(out.sums, out.counts, "mean").sum()).backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed, out.logits.shape[0] * out.logits.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="bench")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    rows = args.batch * args.batches
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = build_world(Path(tmp), shape["hidden"], shape["layers"], "toy://arith-pairs", "pairs",
                                      rows, **shape["config"])
        tok = load_tokenizer(model_dir)
        model = load_model(model_dir).train()
        examples = encode_pairs(tok, load_rows(data, "pairs"), 128)[0]
    batches = [examples[s : s + args.batch] for s in range(0, len(examples), args.batch)]
    report: dict = {"shape": args.shape, "params": sum(p.numel() for p in model.parameters()),
                    "threads": torch.get_num_threads(), "batch": args.batch, "batches": len(batches),
                    "repeats": args.repeats}
    for layout in ("shared_prompt", "padded"):
        step(model, batches[0], tok.pad_token_id, layout, False)  # warm-up, untimed
        seconds, columns = dict.fromkeys(MODES, 0.0), dict.fromkeys(MODES, 0)
        for rep in range(args.repeats):
            for i, batch in enumerate(batches):
                order = list(MODES) if (rep + i) % 2 == 0 else list(MODES)[::-1]
                for mode in order:
                    s, c = step(model, batch, tok.pad_token_id, layout, MODES[mode])
                    seconds[mode] += s
                    columns[mode] += c
        steps = args.repeats * len(batches)
        report[layout] = {"head_positions_per_step": {m: c / steps for m, c in columns.items()},
                          "seconds": seconds,
                          "time_ratio_response_over_every": seconds["response positions"] / seconds["every position"]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
