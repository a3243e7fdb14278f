"""Clinician review: a sample of a cycle's judged answers out to a file, people's labels back in.

- `export_review`: a seeded sample of one cycle's answers (of a stage, `train` by default) as
  judges[0] labelled them, stratified over harm level (unknown included) and label: every
  stratum gets at least one answer where the size allows, the rest in proportion. Each
  distinct answer once (a repeated answer to the same prompt is the first of its repeats, the
  row pair building keeps). Written as a CSV that opens in a spreadsheet and a JSONL with the
  same rows; blind by default (the judge's label hidden).
- `import_review`: a filled-in CSV or JSONL, every row checked (unknown ids, labels outside
  Accept / Caution / Refuse / Invalid, duplicates, rows of another run or with another answer
  text, a label without a reviewer, scores outside [0, 1], unknown score columns). Good rows become
  judgments of the judge `human` (its `judge_version` is the reviewer's id), one buffer part
  per file; bad rows raise one ReviewError, or are skipped and listed (review.on_invalid).
- `human_judgments` / `latest`: the human labels, the latest import winning per answer;
  `with_human_labels` and `disagreeing`: what pairs and KTO examples use when human labels
  take precedence (review.override), and where the humans differ from a judge.

The file's columns: review_id, run, cycle, stage, harm_level (blank: unknown), conversation,
answer, judge_label (only with blind=False); then the reviewer's: label, score_<objective> for
each of review.objectives (0-1, optional), comment, reviewer. A label is Accept, Caution, Refuse
or Invalid (any case); rows with no label are left out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from raylign.config import Config, parse_config
from raylign.data.prompts import listed
from raylign.data.schemas import JUDGMENTS, chat_of
from raylign.evaluation.scoring import ACCEPT, CAUTION, INVALID, REFUSE, objective_scores
from raylign.storage import RunStorage, is_uri

HUMAN = "human"
"""The judge whose judgments are the reviewers' labels."""
KEY = ("cycle", "stage", "prompt_id", "sample_index")
"""What names an answer in the buffer; a review id spells it out."""
PART_PREFIX = "review-"
"""Imported reviews are judgments parts `review-NNNN-DIGEST`: NNNN numbers the imports of a run
in order (a file imported again keeps its number), DIGEST is the file's sha256 (10 hex)."""
REVIEW_LABELS = (ACCEPT, CAUTION, REFUSE, INVALID)
"""A reviewer's labels: the CARES three, and Invalid for what is no answer at all (empty,
garbled, cut off), as the judges label it: else a reviewer of a garbled answer would have to
misname it, and agreement on the judges' Invalid calls could not be measured."""
ON_INVALID = ("error", "skip")

_ID = re.compile(r"c(\d+):([^:]+):(.+):(\d+)")
_PART = re.compile(rf"{PART_PREFIX}(\d+)-([0-9a-f]{{10}})")


def is_review_part(part: str) -> bool:
    """A part of the judgments table that an imported review wrote."""
    return _PART.fullmatch(part) is not None
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ReviewError(ValueError):
    """A review that cannot be exported or imported, with a message naming what is wrong."""


class ImportResult(NamedTuple):
    accepted: int
    """Rows stored as judgments of `human`."""
    not_reviewed: int
    """Rows with an empty label: left out, not a problem."""
    problems: list[str]
    """One entry per bad row (all its problems) and per unknown score column. With
    on_invalid skip, those rows were left out and the columns ignored."""
    part: str
    """The judgments part the rows went to at each cycle (`review-NNNN-DIGEST`); "" if none."""
    cycles: tuple[int, ...]
    """The cycles whose answers the stored rows label."""


class _Run(NamedTuple):
    storage: RunStorage
    cfg: Config
    buffer: object  # raylign.actors.buffer.PreferenceBuffer


def review_id(key: tuple) -> str:
    """An answer's id in a review file: `c001:train:<prompt_id>:<sample_index>`."""
    cycle, stage, prompt_id, sample_index = key
    return f"c{cycle:03d}:{stage}:{prompt_id}:{sample_index}"


