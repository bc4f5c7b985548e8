"""Fuzzed spec files through the real spec loader (issue 17, fuzzed inputs).

A valid spec (one method, or stages with an ablation) is mutated at random: any key of the
spec's model (and unknown ones) set to random values of random types and nesting, keys
deleted, ``--set`` overrides added; or the file is random text or bytes.  ``load_spec`` then
``expand_trials`` and the dry-run lines either work, or raise a ``SpecError`` (a
``HarnessError``) whose first line names the file or the ``--set`` at fault.  Sizes:
``tests.fuzzing``.
"""

from __future__ import annotations

import typing

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from harness.config.grid import dry_run_lines, expand_trials
from harness.config.spec import Spec, load_spec
from harness.errors import SpecError
from tests.fuzzing import SCALAR, TEXT, assert_user_error, fuzz_settings, json_values

EXAMPLES = 100

ONE_METHOD = {"name": "exp", "model": "toy://tiny", "method": {"name": "dpo"}, "data": {"train": "toy://arith-pairs"}}
STAGED = {"name": "exp", "model": "toy://tiny", "eval": {"suites": ["arith"]},
          "stages": [{"name": "sft", "method": {"name": "sft"}, "data": {"train": "toy://arith-sft"}},
                     {"name": "dpo", "method": {"name": "dpo", "beta": 0.1}, "data": {"train": "toy://arith-pairs"}}],
          "ablate": {"stages.dpo.method.beta": [0.1, 0.5]}, "seeds": [0, 1]}


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [m for a in typing.get_args(annotation) if (m := _model_of(a)) is not None]
    return found[0] if len(found) == 1 else None


def dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a pydantic model, nested models included (methods are added by hand)."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        sub = _model_of(field.annotation)
        if sub is not None:
            keys += dotted_keys(sub, f"{prefix}{name}.")
    return keys


KEYS = dotted_keys(Spec) + ["method.name", "method.beta", "method.gamma", "method.loss_normalization",
                            "stages.sft.train.lr", "stages.dpo.method.beta", "stages.0.name", "stages.1",
                            "ablate.train.lr", "ablate.stages.dpo.method.beta", "ablate.nope", "seeds"]
PLAUSIBLE = st.sampled_from([0, 1, -1, 0.5, 2, 1e-5, "sft", "dpo", "kto", "orpo", "grpo", "toy://arith-sft",
                             "token", "none", "exact", [0.1, 0.5], [], [1, 1], {"name": "dpo"}, None, True, "[1,"])
VALUE = st.one_of(PLAUSIBLE, PLAUSIBLE, SCALAR, json_values(max_leaves=5))
KEY = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), TEXT.filter(lambda k: k and "." not in k))


def _set(raw: dict, key: str, value) -> None:
    """Set (or, with value ``...``, delete) a dotted key in a plain nested mapping, creating mappings on the way."""
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        if isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
            continue
        if not isinstance(node, dict):
            return
        if not isinstance(node.get(p), (dict, list)):
            node[p] = {}
        node = node[p]
    if isinstance(node, dict):
        if value is ...:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value


def _check(path, overrides=()):
    try:
        spec = load_spec(path, overrides)
        trials = expand_trials(spec, lambda uri: "0" * 16)
        assert len(dry_run_lines(trials)) >= len(trials) >= 1
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions escape
        assert_user_error(exc, str(path), "--set")


@fuzz_settings(EXAMPLES)
@given(base=st.sampled_from([ONE_METHOD, STAGED]),
       edits=st.lists(st.tuples(KEY, st.one_of(VALUE, st.just(...))), min_size=1, max_size=4),
       overrides=st.lists(st.one_of(st.tuples(st.sampled_from(KEYS), PLAUSIBLE).map(lambda kv: f"{kv[0]}={kv[1]}"),
                                    TEXT), max_size=2))
def test_fuzzed_specs_load_or_name_the_file_and_key(tmp_path, base, edits, overrides):
    raw = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    for key, value in edits:
        _set(raw, key, value)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    _check(path, overrides)


@fuzz_settings(EXAMPLES)
@given(text=st.one_of(TEXT, st.lists(st.sampled_from(["name: x\n", "model: toy://tiny\n", "  ", "- ", ": ",
                                                       "{", "[", "&a ", "*a", "!!python/object ", "%YAML 1.2\n",
                                                       "method:\n", "  name: sft\n", "---\n", "\t", "'"]),
                                       max_size=8).map("".join)),
       data=st.binary(max_size=40), as_bytes=st.booleans())
def test_fuzzed_spec_text_is_a_spec_or_a_spec_error(tmp_path, text, data, as_bytes):
    path = tmp_path / "spec.yaml"
    if as_bytes:
        path.write_bytes(data)
    else:
        path.write_text(text, encoding="utf-8")
    _check(path)


def test_a_spec_that_is_not_utf8_is_a_spec_error(tmp_path):
    """Found by fuzzing: the spec was read with the locale's encoding, and bytes that are not
    UTF-8 escaped as UnicodeDecodeError."""
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: caf\xe9\nmodel: toy://tiny\n")
    with pytest.raises(SpecError, match=r"spec.yaml: not UTF-8"):
        load_spec(path)
