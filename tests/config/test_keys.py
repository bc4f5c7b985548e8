"""docs/spec-keys.md is generated from the spec's models: it must be current, and every key must say what it does."""

from __future__ import annotations

from pathlib import Path

from harness.config.keys import key_rows, markdown, type_text
from harness.config.spec import METHOD_MODELS, Spec, TrainSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec-keys.md"


def test_the_key_reference_is_current():
    assert DOC.read_text() == markdown(), "regenerate: python -m harness.config.keys > docs/spec-keys.md"


def test_every_key_has_a_meaning_type_and_default():
    rows = key_rows(Spec) + [row for model in METHOD_MODELS.values() for row in key_rows(model)
                             if row[0] != "name"]
    assert [key for key, _, _, meaning in rows if not meaning] == []
    keys = {row[0]: row for row in key_rows(Spec)}
    assert keys["data.fraction"][1:3] == ("float (> 0, ≤ 1)", "1.0")
    assert keys["train.precision"][1:3] == ("auto \\| fp32 \\| bf16 \\| fp16", "auto")
    assert keys["lora.quantize"][2] == "none" and keys["eval.mtbench.limit"][2] == "null"
    assert set(TrainSpec.model_fields) == {k.split(".", 1)[1] for k in keys if k.startswith("train.")}


def test_type_text_reads_constraints():
    assert type_text(TrainSpec.model_fields["max_length"].annotation, TrainSpec.model_fields["max_length"].metadata) \
        == "int (≥ 2)"
