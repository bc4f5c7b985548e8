"""train.pair_forward: tokens per step and forward+backward time, padded vs shared_prompt, in one process.

The DPO benchmark's world (benchmarks/world.py: a random Llama with the toy tokenizer, toy://arith-pairs):
every micro-batch of the epoch is counted in both layouts (positions the model runs, padding among them);
then a sample of micro-batches is timed forward+backward through the DPO loss, the two layouts interleaved
(padded, shared, shared, padded, ...) so machine noise hits both alike, and the time ratio is reported.

    PYTHONPATH=. python benchmarks/pair_forward.py --pairs 768 --batch 16
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from world import add_pair_world_args, build_world  # benchmarks/world.py, beside this script

from harness.data.collate import collate_pairs
from harness.data.load import load_rows
from harness.data.packing import pack_pairs
from harness.data.tokenization import encode_pairs
from harness.methods.registry import METHODS
from harness.train.inputs import BatchInputs
from harness.train.kinds import forward_method
from harness.train.models import load_model, load_tokenizer

LAYOUTS = ("padded", "shared_prompt")


def counts(batch: list, pad_id: int) -> dict[str, dict[str, int]]:
    """Positions the model runs and padding among them, per layout, for one micro-batch."""
    padded = collate_pairs(batch, pad_id)["attention_mask"]
    segments = pack_pairs(batch, pad_id)["segments"]
    return {"padded": {"computed": padded.numel(), "pad": int((padded == 0).sum())},
            "shared_prompt": {"computed": segments.numel(), "pad": int((segments < 0).sum())}}


def time_step(model, batch: list, ref: torch.Tensor, pad_id: int, layout: str) -> float:
    method = METHODS["dpo"]
    params = {**method.params, "pair_forward": layout}
    start = time.perf_counter()
    losses, _, _ = forward_method(model, method, params, batch, pad_id, "cpu", BatchInputs(ref=ref))
    losses.sum().backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def train_epoch(model_dir: str, data: str, args, layout: str) -> float:
    """Seconds for one DPO epoch through ``train_stage`` (tokenization, reference pass, training)."""
    from harness.config.grid import resolve_stages
    from harness.config.spec import validate_spec
    from harness.train.stages import train_stage

    spec = validate_spec({
        "name": "bench", "model": model_dir, "method": {"name": "dpo", "beta": 0.1},
        "data": {"train": data, "filter": {"drop_identical_pairs": False}},
        "train": {"batch_size": args.batch, "epochs": 1, "lr": 1e-5, "scheduler": "constant", "warmup_ratio": 0.0,
                  "max_length": args.max_length, "log_every": 10**6, "save": "none", "pair_forward": layout},
    })
    (stage,) = resolve_stages(spec)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        train_stage(stage, model_dir, "bench-model", Path(cache), lambda metrics, step: None, True, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_world_args(parser)
    parser.add_argument("--timed-batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs-timed", type=int, default=0,
                        help="also time this many whole DPO epochs (train_stage) per layout, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = build_world(Path(tmp), args.hidden, args.layers, "toy://arith-pairs", "pairs", args.pairs)
        tok = load_tokenizer(model_dir)
        model = load_model(model_dir).train()
        examples = encode_pairs(tok, load_rows(data, "pairs"), args.max_length)[0]
        epoch_s = dict.fromkeys(LAYOUTS, 0.0)
        if args.epochs_timed:  # warm-up, untimed: the first stage in a process pays one-time costs
            train_epoch(model_dir, data, args, "padded")
        for run in range(args.epochs_timed):
            for layout in LAYOUTS if run % 2 == 0 else LAYOUTS[::-1]:
                epoch_s[layout] += train_epoch(model_dir, data, args, layout)
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)  # a shuffled epoch, as train.shuffle
    batches = [[examples[i] for i in order[s : s + args.batch]] for s in range(0, len(order), args.batch)]
    totals = {layout: {"computed": 0, "pad": 0} for layout in LAYOUTS}
    for batch in batches:
        for layout, c in counts(batch, tok.pad_token_id).items():
            for k, v in c.items():
                totals[layout][k] += v
    steps = len(batches)
    report = {"pairs": len(examples), "steps": steps, "params": sum(p.numel() for p in model.parameters()),
              "threads": torch.get_num_threads()}
    for layout, t in totals.items():
        report[layout] = {"computed_per_step": t["computed"] / steps, "pad_per_step": t["pad"] / steps,
                          "padding_fraction": t["pad"] / t["computed"]}
    seconds = dict.fromkeys(LAYOUTS, 0.0)
    timed = batches[: args.timed_batches]
    for batch in timed[:1]:  # warm-up, untimed
        for layout in LAYOUTS:
            time_step(model, batch, torch.zeros(len(batch), 4), tok.pad_token_id, layout)
    for rep in range(args.repeats):
        for i, batch in enumerate(timed):
            ref = torch.zeros(len(batch), 4)
            ref[:, 1] = torch.tensor([len(p.chosen_ids) for p in batch], dtype=torch.float32)
            ref[:, 3] = torch.tensor([len(p.rejected_ids) for p in batch], dtype=torch.float32)
            pair = LAYOUTS if (rep + i) % 2 == 0 else LAYOUTS[::-1]
            for layout in pair:
                seconds[layout] += time_step(model, batch, ref, tok.pad_token_id, layout)
    report["fwd_bwd_s"] = seconds
    report["time_ratio_shared_over_padded"] = seconds["shared_prompt"] / seconds["padded"]
    if args.epochs_timed:
        report["epoch_s"] = epoch_s
        report["epoch_ratio_shared_over_padded"] = epoch_s["shared_prompt"] / epoch_s["padded"]
    report["computed_ratio_shared_over_padded"] = (totals["shared_prompt"]["computed"]
                                                   / totals["padded"]["computed"])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