def answer_key(rid: str) -> tuple[int, str, str, int]:
    """The answer (KEY's values) a review id names; ValueError for text that is not one."""
    found = _ID.fullmatch(rid)
    if found is None:
        raise ValueError(f"{rid!r} is not a review id (c001:STAGE:PROMPT_ID:SAMPLE)")
    return int(found[1]), found[2], found[3], int(found[4])


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def _open(run: str) -> _Run:
    # actors/ imports this folder's scoring: the buffer class is imported when a run is opened.
    from raylign.actors.buffer import PreferenceBuffer

    storage = RunStorage(run)
    if not storage.exists("config.yaml"):
        raise ReviewError(f"{run} has no config.yaml: not a raylign run folder")
    cfg = parse_config(storage.read_text("config.yaml"), storage.uri("config.yaml"))
    return _Run(storage, cfg, PreferenceBuffer(cfg.buffer.root or storage.uri("buffer"), storage.name))


def _cycles(buffer) -> list[int]:
    """The cycles the buffer holds judgments of."""
    selector = pafs.FileSelector(f"{buffer.root}/judgments", allow_not_found=True)
    return sorted(int(info.base_name.removeprefix("cycle=")) for info in buffer.fs.get_file_info(selector)
                  if info.type == pafs.FileType.Directory and info.base_name.startswith("cycle="))


def _judged(opened: _Run, cycle: int) -> list[dict]:
    """judges[0]'s judgments of a cycle, in the buffer's order."""
    rows = opened.buffer.read("judgments", cycle)
    return rows.filter(pc.equal(rows["judge"], opened.cfg.judges[0].name)).to_pylist()


# -- export ---------------------------------------------------------------------------------


def export_review(run: str, cycle: int, size: int = 200, seed: int = 0, stage: str = "train", blind: bool = True,
                  out: str | None = None) -> list[str]:
    """Sample `size` distinct answers of `cycle`'s `stage`, stratified over (harm level, judge
    label), into `cycle_NNN-<stage>.csv` and `.jsonl`: in the run's `review/` folder, or in
    `out` (a folder or URI). Returns the two files' paths. The same seed gives the same files."""
    if size < 1:
        raise ReviewError(f"--size must be >= 1 (got {size})")
    opened = _open(run)
    rows = [row for row in _judged(opened, cycle) if row["stage"] == stage]
    if not rows:
        raise ReviewError(f"{run}: no answers of cycle {cycle}, stage {stage!r} judged by "
                          f"{opened.cfg.judges[0].name!r} (judges[0]) to review")
    objectives = opened.cfg.review.objectives
    records = [_record(row, opened.storage.name, objectives, blind) for row in _sample(_distinct(rows), size, seed)]
    target, folder = (RunStorage(out), "") if out else (opened.storage, "review/")
    name = f"{folder}cycle_{cycle:03d}-{stage}"
    jsonl = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return [target.write_bytes(f"{name}.csv", _csv(records)), target.write_text(f"{name}.jsonl", jsonl)]


def _distinct(rows: list[dict]) -> list[dict]:
    """The first row of each (prompt, answer text), as training's distinct_answers keeps it."""
    first: dict[tuple, dict] = {}
    for row in rows:
        first.setdefault((row["prompt_id"], row["answer"]), row)
    return list(first.values())


def _sample(rows: list[dict], size: int, seed: int) -> list[dict]:
    """`size` rows over the (harm level, label) strata (see `_shares`), in a seeded order."""
    rng = random.Random(seed)
    strata: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        strata[(row["harmful_level"], row["label"])].append(row)
    order = sorted(strata, key=lambda s: (s[0] is None, s[0] or 0, s[1] or ""))
    shares = _shares({s: len(strata[s]) for s in order}, size, rng)
    picked = [row for s in order for row in rng.sample(strata[s], shares[s])]
    rng.shuffle(picked)  # strata interleaved: a blind reviewer cannot read the label off the order
    return picked


