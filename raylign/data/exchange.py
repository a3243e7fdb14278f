"""The buffer to and from other tools: TRL's preference and unpaired formats, and per-cycle stats.

Export writes `preference` (prompt / chosen / rejected) and `unpaired` (prompt / completion /
label), conversational (lists of {role, content}), as Parquet, JSON lines or a saved Hugging
Face dataset; `datasets` reads them back (`load_dataset("parquet" | "json", data_files=...)`,
`load_from_disk`) and TRL's DPOTrainer and KTOTrainer train on them as they are.

Import reads a user's preference data in the same formats (JSONL, Parquet or CSV; each of
prompt / chosen / rejected / completion a string or a conversation; label a boolean) into the
buffer's `pairs` or `kto` table at cycle 0, where it seeds the buffer and `pairs.replay_ratio`
mixes it into training, or (`train_on: imports`, `raylign train`) is all that cycles train on.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from raylign.actors.buffer import PreferenceBuffer
from raylign.data.prompts import listed
from raylign.data.sources import read_rows
from raylign.data.schemas import KTO_EXAMPLES, PAIRS, assistant_turn, user_turn

PREFERENCE = ("prompt", "chosen", "rejected")
SCORED = ("chosen_scores", "rejected_scores")
UNPAIRED = ("prompt", "completion", "label")
FORMATS = ("parquet", "jsonl", "hf")


class ExchangeError(ValueError):
    """A file that cannot be imported, or a buffer that cannot be exported; one line, by row."""


def export_buffer(buffer: PreferenceBuffer, out: Path, fmt: str) -> dict[str, int]:
    """Write the buffer's pairs and KTO examples in TRL's formats under `out`; rows per dataset."""
    if fmt not in FORMATS:
        raise ExchangeError(f"export format must be one of {FORMATS} (got {fmt!r})")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table, columns in (("preference", "pairs", PREFERENCE), ("unpaired", "kto", UNPAIRED)):
        data = buffer.read(table).select(list(columns))
        if fmt == "parquet":
            pq.write_table(data, out / f"{name}.parquet")
        elif fmt == "jsonl":
            with open(out / f"{name}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in data.to_pylist())
        else:
            from datasets import Dataset

            Dataset(data).save_to_disk(str(out / name))
        written[name] = data.num_rows
    return written


def _turns(value, role: str) -> list[dict] | None:
    """A conversation from a string or a list of {role, content}; None when it is neither."""
    if isinstance(value, str) and value.strip():
        return user_turn(value) if role == "user" else assistant_turn(value)
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


class Imported(NamedTuple):
    table: str
    """The buffer table the rows go to: "pairs" or "kto"."""
    data: pa.Table
    """The good rows, at cycle 0."""
    skipped: int
    """Bad rows left out (`on_invalid: skip`)."""
    problems: list[str]


def _scores(value) -> dict[str, float] | None | bool:
    """Per-objective scores ({objective: number}); None when absent, False when malformed."""
    if value is None:
        return None
    if isinstance(value, str):  # a CSV cell
        try:
            value = json.loads(value)
        except ValueError:
            return False
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items()):
        return False
    return {k: float(v) for k, v in value.items()}


def _row_problems(row: dict, kind: str, prompt, others: dict) -> list[str]:
    bad = [f"{f} missing or empty" for f, v in {"prompt": prompt, **others}.items() if v is None]
    if kind == "kto" and not isinstance(row.get("label"), bool):
        bad.append("label must be a boolean")
    if kind == "pairs" and not bad and others["chosen"] == others["rejected"]:
        bad.append("chosen equals rejected (no preference)")
    for field in SCORED:
        if _scores(row.get(field)) is False:
            bad.append(f"{field} must map objective names to numbers")
    return bad


def import_file(path: Path, on_invalid: str = "error") -> Imported:
    """The buffer table ("pairs" or "kto") a user's file goes to, and its rows at cycle 0. A
    preference file may carry `chosen_scores` and `rejected_scores` ({objective: score}, as
    the judges store them), which MODPO's margins use. Bad rows stop the import in one line
    listing them, or with `on_invalid: skip` are left out and counted."""
    rows, unreadable = read_rows(path, "import file", ExchangeError)
    if not rows:
        raise ExchangeError(f"import file {path}: no rows of fields")
    fields = set(rows[0])
    kind = "pairs" if set(PREFERENCE) <= fields else "kto" if set(UNPAIRED) <= fields else None
    if kind is None:
        raise ExchangeError(f"import file {path}: needs the fields {list(PREFERENCE)} (preference) or "
                            f"{list(UNPAIRED)} (unpaired); found {sorted(fields)}")
    records, problems = [], list(unreadable)
    for i, row in enumerate(rows):
        prompt = _turns(row.get("prompt"), "user")
        others = ({"chosen": _turns(row.get("chosen"), "assistant"), "rejected": _turns(row.get("rejected"), "assistant")}
                  if kind == "pairs" else {"completion": _turns(row.get("completion"), "assistant")})
        bad = _row_problems(row, kind, prompt, others)
        if bad:
            problems.append(f"row {i}: {', '.join(bad)}")
            continue
        prompt_id = "import-" + hashlib.sha256(json.dumps(prompt).encode()).hexdigest()[:12]
        base = {"cycle": 0, "prompt_id": prompt_id, "harmful_level": None, "prompt": prompt}
        if kind == "kto":
            records.append({**base, **others, "label": row["label"]})
        else:
            records.append({**base, **others, **{field: _scores(row.get(field)) for field in SCORED}})
    if problems and (on_invalid == "error" or not records):
        raise ExchangeError(f"import file {path}: {listed(problems)}")
    data = pa.Table.from_pylist(records, schema=PAIRS if kind == "pairs" else KTO_EXAMPLES)
    return Imported(kind, data, len(problems), problems)


def unpaired(pairs: pa.Table) -> pa.Table:
    """KTO examples from preference pairs: each chosen answer desirable, each rejected not
    (TRL's `unpair_preference_dataset`)."""
    from datasets import Dataset
    from trl.data_utils import unpair_preference_dataset

    rows = unpair_preference_dataset(Dataset(pairs.select(["prompt_id", "harmful_level", *PREFERENCE]))).to_list()
    return pa.Table.from_pylist([{"cycle": pairs["cycle"][0].as_py() if pairs.num_rows else 0, **r} for r in rows],
                                schema=KTO_EXAMPLES)


def buffer_stats(buffer: PreferenceBuffer) -> dict[int, dict]:
    """Per cycle: rows per table, pairs per harm level, and the label balance of each judge."""
    stats: dict[int, dict] = {}
    for table, per_cycle in buffer.counts().items():
        for cycle, rows in per_cycle.items():
            stats.setdefault(cycle, {"rows": {}})["rows"][table] = rows
    for cycle, entry in stats.items():
        pairs = buffer.read("pairs", cycle)
        entry["pairs_by_harm_level"] = dict(sorted(Counter(pairs["harmful_level"].to_pylist()).items(),
                                                   key=lambda kv: (kv[0] is None, kv[0] or 0)))
        judged = buffer.read("judgments", cycle).select(["judge", "label"]).to_pylist()
        entry["labels"] = {judge: dict(Counter(r["label"] for r in judged if r["judge"] == judge))
                           for judge in sorted({r["judge"] for r in judged})}
    return dict(sorted(stats.items()))
