"""Evaluation suites: a suite's prompts, the model's outputs on them, and their scores.

A suite runs in three steps, shared by sweeps and ``harness judge``:

1. ``suite_items``: the prompts, with the data's own fields (answers, labels,
   tests, reference answers) and an ``instruction`` text to match outputs by;
2. ``generate_outputs``: the model's outputs, one row per prompt and sample,
   multi-turn for items with ``turns`` (each turn sees the model's own earlier
   answers); judge-only runs read outputs from files instead;
3. ``harness.eval.scoring.score_suite``: verifiers or judges -> ``SuiteResult``.

Metrics are logged as ``eval/<suite>/<metric>``; ``outputs`` rows and
``judgments`` rows (one per prompt) become the artifacts
``outputs/<suite>.jsonl`` and ``judgments/<suite>.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config.spec import SUITES as SUITE_NAMES
from harness.config.spec import GenerationSpec
from harness.data.load import load_rows
from harness.data.tokenization import encode_prompt
from harness.errors import HarnessError
from harness.eval.generation import generate
from harness.eval.outputs import instruction_of
from judges.verifiers import extract_number


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    outputs: list[dict] = field(default_factory=list)
    judgments: list[dict] = field(default_factory=list)
    # Per output row, its (prompt_ids, generated_ids) per turn, for the KL estimate; not persisted.
    samples: list[list[tuple[list[int], list[int]]]] = field(default_factory=list)


def generation_for(base: GenerationSpec, options: dict) -> GenerationSpec:
    """A suite's decoding settings: its own non-null options override ``eval.generation``."""
    own = {k: options[k] for k in ("max_new_tokens", "temperature", "top_p", "n", "seed")
           if options.get(k) is not None}
    return base.model_copy(update=own)


def suite_options(eval_cfg, suite: str) -> dict:
    """The options block ``eval.<suite>`` as a plain dict (empty when unset)."""
    options = getattr(eval_cfg, suite, None)
    if options is None:
        return {}
    return options.model_dump() if hasattr(options, "model_dump") else dict(options)


# ---------------------------------------------------------------- items


def _eval_items(uri: str, limit: int | None) -> list[dict]:
    rows = load_rows(uri, "eval")[:limit]
    return [{**r.data, "id": str(r.data.get("id", i)), "instruction": instruction_of(r.data["prompt"]),
             "where": r.where} for i, r in enumerate(rows)]


def suite_data(suite: str, options: dict) -> str:
    """The data a suite's prompts come from (``options['data']``, or the suite's shipped default)."""
    if suite == "code" and options.get("data") is None:
        from judges.code import DEFAULT_DATA

        return DEFAULT_DATA
    return options["data"]


def suite_items(suite: str, options: dict) -> list[dict]:
    """The suite's prompts: dicts with ``id`` (str), ``instruction``, ``where`` and the data's fields.

    Single-turn items carry ``prompt`` (a string or a message list); multi-turn
    items (``mtbench``) carry ``turns``, the user's messages in order.
    """
    uri, limit = suite_data(suite, options), options.get("limit")
    if suite == "mtbench":
        from harness.eval.mtbench import load_questions

        return load_questions(uri, options.get("reference_answers"))[:limit]
    if suite == "safety":
        from judges.safety import read_safety_prompts

        return [{**item, "id": str(item["id"]), "instruction": instruction_of(item["prompt"]),
                 "where": f"{uri} id {item['id']}"} for item in read_safety_prompts(uri)[:limit]]
    if suite == "code":
        from judges.code import load_code_items

        return [{**item, "instruction": instruction_of(item["prompt"]), "where": f"{uri} id {item['id']}"}
                for item in load_code_items(uri, limit)]
    return _eval_items(uri, limit)