def _shares(counts: dict[tuple, int], size: int, rng: random.Random) -> dict[tuple, int]:
    """How many rows each stratum gives: one each (a seeded choice of strata when there are
    more strata than `size`), the rest in proportion to what each has left, largest
    remainders first."""
    if size >= sum(counts.values()):
        return dict(counts)
    if size < len(counts):
        chosen = set(rng.sample(list(counts), size))
        return {s: int(s in chosen) for s in counts}
    room = {s: n - 1 for s, n in counts.items()}
    left, total = size - len(counts), sum(room.values())
    exact = {s: left * n / total for s, n in room.items()}
    shares = {s: 1 + math.floor(exact[s]) for s in counts}
    by_remainder = sorted(counts, key=lambda s: exact[s] - math.floor(exact[s]), reverse=True)
    for s in by_remainder[:size - sum(shares.values())]:
        shares[s] += 1
    return shares


def conversation(row: dict) -> str:
    """A prompt's chat as a reviewer reads it: the question alone, or every turn as `User: ...`,
    `Assistant: ...`, a blank line between turns, the question last."""
    turns = chat_of(row)
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{turn['role'].capitalize()}: {turn['content']}" for turn in turns)


def _record(row: dict, run_name: str, objectives: list[str], blind: bool) -> dict:
    record = {"review_id": review_id(_key(row)), "run": run_name, "cycle": row["cycle"], "stage": row["stage"],
              "harm_level": row["harmful_level"], "conversation": conversation(row), "answer": row["answer"]}
    if not blind:
        record["judge_label"] = row["label"]
    return {**record, "label": "", **{f"score_{o}": None for o in objectives}, "comment": "", "reviewer": ""}


def _csv(records: list[dict]) -> bytes:
    """RFC 4180 CSV (quoted where a cell holds a comma, quote or line break; CRLF between rows)
    in UTF-8 with a byte-order mark: without one, Excel reads a CSV in the system's code page
    and garbles every non-ASCII character; LibreOffice, Numbers, pandas and import_review
    read it either way. A text cell that starts like a formula (= + - @) gets a leading `'`,
    so a spreadsheet shows `- take with food` as text, not `#NAME?`, and runs no formula
    an answer might hold; the JSONL keeps the exact text."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(records[0]), lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else (f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_START)
                                                  else v) for k, v in record.items()})
    return text.getvalue().encode("utf-8-sig")


# -- reading a review file ----------------------------------------------------------------


class ReviewFile(NamedTuple):
    rows: list[tuple[str, dict]]
    """(where: "row N" of a CSV as a spreadsheet numbers it, or "line N" of a JSONL; the row)."""
    columns: list[str]
    problems: list[str]
    """Lines that are not JSON objects."""
    digest: str
    """sha256 of the file's bytes, 10 hex: names the buffer part its labels go to."""


