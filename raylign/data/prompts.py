"""Prompt sets in the CARES-18K schema: loading, checking and splitting.

Reads the bundled prompt set (`embedded`) or a user's .jsonl / .parquet / .csv file with the
fields `id`, `prompt`, `harmful_level` (0-3), `principle_index`, `method`, `split`.
Problems (missing fields, wrong types, empty or oversized prompts, duplicate ids, lines that
are not JSON objects) are found row by row. With `prompts.on_invalid: error` they are reported
together, the first few by row, in one error; with `skip` the bad rows are left out, counted,
and the first few listed in the run's log and metrics.
"""

from __future__ import annotations

import importlib.resources
import json
import random
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq

from raylign.config import PromptsConfig
from raylign.data.schemas import PROMPTS

EMBEDDED_PROMPTS = "cares_prompts.jsonl"
_MAX_LISTED = 5


class PromptSetError(ValueError):
    pass


def listed(problems: list[str]) -> str:
    """"N problem(s): the first few; and M more": one line, however many rows are bad."""
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} problem(s): {'; '.join(problems[:_MAX_LISTED])}{more}"


class PromptSet(NamedTuple):
    table: pa.Table  # the good rows, PROMPTS schema
    skipped: int  # bad rows left out (`on_invalid: skip`)
    problems: list[str]  # every problem found, by row


def read_rows(path: Path, what: str = "prompt file", error: type[ValueError] | None = None) -> tuple[list[dict], list[str]]:
    """A JSONL, JSON, Parquet or CSV file's rows as dicts, and the lines that could not be read
    at all (JSONL only: a line that is not a JSON object). A file that cannot be read raises
    `error` (PromptSetError by default), naming it as `what`."""
    error = error or PromptSetError
    readers = {".jsonl": None, ".json": None, ".parquet": pq.read_table, ".csv": pyarrow.csv.read_csv}
    if path.suffix not in readers:
        raise error(f"{what} {path}: unsupported format {path.suffix!r}; use one of {sorted(readers)}")
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        if readers[path.suffix] is not None:
            return readers[path.suffix](path).to_pylist(), []
        rows, problems = [], []
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:  # JSON lines end at \n only
            if path.suffix == ".json" and f.read(1) == "[":  # a JSON array rather than JSON lines
                f.seek(0)
                lines = [json.dumps(row) for row in json.load(f)]
            else:
                f.seek(0)
                lines = f
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    row = f"not JSON ({str(e).splitlines()[0]})"
                if not isinstance(row, dict):
                    problems.append(f"line {i + 1}: {row if isinstance(row, str) else 'not a JSON object'}")
                    continue
                rows.append(row)
        return rows, problems
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid, a broken JSON array, an unreadable file
        raise error(f"{what} {path} could not be read: {str(e).splitlines()[0]}") from None


def _row_problems(row: dict, max_chars: int, seen: set) -> list[str]:
    problems = []
    if not isinstance(row.get("id"), str) or not row["id"]:
        problems.append("id must be a non-empty string")
    elif row["id"] in seen:
        problems.append("duplicate id")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("prompt is empty" if prompt in (None, "") or isinstance(prompt, str)
                        else f"prompt must be text (got {type(prompt).__name__})")
    elif len(prompt) > max_chars:
        problems.append(f"prompt has {len(prompt)} characters > prompts.max_prompt_chars {max_chars}")
    level = row.get("harmful_level")
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 3:
        # The schema allows null for prompts of unknown harm; CARES scoring needs a level.
        problems.append(f"harmful_level must be 0-3 for safety scoring (got {level!r:.40})")
    principle = row.get("principle_index")
    if principle is not None and (isinstance(principle, bool) or not isinstance(principle, int)
                                  or not -128 <= principle <= 127):
        problems.append(f"principle_index must be a small integer (got {principle!r:.40})")
    for field in ("split", "method"):
        if not isinstance(row.get(field), str) and not (field == "method" and row.get(field) is None):
            problems.append(f"{field} must be a string (got {row.get(field)!r:.40})")
    return problems


def _check_rows(rows: list[dict], unreadable: list[str], cfg: PromptsConfig, source: str) -> PromptSet:
    names = {name for row in rows for name in row}
    missing = [f for f in ("id", "prompt", "split") if f not in names]
    if rows and missing:
        raise PromptSetError(f"{source}: missing required field(s) {missing}; found {sorted(names)}")
    problems, good = list(unreadable), []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        found = _row_problems(row, cfg.max_prompt_chars, seen)
        problems += [f"row {i} (id {row.get('id')!r:.40}): {p}" for p in found]
        if isinstance(row.get("id"), str):
            seen.add(row["id"])
        if not found:
            good.append(row)
    skipped = len(rows) - len(good) + len(unreadable)
    if problems and cfg.on_invalid == "error":
        raise PromptSetError(f"{source}: {listed(problems)} "
                             "(or set prompts.on_invalid=skip to leave those rows out)")
    if not good:
        raise PromptSetError(f"{source}: no usable prompt rows ({skipped} skipped)")
    columns = {name: [row.get(name) for row in good] for name in PROMPTS.names}
    return PromptSet(pa.table(columns, schema=PROMPTS), skipped, problems)


def read_prompts(cfg: PromptsConfig) -> PromptSet:
    """The prompt set's good rows, with what was skipped and why."""
    if cfg.path == "embedded":
        resource = importlib.resources.files("raylign") / "data" / EMBEDDED_PROMPTS
        with importlib.resources.as_file(resource) as path:
            return _check_rows(*read_rows(path), cfg, "embedded prompt set")
    path = Path(cfg.path).expanduser()
    return _check_rows(*read_rows(path), cfg, f"prompt file {path}")


def load_prompts(cfg: PromptsConfig) -> pa.Table:
    """The whole prompt set as a table with the PROMPTS schema."""
    return read_prompts(cfg).table


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
