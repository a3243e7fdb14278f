"""Prompt sources: where rows come from, in the forms public data is published in.

A source (`SourceConfig`) is one of:
- `embedded`: the bundled CARES-schema prompt set;
- a file, `.jsonl`, `.json`, `.parquet` or `.csv`;
- a folder of split files: every such file below it, the split named by the file (`test.jsonl`,
  `data/train-00000-of-00001.parquet`: the name less its shard suffix; a file named only by its
  shard number, `default/test/0000.parquet`, by its folder), unless the rows carry a `split`;
- a folder written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict);
- a hub dataset id, read with `datasets.load_dataset` (`revision`, `subset`, `splits`); the
  same path reads a local folder in the hub's layout (`loader: hub`).

`read_source` returns each row under raylign's field names (the `fields` map renames columns,
`values` fills fields the source lacks) with its `split`. Rows without an `id` get one derived
from their content: a hash of the split and the mapped fields, plus `-2`, `-3`... on repeats
of the same row. A content hash, not the row's position, because the same row must get the
same id wherever it is loaded: a re-sharded, filtered or re-ordered copy of a dataset, a hub
revision that appends rows, a file read on another machine; buffer rows and resumed runs join
prompts by id.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from pathlib import Path
from typing import NamedTuple

import pyarrow.csv
import pyarrow.parquet as pq

from raylign.config import SourceConfig

EMBEDDED_PROMPTS = "cares_prompts.jsonl"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
METADATA_FILES = {"dataset_infos.json", "dataset_info.json", "dataset_dict.json", "state.json"}
"""JSON files a hub dataset repository or a `datasets` folder holds beside its rows: not rows."""
_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+(?:-.*)?$")  # train-00000-of-00001[-hash]


class SourceError(ValueError):
    """A source that cannot be read: one line naming it and what to do."""


class SourceRows(NamedTuple):
    rows: list[dict]
    """Rows under raylign's field names (unmapped columns kept as they are), each with `split`."""
    unreadable: list[str]
    """Lines that could not be read at all (JSONL lines that are not JSON objects)."""
    where: str
    """The source, for messages: `prompt file x.jsonl`, `hub dataset org/name`, ..."""


def read_source(cfg: SourceConfig, what: str = "prompts") -> SourceRows:
    """Every row of the source, mapped and with ids; `what` names the config key in messages
    (`prompts`, `suite xstest`)."""
    if cfg.path == "embedded":
        # raylign.data, not raylign: run as `python ~/cli.py` (what `ray submit` does) next to the
        # repository at ~/raylign, `raylign` itself is a namespace package over the repository.
        resource = importlib.resources.files("raylign.data") / EMBEDDED_PROMPTS
        with importlib.resources.as_file(resource) as path:
            rows, unreadable = read_rows(path, error=SourceError)
        return _finish(cfg, what, rows, unreadable, "embedded prompt set")
    path = Path(cfg.path).expanduser()
    loader = cfg.loader
    if loader == "auto":
        if path.is_file() or path.suffix in FILE_SUFFIXES:
            loader = "files"
        elif path.is_dir():
            loader = "saved" if _is_saved_dataset(path) else "files"
        else:
            loader = "hub"
    if loader == "files":
        rows, unreadable = _read_files(path, what)
        if cfg.splits is not None:
            rows = [row for row in rows if row.get("split") in cfg.splits]
        kind = "prompt file" if path.is_file() else "prompt folder"
        return _finish(cfg, what, rows, unreadable, f"{kind} {path}")
    if loader == "saved":
        return _finish(cfg, what, _read_saved(path, cfg, what), [], f"saved dataset {path}")
    return _finish(cfg, what, _read_hub(cfg, what), [], f"hub dataset {cfg.path}")


def read_rows(path: Path, what: str = "prompt file", error: type[ValueError] | None = None) -> tuple[list[dict], list[str]]:
    """A JSONL, JSON, Parquet or CSV file's rows as dicts, and the lines that could not be read
    at all (JSONL only: a line that is not a JSON object). A file that cannot be read raises
    `error` (SourceError by default), naming it as `what`."""
    error = error or SourceError
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


# -- the loaders ---------------------------------------------------------------------------

def split_of_file(path: Path) -> str:
    """The split a file's name gives: `test.jsonl` test, `train-00000-of-00002.parquet` train,
    `test/0000.parquet` test (a file named only by its shard number takes its folder's name)."""
    stem = path.name.split(".")[0]
    if stem.isdigit():
        return path.parent.name
    match = _SHARD.match(stem)
    return match["split"] if match else stem


