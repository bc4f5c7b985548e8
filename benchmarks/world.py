"""What the peer benchmarks share: one random Llama-style model with the toy tokenizer, and toy rows as JSONL.

Both tools of a comparison load the same directory and the same file, so any difference is the tool's.
"""

from __future__ import annotations

import json
from pathlib import Path


def build_world(out: Path, hidden: int, layers: int, dataset: str, kind: str, rows: int,
                **config) -> tuple[str, str]:
    """(model directory, data file): a random ``hidden``/``layers`` Llama under ``out/model`` with the toy
    tokenizer, and the first ``rows`` rows of toy dataset ``dataset`` (read as ``kind``) in ``out``.
    ``config``: other ``LlamaConfig`` fields, over the defaults below (a ``vocab_size`` above the toy
    tokenizer's leaves the extra rows unused but computed, as a large vocabulary's LM head)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.data.load import load_rows
    from harness.toy import toy_model_path
    from harness.train.models import load_tokenizer

    tok = load_tokenizer(str(toy_model_path("micro", out / "cache")))
    torch.manual_seed(0)
    config = LlamaConfig(**{"vocab_size": len(tok), "hidden_size": hidden, "intermediate_size": 4 * hidden,
                            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 4,
                            "max_position_embeddings": 512, "pad_token_id": tok.pad_token_id,
                            "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id, **config})
    model_dir = out / "model"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = out / f"{kind}.jsonl"
    data.write_text("".join(json.dumps(r.data) + "\n" for r in load_rows(dataset, kind)[:rows]))
    return str(model_dir), str(data)


def add_pair_world_args(parser) -> None:
    """The DPO peers' shared world: ``--pairs`` rows of toy://arith-pairs, batch, model size and max length."""
    parser.add_argument("--pairs", type=int, default=768)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
