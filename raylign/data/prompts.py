"""Prompt sets: rows from a source (raylign/data/sources.py), checked and shaped for a suite kind.

Rows become the PROMPTS schema. What a row must hold depends on what it is for
(`SuiteConfig.kind`; the training prompt set is `cares`):
- cares: `prompt` (or a chat, `messages`), `harmful_level` 0-3, optional `principle_index`
  and `method`: CARES-18K's published columns as they are;
- over_refusal (XSTest): `prompt`, `label` safe|unsafe (harm level 0 or 3), optional `type`
  (the category its rates are grouped by);
- harmful_requests (MedSafetyBench): `prompt` (or MedSafetyBench's `harmful_medical_request`),
  optional `reference` (or `safe_response`) and `category` (else the split, which for
  MedSafetyBench's per-category files is the file), harm level 3 unless given;
- reference (questions with expert answers): `prompt` (or `question`) and `reference` (or
  `answer`), the expert's answer, which must not be empty; optional `category`; harm level 0
  unless given.
Problems (missing fields, wrong types, values outside what a field allows, empty or oversized
prompts, empty reference answers, duplicate ids, lines that are not JSON objects) are found row
by row. With `on_invalid: error` they are reported together, the first few by row, in one
error; with `skip` the bad rows are left out, counted, and the first few listed in the run's
log and metrics.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from raylign.config import SourceConfig
from raylign.data.schemas import PROMPTS
from raylign.data.sources import SourceError, read_source

_MAX_LISTED = 5


class PromptSetError(ValueError):
    pass


ALIASES = {"harmful_requests": {"prompt": "harmful_medical_request", "reference": "safe_response"},
           "reference": {"prompt": "question", "reference": "answer"}}
"""Published column names a kind reads when the row has none of raylign's."""
OVER_REFUSAL_LEVELS = {"safe": 0, "unsafe": 3}


def listed(problems: list[str]) -> str:
    """"N problem(s): the first few; and M more": one line, however many rows are bad."""
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} problem(s): {'; '.join(problems[:_MAX_LISTED])}{more}"


class PromptSet(NamedTuple):
    table: pa.Table  # the good rows, PROMPTS schema
    skipped: int  # bad rows left out (`on_invalid: skip`)
    problems: list[str]  # every problem found, by row


def _chat_problem(messages) -> str | None:
    if not isinstance(messages, list) or not messages or not all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
            for t in messages):
        return "messages must be a list of {role, content} turns"
    if messages[-1]["role"] != "user":
        return f"messages must end with a user turn (the last is {messages[-1]['role']!r})"
    return None


def _shaped(row: dict, kind: str) -> tuple[dict, list[str]]:
    """The row as PROMPTS fields for `kind`, and what is wrong with it."""
    for field, alias in ALIASES.get(kind, {}).items():
        if row.get(field) is None and alias in row:
            row = {**row, field: row[alias]}
    problems = []
    messages = row.get("messages")
    prompt = row.get("prompt")
    if messages is not None:
        problem = _chat_problem(messages)
        if problem:
            problems.append(problem)
        elif prompt is None:
            prompt = messages[-1]["content"]  # what judges and reports show
    out = {"id": row.get("id"), "prompt": prompt, "split": row.get("split"), "messages": messages or None,
           "harmful_level": row.get("harmful_level"), "principle_index": row.get("principle_index"),
           "method": row.get("method"), "category": None, "reference": None}
    if kind == "over_refusal":
        label = row.get("label")
        level = OVER_REFUSAL_LEVELS.get(label.strip().lower()) if isinstance(label, str) else None
        if level is None:
            problems.append(f"label must be safe or unsafe (got {label!r:.40})")
        out.update(harmful_level=level, category=row.get("type"))
    elif kind == "harmful_requests":
        out.update(category=row.get("category", out["split"]), reference=row.get("reference"),
                   harmful_level=3 if row.get("harmful_level") is None else row["harmful_level"])
    elif kind == "reference":
        reference = row.get("reference")
        if reference is None or (isinstance(reference, str) and not reference.strip()):
            problems.append("reference answer is missing or empty")
        out.update(category=row.get("category"), reference=reference,
                   harmful_level=0 if row.get("harmful_level") is None else row["harmful_level"])
    for field in ("category", "reference"):
        if out[field] is not None and not isinstance(out[field], str):
            out[field] = str(out[field])  # an XSTest type or a category may come as a number
    return out, problems


