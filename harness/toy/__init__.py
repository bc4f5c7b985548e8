"""The toy world: a locally built model, tokenizer and arithmetic datasets.

``toy://<name>`` names either a model (TOY_MODELS) or a dataset (TOY_DATASETS).
Nothing is downloaded: everything is generated deterministically from a seed.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.toy.datasets import TOY_DATASETS, dataset_fingerprint, toy_dataset
from harness.toy.model import TOY_MODELS, model_fingerprint, toy_model_path

PREFIX = "toy://"

__all__ = [
    "TOY_DATASETS",
    "TOY_MODELS",
    "is_toy",
    "toy_dataset",
    "toy_fingerprint",
    "toy_model_path",
    "toy_name",
]


def is_toy(uri: str) -> bool:
    """True for ``toy://...`` URIs."""
    return uri.startswith(PREFIX)


def toy_name(uri: str) -> str:
    """``"toy://tiny"`` -> ``"tiny"``; unknown names raise HarnessError listing known ones."""
    name = uri[len(PREFIX):] if is_toy(uri) else uri
    if name not in TOY_MODELS and name not in TOY_DATASETS:
        known = ", ".join(PREFIX + n for n in [*TOY_MODELS, *TOY_DATASETS])
        raise HarnessError(f"unknown toy name {uri!r}; known: {known}")
    return name


def toy_fingerprint(name: str, seed: int = 0) -> str:
    """Short stable hash of a toy model's recipe or a toy dataset's content."""
    if name in TOY_MODELS:
        return model_fingerprint(name, seed)
    return dataset_fingerprint(name, seed)  # raises HarnessError on unknown names
