"""Spec problems as one user-facing message: what is wrong, where.

Pydantic's ValidationErrors and the cross-key rule violations both become
``Problem``s (a dotted path and a message); ``format_problems`` turns them into
one ``FILE:LINE: PATH: MESSAGE`` line each, naming the ``--set`` override when a
value came from one.  Unknown keys get a "did you mean" from the model's fields.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.methods.registry import METHODS

# ---- problems: what is wrong, where ----


@dataclass(frozen=True)
class Problem:
    path: str  # dotted, with list indices: stages[1].method.beta
    message: str


def show(value: Any) -> str:
    """A value as the user would write it, cut to a readable length."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def path_str(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The one pydantic model inside an annotation (Optional, list, Annotated), if exactly one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for a in typing.get_args(annotation) if (m := _submodel(a)) is not None}
    return found.pop() if len(found) == 1 else None


def _keys_at(root: type[BaseModel], parts: Sequence[Any], method: str | None) -> list[str]:
    """The keys allowed at a path below the `root` model, for suggestions."""
    if method is not None and parts and parts[-1] == "method":
        return ["name", *METHODS[method].params]
    model: type[BaseModel] | None = root
    for p in parts:
        if isinstance(p, int):
            continue
        field = model.model_fields.get(p) if model else None
        model = _submodel(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _suggest(root: type[BaseModel], key: str, parent: Sequence[Any], method: str | None) -> str:
    close = difflib.get_close_matches(str(key), _keys_at(root, parent, method), n=1, cutoff=0.6)
    return f"; did you mean {path_str([*parent, close[0]])}?" if close else ""


def _strip_tags(loc: Sequence[Any]) -> tuple[list[Any], str | None]:
    """Drop pydantic's discriminator tag (method, dpo, beta -> method, beta); return the method seen."""
    parts, method = [], None
    for i, p in enumerate(loc):
        if i > 0 and loc[i - 1] == "method" and p in METHODS and i + 1 < len(loc):
            method = p
            continue
        parts.append(p)
    return parts, method


def _problem(root: type[BaseModel], err: dict, parts: list[Any], method: str | None) -> Problem:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        key, parent = parts[-1], parts[:-1]
        if method is not None and parent and parent[-1] == "method":
            params = ", ".join(METHODS[method].params)
            msg = (
                f"not a parameter of method '{method}' (its parameters: {params}) (value seen: {show(value)})"
            )
        else:
            msg = f"unknown key (value seen: {show(value)})"
        return Problem(path_str(parts), msg + _suggest(root, key, parent, method))
    if kind == "union_tag_not_found" or (kind == "missing" and parts[-1] == "method"):
        return Problem(path_str([*parts, "name"]), f"required (one of: {', '.join(METHODS)})")
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        close = difflib.get_close_matches(str(tag), list(METHODS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f" (methods: {', '.join(METHODS)})"
        return Problem(path_str([*parts, "name"]), f"unknown method (value seen: {show(tag)}){hint}")
    if kind == "missing":
        return Problem(path_str(parts), "required")
    msg = err["msg"][:1].lower() + err["msg"][1:]
    return Problem(path_str(parts), f"{msg} (value seen: {show(value)})")


def pydantic_problems(error: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """One Problem per pydantic error; a stage's echo of a top-level problem is dropped.

    `root` is the model that was validated (the Spec), whose fields give "did you mean" suggestions.
    """
    problems = [_problem(root, e, *_strip_tags(e["loc"])) for e in error.errors()]
    stage = re.compile(r"stages\[\d+\]\.")
    top = {(p.path, p.message) for p in problems if not stage.match(p.path)}

    def echoed(p: Problem) -> bool:  # a stage inherited this problem from the top level
        return stage.match(p.path) is not None and (stage.sub("", p.path), stage.sub("", p.message)) in top

    return list(dict.fromkeys(p for p in problems if not echoed(p)))


def _line_of(path: str, lines: dict[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _origin_of(path: str, origins: dict[str, str]) -> str | None:
    def under(a: str, b: str) -> bool:
        return a == b or a.startswith((b + ".", b + "["))

    for key, label in origins.items():
        if under(path, key) or under(key, path):
            return label
    return None


def format_problems(
    problems: Sequence[Problem], file: str, lines: dict[str, int], origins: dict[str, str]
) -> str:
    """One line per problem: `FILE[:LINE]: PATH: MESSAGE [(from --set ...)]`."""
    out = []
    for p in problems:
        origin = _origin_of(p.path, origins)
        line = None if origin else _line_of(p.path, lines)
        where = f"{file}:{line}" if line else file
        out.append(f"{where}: {p.path}: {p.message}" + (f" (from {origin})" if origin else ""))
    return "\n".join(out)
