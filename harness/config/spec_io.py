"""Reading spec YAML with line numbers, and dotted-key `--set` overrides.

``read_yaml`` returns the parsed mapping plus a line map (dotted path -> line)
so that errors can name the line; duplicate keys are errors.  ``set_key`` is
shared by ``--set`` overrides and ablation values: ``stages.NAME.k`` addresses a
stage by name, ``ablate.x.y`` is one ablation key.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.config.problems import path_str, show
from harness.errors import SpecError

# ---- YAML ----


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float (YAML 1.1 demands a dot: `1.0e-5`)."""


_FLOAT = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    ch: [r for r in rs if r[0] != _FLOAT] for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _line_map(node: yaml.Node, prefix: str, file: str) -> dict[str, int]:
    """Dotted path -> 1-based line of every key and list item; duplicate keys are errors."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            line = key_node.start_mark.line + 1
            if path in lines:
                raise SpecError(f"{file}:{line}: {path}: duplicate key (first at line {lines[path]})")
            lines[path] = line
            lines.update(_line_map(value_node, path, file))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
            lines.update(_line_map(item, f"{prefix}[{i}]", file))
    return lines


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """The parsed YAML and its line map; syntax errors name the file and line."""
    file = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise SpecError(f"{file}: cannot read the spec ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{file}: not UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start}); "
                        "save the spec as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise SpecError(f"{where}: YAML syntax error: {getattr(e, 'problem', None) or e}") from None
    return (data if data is not None else {}), (_line_map(node, "", file) if node else {})


# ---- dotted keys: --set overrides and ablation values ----


def key_parts(raw: dict, key: str) -> list[Any]:
    """`a.b.c` -> [a, b, c]; `stages.NAME.k` -> [stages, index, k]; `ablate.x.y` -> [ablate, "x.y"]."""
    parts: list[Any] = key.split(".")
    if not key or "" in parts:
        raise SpecError(f"{key!r}: not a dotted key")
    if parts[0] == "ablate" and len(parts) > 1:
        return ["ablate", ".".join(parts[1:])]
    if parts[0] == "stages" and len(parts) > 1:
        parts[1] = _stage_index(raw, parts[1], key)
    return parts


def _stage_index(raw: dict, name: str, key: str) -> int:
    stages = raw.get("stages")
    stages = stages if isinstance(stages, list) else []
    names = [s.get("name") if isinstance(s, dict) else None for s in stages]
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(stages):
        return int(name)
    raise SpecError(f"{key}: no stage named {name!r} (stages: {', '.join(map(str, names)) or 'none'})")


def set_key(raw: dict, key: str, value: Any) -> tuple[dict, str]:
    """A copy of `raw` with the dotted `key` set to `value`, and the key as a path (stages[1].train.lr)."""
    parts = key_parts(raw, key)
    out = copy.deepcopy(raw)
    node: Any = out
    for i, p in enumerate(parts[:-1]):
        if isinstance(node, dict) and node.get(p) is None:
            node[p] = {}
        if not (isinstance(node, dict) or (isinstance(node, list) and isinstance(p, int))):
            raise SpecError(f"{key}: {path_str(parts[:i])} is not a mapping (value seen: {show(node)})")
        node = node[p]
    if parts[0] == "stages" and len(parts) == 2 and isinstance(node, list):
        node[parts[1]] = _stage_with(node[parts[1]], value, key)
        return out, path_str(parts)
    if not isinstance(node, dict):
        raise SpecError(f"{key}: {path_str(parts[:-1])} is not a mapping (value seen: {show(node)})")
    node[parts[-1]] = value
    return out, path_str(parts)


def _stage_with(stage: Any, value: Any, key: str) -> dict:
    """A whole stage set at once (``stages.NAME: {method: ..., data: ...}``, e.g. one ablation axis over
    methods that read different data): the keys ``value`` names replace the stage's, the rest stay."""
    if not isinstance(value, dict):
        raise SpecError(f"{key}: a stage is set by a mapping of its keys, e.g. {{method: ..., data: ...}} "
                        f"(value seen: {show(value)})")
    if "name" in value and value["name"] != stage.get("name"):
        raise SpecError(f"{key}: a stage keeps its name (value seen: {show(value['name'])})")
    return {**stage, **value}


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=VALUE` -> ("a.b", VALUE parsed as YAML), so 0.1 is a float, [1,2] a list, null None."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {text}: expected KEY=VALUE, e.g. --set method.beta=0.1")
    try:
        return key.strip(), yaml_load(value)
    except yaml.YAMLError as e:
        raise SpecError(f"--set {text}: cannot parse the value: {getattr(e, 'problem', e)}") from None


def apply_overrides(raw: dict, overrides: Sequence[str], file: str = "spec",
                    ablating: bool = True) -> tuple[dict, dict[str, str]]:
    """Apply `--set` overrides in order; returns the new mapping and {path: "--set ..."}.

    When the grid will be expanded (``ablating``), a `--set` of a key that an `ablate` axis also
    sets (or of a mapping that holds it) is an error: every trial would take the axis's value,
    and the `--set` would be silently lost.
    """
    origins = {}
    for text in overrides:
        key, value = parse_override(text)
        try:
            raw, path = set_key(raw, key, value)
        except SpecError as e:
            raise SpecError(f"{file}: --set {text}: {e}") from None
        origins[path] = f"--set {text}"
    for path, origin in origins.items() if ablating else ():
        for axis in _ablated_paths(raw):
            if _overlaps(path, axis[1]):
                raise SpecError(f"{file}: {origin}: ablate.{axis[0]} sets {axis[0]} in every trial, over this "
                                f"--set; set the axis instead (--set 'ablate.{axis[0]}=[VALUE, ...]') or remove "
                                "it from ablate")
    return raw, origins


def _ablated_paths(raw: dict) -> list[tuple[str, str]]:
    """(axis key, its path) for each `ablate` axis whose key resolves (others are validation errors)."""
    ablate = raw.get("ablate")
    out = []
    for key in ablate if isinstance(ablate, dict) else {}:
        try:
            out.append((key, path_str(key_parts(raw, str(key)))))
        except SpecError:
            continue
    return out


def _overlaps(a: str, b: str) -> bool:
    """Whether one path is the other or lies inside it (`train` holds `train.lr`; `stages[1]` holds `stages[1].lr`)."""
    short, long = sorted((a, b), key=len)
    return long == short or long.startswith((short + ".", short + "["))