def check_suite_data(suite: str, items: list[dict]) -> None:
    """Fail with file:line when a suite's data lacks what the suite needs.

    arith: a numeric ``answer``; safety: a ``label``, harmful (should be refused)
    or benign (should be answered).
    """
    for item in items:
        if suite == "arith":
            answer = item.get("answer")
            if answer is None or extract_number(str(answer)) is None:
                raise HarnessError(f"{item['where']}: field 'answer': the arith suite needs a numeric answer "
                                   f"(value seen: {answer!r})")
        if suite == "safety" and item.get("label") not in ("harmful", "benign"):
            raise HarnessError(f"{item['where']}: field 'label': the safety suite needs 'harmful' or 'benign' "
                               f"(value seen: {item.get('label')!r})")


def check_suites(names: list[str]) -> None:
    """Fail before any training when a spec asks for a suite this version cannot run."""
    from harness.eval.scoring import available_suites

    ready = available_suites()
    unknown = [n for n in names if n not in ready]
    if unknown:
        available = [n for n in SUITE_NAMES if n in ready]
        raise HarnessError(f"eval.suites: {unknown} not available in this version (available: {available})")


# ---------------------------------------------------------------- generation


def _single_turn(items, model, tokenizer, generation, progress, desc):
    prompts = [encode_prompt(tokenizer, item["prompt"], generation.system_prompt) for item in items]
    completions = generate(model, tokenizer, prompts, generation, progress=progress, desc=desc)
    return [[([p], [c]) for c in samples] for p, samples in zip(prompts, completions)]


def _multi_turn(items, model, tokenizer, generation, progress, desc):
    """Turn 1 gets ``n`` samples per item; each sample's later turns continue its own conversation."""
    system = [] if generation.system_prompt is None else [{"role": "system", "content": generation.system_prompt}]
    first = _single_turn([{"prompt": [{"role": "user", "content": it["turns"][0]}]} for it in items],
                         model, tokenizer, generation, progress, f"{desc} turn 1")
    runs = []  # [item index, messages so far, prompt ids per turn, completions per turn]
    for i, (item, samples) in enumerate(zip(items, first)):
        for [p], [c] in samples:
            turn = [{"role": "user", "content": item["turns"][0]}, {"role": "assistant", "content": c.text}]
            runs.append([i, system + turn, [p], [c]])
    one = generation.model_copy(update={"n": 1})
    for t in range(1, max(len(item["turns"]) for item in items)):
        active = [r for r in runs if t < len(items[r[0]]["turns"])]
        for r in active:
            r[1] = r[1] + [{"role": "user", "content": items[r[0]]["turns"][t]}]
        prompts = [encode_prompt(tokenizer, r[1]) for r in active]
        outs = generate(model, tokenizer, prompts, one, progress=progress, desc=f"{desc} turn {t + 1}")
        for r, p, [c] in zip(active, prompts, outs):
            r[1] = r[1] + [{"role": "assistant", "content": c.text}]
            r[2].append(p)
            r[3].append(c)
    per_item = [[] for _ in items]
    for i, _, prompts, comps in runs:
        per_item[i].append((prompts, comps))
    return per_item


def generate_outputs(items: list[dict], model, tokenizer, generation: GenerationSpec, generator: str,
                     progress: bool = True, desc: str = "eval") -> tuple[list[dict], list[list]]:
    """Outputs rows (one per prompt and sample) and, per row, its (prompt_ids, generated_ids) per turn.

    A row has ``id, sample, instruction, output, generator, num_tokens, generation`` and
    ``prompt`` (single-turn) or ``turns`` with ``output`` a list of answers, one per turn.
    """
    multi = any("turns" in item for item in items)
    per_item = (_multi_turn if multi else _single_turn)(items, model, tokenizer, generation, progress, desc)
    settings = generation.model_dump()
    rows, samples = [], []
    for item, item_samples in zip(items, per_item):
        for s, (prompt_ids, completions) in enumerate(item_samples):
            texts = [c.text for c in completions]
            row = {"id": item["id"], "sample": s, "instruction": item["instruction"],
                   "output": texts if multi else texts[0], "generator": generator,
                   "num_tokens": sum(c.num_tokens for c in completions), "generation": settings}
            row.update({"turns": item["turns"]} if multi else {"prompt": item["prompt"]})
            rows.append(row)
            samples.append([(p, c.token_ids) for p, c in zip(prompt_ids, completions)])
    return rows, samples
