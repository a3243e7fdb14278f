"""Prompt sets in the CARES-18K schema: loading, checking and splitting.

Reads the bundled prompt set (`embedded`) or a user's .jsonl / .parquet / .csv file with the
fields `id`, `prompt`, `harmful_level` (0-3), `principle_index`, `method`, `split`.
Problems (missing fields, wrong types, empty or oversized prompts, duplicate ids) are collected
and reported together, the first few by row, in one error.
"""

from __future__ import annotations

import importlib.resources
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet as pq

from raylign.config import PromptsConfig
from raylign.schemas import PROMPTS

EMBEDDED_PROMPTS = "cares_prompts.jsonl"
_MAX_LISTED = 5


class PromptSetError(ValueError):
    pass


def _read_table(path: Path) -> pa.Table:
    readers = {".jsonl": pyarrow.json.read_json, ".json": pyarrow.json.read_json,
               ".parquet": pq.read_table, ".csv": pyarrow.csv.read_csv}
    if path.suffix not in readers:
        raise PromptSetError(f"prompt file {path}: unsupported format {path.suffix!r}; use one of {sorted(readers)}")
    if not path.is_file():
        raise PromptSetError(f"prompt file {path} does not exist")
    try:
        return readers[path.suffix](path)
    except (pa.ArrowInvalid, OSError) as e:
        raise PromptSetError(f"prompt file {path} could not be read: {str(e).splitlines()[0]}") from None


def _check_rows(table: pa.Table, max_chars: int, source: str) -> pa.Table:
    missing = [f for f in ("id", "prompt", "split") if f not in table.column_names]
    if missing:
        raise PromptSetError(f"{source}: missing required field(s) {missing}; found {table.column_names}")
    problems: list[str] = []
    seen: set[str] = set()
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        where = f"row {i} (id {row.get('id')!r})"
        if not isinstance(row["id"], str) or not row["id"]:
            problems.append(f"{where}: id must be a non-empty string")
        elif row["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(row["id"])
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"{where}: prompt is empty")
        elif len(prompt) > max_chars:
            problems.append(f"{where}: prompt has {len(prompt)} characters > prompts.max_prompt_chars {max_chars}")
        level = row.get("harmful_level")
        if not isinstance(level, int) or not 0 <= level <= 3:
            # The schema allows null for prompts of unknown harm; CARES scoring needs a level.
            problems.append(f"{where}: harmful_level must be 0-3 for safety scoring (got {level!r})")
        principle = row.get("principle_index")
        if principle is not None and not isinstance(principle, int):
            problems.append(f"{where}: principle_index must be an integer (got {principle!r})")
        if not isinstance(row["split"], str):
            problems.append(f"{where}: split must be a string (got {row['split']!r})")
    if problems:
        listed = "; ".join(problems[:_MAX_LISTED])
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise PromptSetError(f"{source}: {len(problems)} problem(s): {listed}{more}")
    columns = {name: [row.get(name) for row in rows] for name in PROMPTS.names}
    return pa.table(columns, schema=PROMPTS)


def load_prompts(cfg: PromptsConfig) -> pa.Table:
    """The whole prompt set as a table with the PROMPTS schema."""
    if cfg.path == "embedded":
        resource = importlib.resources.files("raylign") / "data" / EMBEDDED_PROMPTS
        with importlib.resources.as_file(resource) as path:
            return _check_rows(_read_table(path), cfg.max_prompt_chars, "embedded prompt set")
    path = Path(cfg.path).expanduser()
    return _check_rows(_read_table(path), cfg.max_prompt_chars, f"prompt file {path}")


def split(prompts: pa.Table, name: str, limit: int | None, seed: int) -> pa.Table:
    """Rows of one split; a seeded sample of `limit` rows when given."""
    rows = prompts.filter(pc.equal(prompts["split"], name))
    if rows.num_rows == 0:
        found = sorted(set(prompts["split"].to_pylist()))
        raise PromptSetError(f"prompt set has no rows with split {name!r}; splits found: {found}")
    if limit is None or limit >= rows.num_rows:
        return rows
    picked = sorted(random.Random(seed).sample(range(rows.num_rows), limit))
    return rows.take(picked)