def _row_problems(row: dict, max_chars: int, seen: set, what: str) -> list[str]:
    problems = []
    if not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool) or row["id"] == "":
        problems.append("id must be a non-empty string")
    elif str(row["id"]) in seen:
        problems.append("duplicate id")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("prompt is empty" if prompt in (None, "") or isinstance(prompt, str)
                        else f"prompt must be text (got {type(prompt).__name__})")
    else:
        chars = sum(len(t["content"]) for t in row["messages"]) if row.get("messages") else len(prompt)
        if chars > max_chars:
            problems.append(f"prompt has {chars} characters > {what}.max_prompt_chars {max_chars}")
    level = row.get("harmful_level")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 3:
        if not (isinstance(level, float) and level.is_integer() and 0 <= level <= 3):  # a CSV's 2.0
            problems.append(f"harmful_level must be 0-3 for safety scoring (got {level!r:.40})")
    principle = row.get("principle_index")
    if principle is not None and (isinstance(principle, bool) or not isinstance(principle, (int, float))
                                  or not float(principle).is_integer() or not -128 <= principle <= 127):
        problems.append(f"principle_index must be a small integer (got {principle!r:.40})")
    for field in ("split", "method"):
        if not isinstance(row.get(field), str) and not (field == "method" and row.get(field) is None):
            problems.append(f"{field} must be a string (got {row.get(field)!r:.40})")
    return problems


def _check_rows(rows: list[dict], unreadable: list[str], cfg: SourceConfig, source: str, kind: str,
                what: str) -> PromptSet:
    names = {name for row in rows for name in row}
    aliases = ALIASES.get(kind, {})
    required = ["prompt"] + {"cares": ["harmful_level"], "over_refusal": ["label"],
                             "reference": ["reference"]}.get(kind, [])
    missing = [f for f in required if f not in names and aliases.get(f) not in names
               and not (f == "prompt" and "messages" in names)]
    if rows and missing:
        hint = "".join(f"; {f} may also be the column {aliases[f]!r}" for f in missing if f in aliases)
        hint += "; map them with " + " ".join(f"{what}.fields.{f}=<column>" for f in missing)
        raise PromptSetError(f"{source}: missing required field(s) {missing} for kind {kind}; found "
                             f"{sorted(names)}{hint}")
    problems, good = list(unreadable), []
    seen: set[str] = set()
    for i, raw in enumerate(rows):
        row, found = _shaped(raw, kind)
        found += [p for p in _row_problems(row, cfg.max_prompt_chars, seen, what)
                  if not (found and p.startswith("harmful_level"))]  # a bad label already says it
        problems += [f"row {i} (id {row.get('id')!r:.40}): {p}" for p in found]
        if isinstance(row.get("id"), (str, int)):
            seen.add(str(row["id"]))
        if not found:
            good.append({**row, "id": str(row["id"]), "harmful_level": int(row["harmful_level"]),
                         "principle_index": None if row["principle_index"] is None else int(row["principle_index"])})
    skipped = len(rows) - len(good) + len(unreadable)
    if problems and cfg.on_invalid == "error":
        raise PromptSetError(f"{source}: {listed(problems)} "
                             f"(or set {what}.on_invalid=skip to leave those rows out)")
    if not good:
        raise PromptSetError(f"{source}: no usable prompt rows ({skipped} skipped)")
    columns = {name: [row.get(name) for row in good] for name in PROMPTS.names}
    return PromptSet(pa.table(columns, schema=PROMPTS), skipped, problems)


def read_prompts(cfg: SourceConfig, kind: str = "cares", what: str = "prompts") -> PromptSet:
    """The source's good rows for a set of `kind`, with what was skipped and why. `what` is the
    config key the source sits under, for messages."""
    try:
        source = read_source(cfg, what)
    except SourceError as e:
        raise PromptSetError(str(e)) from None
    return _check_rows(source.rows, source.unreadable, cfg, source.where, kind, what)


def load_prompts(cfg: SourceConfig) -> pa.Table:
    """The whole prompt set as a table with the PROMPTS schema."""
    return read_prompts(cfg).table


def split(prompts: pa.Table, name: str, limit: int | None, seed: int) -> pa.Table:
    """Rows of one split; a seeded sample of `limit` rows when given."""
    rows = prompts.filter(pc.equal(prompts["split"], name))
    if rows.num_rows == 0:
        found = sorted(set(prompts["split"].to_pylist()))
        raise PromptSetError(f"prompt set has no rows with split {name!r}; splits found: {found}")
    return sample(rows, limit, seed)


def sample(rows: pa.Table, limit: int | None, seed: int) -> pa.Table:
    """A seeded sample of `limit` rows, in their order; all of them when `limit` is None."""
    if limit is None or limit >= rows.num_rows:
        return rows
    picked = sorted(random.Random(seed).sample(range(rows.num_rows), limit))
    return rows.take(picked)