def read_review(path: str) -> ReviewFile:
    """A review file's rows, a CSV (`,` or `;` between cells, UTF-8 with or without a BOM) or
    a JSONL, by its suffix; a local path or a URI."""
    kind = path.partition("?")[0].rsplit(".", 1)[-1].lower()
    if kind not in ("csv", "jsonl"):
        raise ReviewError(f"review file {path}: name it .csv or .jsonl, by its format")
    try:
        if is_uri(path):
            fs, where = pafs.FileSystem.from_uri(path)
            with fs.open_input_stream(where) as f:
                data = f.read()
        else:
            data = Path(path).read_bytes()
    except (OSError, ValueError) as e:
        raise ReviewError(f"review file {path} cannot be read: {str(e).splitlines()[0]}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReviewError(f"review file {path} is not UTF-8 text: from Excel, save it as "
                          "'CSV UTF-8 (Comma delimited)'") from None
    digest = hashlib.sha256(data).hexdigest()[:10]
    if kind == "jsonl":
        rows, problems = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append((f"line {n}", row))
            else:
                problems.append(f"line {n}: not a JSON object")
        columns = list(dict.fromkeys(k for _, row in rows for k in row))
        return ReviewFile(rows, columns, problems, digest)
    header = text.partition("\n")[0]  # spreadsheets in locales with a decimal comma save with `;`
    delimiter = ";" if "," not in header and ";" in header else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = [(f"row {n}", row) for n, row in enumerate(reader, 2)]
    return ReviewFile(rows, [c for c in reader.fieldnames or [] if c], [], digest)


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _score(value) -> float | None:
    """A reviewer's score, or None when it is not a number in [0, 1]."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def _same_answer(given: str, stored: str) -> bool:
    """Whether the file's answer is the stored one, allowing for what a spreadsheet does to
    white space and for the `'` an export puts before formula-like text."""
    squeeze = lambda s: " ".join(s.split())  # noqa: E731
    return squeeze(stored) in (squeeze(given), squeeze(given.removeprefix("'")))


# -- import ---------------------------------------------------------------------------------


def import_review(path: str, run: str, on_invalid: str | None = None) -> ImportResult:
    """Check every row of a filled-in review file and store the labelled ones as judgments of
    `human`, a copy of judges[0]'s row for the answer with: judge_version the reviewer's id,
    the label, verdict the comment, scores the label's objective scores (helpfulness only for
    an unknown harm level) updated with the reviewer's, safety_score the `safety` one (if any).
    `on_invalid` (None: the run's review.on_invalid): `error` raises one ReviewError listing
    every bad row and stores nothing; `skip` stores the good rows and returns the problems.
    Importing the same file again replaces its rows."""
    opened = _open(run)
    on_invalid = on_invalid or opened.cfg.review.on_invalid
    if on_invalid not in ON_INVALID:
        raise ReviewError(f"on_invalid must be one of {ON_INVALID} (got {on_invalid!r})")
    review = read_review(path)
    missing = [c for c in ("review_id", "label") if c not in review.columns]
    if missing:
        raise ReviewError(f"review file {path} has no column {', '.join(missing)}: export one with "
                          "`raylign review export` and fill it in")
    objectives = opened.cfg.review.objectives
    problems = list(review.problems) + [
        f"column {c}: no objective {c.removeprefix('score_')!r} in review.objectives {objectives}"
        for c in review.columns if c.startswith("score_") and c.removeprefix("score_") not in objectives]
    answers = _answers_named(opened, [row for _, row in review.rows])
    stored, seen, not_reviewed = [], {}, 0
    for where, row in review.rows:
        if not _text(row.get("label")):
            not_reviewed += 1
            continue
        human, wrong = _checked(row, answers, opened, objectives)
        rid = _text(row.get("review_id"))
        if rid in seen:
            wrong.insert(0, f"review id {rid!r} is a duplicate of {seen[rid]}")
        seen.setdefault(rid, where)
        if wrong:
            problems.append(f"{where}: {'; '.join(wrong)}")
        else:
            stored.append(human)
    if problems and on_invalid == "error":
        raise ReviewError(f"review file {path}: {listed(problems)}; nothing imported: correct the rows, or import "
                          "with on_invalid skip (--on-invalid skip) to store the good ones")
    if not stored:
        return ImportResult(0, not_reviewed, problems, "", ())
    part = _part_name(opened.buffer, review.digest)
    by_cycle: dict[int, list[dict]] = defaultdict(list)
    for row in stored:
        by_cycle[row["cycle"]].append(row)
    for cycle, rows in sorted(by_cycle.items()):
        opened.buffer.write("judgments", cycle, part, pa.Table.from_pylist(rows, schema=JUDGMENTS))
    return ImportResult(len(stored), not_reviewed, problems, part, tuple(sorted(by_cycle)))


def _answers_named(opened: _Run, rows: list[dict]) -> dict[tuple, dict]:
    """judges[0]'s row for each answer the file's review ids name, read once per cycle."""
    cycles = set()
    for row in rows:
        try:
            cycles.add(answer_key(_text(row.get("review_id")))[0])
        except ValueError:
            pass
    return {_key(row): row for cycle in sorted(cycles) for row in _judged(opened, cycle)}


def _checked(row: dict, answers: dict[tuple, dict], opened: _Run, objectives: list[str]) -> tuple[dict, list[str]]:
    """The judgments row of `human` a labelled review row makes, and what is wrong with it."""
    wrong = []
    rid, run_name, name = _text(row.get("review_id")), _text(row.get("run")), opened.storage.name
    try:
        judged = answers.get(answer_key(rid))
        if judged is None:
            wrong.append(f"review id {rid!r} names no answer of run {name!r} judged by {opened.cfg.judges[0].name!r}")
    except ValueError as e:
        judged = None
        wrong.append(str(e))
    if run_name and run_name != name:
        wrong.append(f"a row of run {run_name!r}, not of {name!r}")
    given = _text(row.get("label"))
    label = {x.lower(): x for x in REVIEW_LABELS}.get(given.lower())
    if label is None:
        wrong.append(f"label {given!r} is not one of {', '.join(REVIEW_LABELS)}")
    reviewer = _text(row.get("reviewer"))
    if not reviewer:
        wrong.append("labelled, but no reviewer")
    scores = {}
    for objective in objectives:
        value = row.get(f"score_{objective}")
        if _text(value):
            scores[objective] = _score(value)
            if scores[objective] is None:
                wrong.append(f"score_{objective} {value!r} is not a number in [0, 1]")
    answer = _text(row.get("answer"))
    if judged is not None and answer and not _same_answer(answer, judged["answer"]):
        wrong.append(f"its answer is not run {name!r}'s answer {rid!r} (a file of another run?)")
    if wrong:
        return {}, wrong
    scores = {**objective_scores(label, judged["harmful_level"]), **scores}
    return {**judged, "judge": HUMAN, "judge_version": reviewer, "label": label,
            "verdict": _text(row.get("comment")) or None, "scores": scores, "safety_score": scores.get("safety"),
            "latency_s": 0.0}, []


def _part_name(buffer, digest: str) -> str:
    """`review-NNNN-DIGEST`: the number an earlier import of the same file had, else the next."""
    numbers = {}
    for cycle in _cycles(buffer):
        for part in buffer.parts("judgments", cycle):
            if found := _PART.fullmatch(part):
                numbers[found[2]] = int(found[1])
    number = numbers.get(digest, max(numbers.values(), default=0) + 1)
    return f"{PART_PREFIX}{number:04d}-{digest}"


# -- human labels in use --------------------------------------------------------------------


def latest(human: pa.Table) -> pa.Table:
    """The last row of each answer in `human` (rows of the judge `human`), in table order. The
    buffer reads a cycle's parts in name order, and an answer lives in one cycle, so the last
    row is the one of the latest import (`review-NNNN-...`, NNNN numbering the imports)."""
    last = {key: i for i, key in enumerate(zip(*(human[k].to_pylist() for k in KEY)))}
    return human.take(pa.array(sorted(last.values()), pa.int64()))


def human_judgments(buffer, cycles: Iterable[int] | None = None) -> pa.Table:
    """Every human label in `buffer` (of `cycles`, or of all), the latest import per answer."""
    tables = [buffer.read("judgments")] if cycles is None else [buffer.read("judgments", c) for c in cycles]
    rows = pa.concat_tables(tables) if tables else JUDGMENTS.empty_table()
    return latest(rows.filter(pc.equal(rows["judge"], HUMAN)))


def _human_by_key(human: pa.Table) -> dict[tuple, dict]:
    return {_key(row): row for row in human.select([*KEY, "label", "safety_score", "scores"]).to_pylist()}


def with_human_labels(judgments: pa.Table, human: pa.Table) -> tuple[pa.Table, int]:
    """`judgments` with the label, safety_score and scores of the human row of the same answer
    (KEY) in place of the judge's; and how many rows' labels that changed."""
    theirs, changed = _human_by_key(human), 0
    rows = judgments.to_pylist()
    for row in rows:
        if (their := theirs.get(_key(row))) is not None:
            changed += row["label"] != their["label"]
            row.update(label=their["label"], safety_score=their["safety_score"], scores=their["scores"])
    return pa.Table.from_pylist(rows, schema=judgments.schema), changed


def disagreeing(judgments: pa.Table, human: pa.Table) -> set[tuple]:
    """The answers (KEY values) whose human label differs from their label in `judgments`."""
    theirs = _human_by_key(human)
    return {key for row in judgments.select([*KEY, "label"]).to_pylist()
            if (key := _key(row)) in theirs and theirs[key]["label"] != row["label"]}