def _read_files(path: Path, what: str) -> tuple[list[dict], list[str]]:
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix in FILE_SUFFIXES and f.is_file()
                       and f.name not in METADATA_FILES
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not files:
            raise SourceError(f"{what}: folder {path} holds no {', '.join(FILE_SUFFIXES)} files")
    else:
        files = [path]
    rows, unreadable = [], []
    for f in files:
        file_rows, bad = read_rows(f, error=SourceError)
        name = split_of_file(f)
        rows += [{"split": name, **row} if "split" not in row else row for row in file_rows]
        unreadable += [f"{f.name} {problem}" if len(files) > 1 else problem for problem in bad]
    return rows, unreadable


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _dataset_rows(dataset, wanted: list[str] | None, where: str) -> list[dict]:
    """Rows of a Dataset (split `train`, as `datasets` names a lone split) or a DatasetDict."""
    import datasets

    splits = dataset if isinstance(dataset, datasets.DatasetDict) else {"train": dataset}
    if wanted is not None:
        missing = [s for s in wanted if s not in splits]
        if missing:
            raise SourceError(f"{where}: no split(s) {missing}; it has {sorted(splits)}")
        splits = {name: splits[name] for name in wanted}
    rows = []
    for name, part in splits.items():
        # Class labels as their names ("safe", not 0), as the dataset's own viewer shows them.
        labelled = {col: f for col, f in part.features.items() if isinstance(f, datasets.ClassLabel)}
        for row in part.data.table.to_pylist():
            row.update({col: f.int2str(row[col]) for col, f in labelled.items() if row[col] is not None})
            rows.append({"split": name, **row} if "split" not in row else row)
    return rows


def _read_saved(path: Path, cfg: SourceConfig, what: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise SourceError(f"{what}: saved dataset {path} could not be read: {str(e).splitlines()[0]}") from None
    return _dataset_rows(dataset, cfg.splits, f"{what}: saved dataset {path}")


def _read_hub(cfg: SourceConfig, what: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(cfg.path, name=cfg.subset, revision=cfg.revision)
    except Exception as e:  # noqa: BLE001 - no hub, no such dataset, no access: all one line
        local = Path(cfg.path).expanduser().exists()
        hint = ("" if local else "; no such local file or folder either. Where no hub is reachable, download the "
                "dataset elsewhere and give its local folder (the files as the hub lays them out, or a "
                "save_to_disk folder): it loads offline")
        first = (str(e).splitlines() or [""])[0][:300]
        raise SourceError(f"{what}.path {cfg.path!r}: `datasets.load_dataset` could not load it "
                          f"({type(e).__name__}: {first}){hint}") from None
    return _dataset_rows(dataset, cfg.splits, f"{what}: hub dataset {cfg.path}")


# -- mapping and ids -----------------------------------------------------------------------

def _finish(cfg: SourceConfig, what: str, rows: list[dict], unreadable: list[str], where: str) -> SourceRows:
    columns = {name for row in rows for name in row}
    for field, column in cfg.fields.items():
        if rows and column not in columns:
            raise SourceError(f"{where}: {what}.fields.{field} maps to column {column!r}, which it does not "
                              f"have; its columns are {sorted(columns)}")
    if cfg.fields or cfg.values:
        rows = [_mapped(row, cfg) for row in rows]
    if rows and not any("id" in row for row in rows):
        rows = with_derived_ids(rows)
    return SourceRows(rows, unreadable, where)


def _mapped(row: dict, cfg: SourceConfig) -> dict:
    out = {k: v for k, v in row.items() if k not in cfg.fields}
    for field, column in cfg.fields.items():
        out[field] = row.get(column)
    for field, value in cfg.values.items():
        out.setdefault(field, value)
    return out


def derived_id(row: dict) -> str:
    """A hash of the row's split and content (its fields, in a fixed order)."""
    content = json.dumps({k: row[k] for k in sorted(row)}, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def with_derived_ids(rows: list[dict]) -> list[dict]:
    """Each row with an id from its content; identical rows get `-2`, `-3`... in their order."""
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        base = derived_id(row)
        seen[base] = seen.get(base, 0) + 1
        out.append({**row, "id": base if seen[base] == 1 else f"{base}-{seen[base]}"})
    return out
