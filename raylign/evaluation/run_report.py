"""`raylign report`: reading runs, their figures and tables, the Markdown summary, and `build_report`.

Reads what each run stored (metrics.json, config.yaml, best.json, the held-out judgments in its
buffer) from a folder or a storage URI. Builds what both renderings show once: the headline, the
per-cycle table and trade-off plot of every suite, Safety Score by harm level, principle and
method, judge agreement, the candidates of each cycle, sample answers of the starting and the best
policy, and training figures; several runs are compared side by side. report.md holds the
headline, the tables and the best cycle; the HTML page is report_html.py's. A piece a run lacks
(a buffer, best.json, selection, a cycle a suite skipped, a NaN) shows as "—" or is left out.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402

from raylign.config import Config, ConfigError, parse_config  # noqa: E402
from raylign.data.schemas import JUDGMENTS  # noqa: E402
from raylign.evaluation.report import SUITE_COLUMNS  # noqa: E402
from raylign.evaluation.selection import BEST_FILE  # noqa: E402
from raylign.evaluation.suites import answer_stage, figure, primary  # noqa: E402
from raylign.storage import RunStorage  # noqa: E402
from raylign.timeline import TIMELINE_FILE, Interval, busy_shares, critical_path, of_records, span_s  # noqa: E402

DASH = "—"

TRADEOFF = {
    "cares": (("harmful_refusal_rate", "harmful requests refused (levels 2-3)"),
              ("erroneous_refusal_rate", "harmless questions refused (level 0)")),
    "over_refusal": (("unsafe_refusal_rate", "unsafe prompts refused"),
                     ("safe_refusal_rate", "safe prompts refused")),
}
"""The trade-off plot's axes per suite kind: (x key, x title), (y key, y title)."""

LEVELS = {0: "harmless", 1: "mildly harmful", 2: "moderately harmful", 3: "severely harmful"}
"""CARES harm levels, as the benchmark names them."""

SAMPLES_PER_LEVEL = 2


class Best(NamedTuple):
    """The cycle whose policy the report holds up against cycle 0."""

    cycle: int
    value: float | None
    """The selection objective's value, when the run measured one."""
    source: str
    """`best.json`, `selection` (the last record's best_cycle) or `last` (the run names none)."""
    objective: dict
    measured_on: tuple[str, ...] = ("selection",)
    """The suites the objective was read off; a run that does not select reads its reported one."""
    on_reported: bool = False


class Answer(NamedTuple):
    answer: str
    label: str
    verdict: str


class Sample(NamedTuple):
    level: int
    prompt_id: str
    prompt: str
    start: Answer
    best: Answer | None
    """None when the best policy is the starting one."""


class Run(NamedTuple):
    name: str
    storage: RunStorage
    records: list[dict]
    cfg: Config | None
    notes: list[str]
    """What the report could not read, said once at the top of the run's section."""
    best: Best
    samples: list[Sample]
    timeline: list[Interval] = []
    """What each role was busy with (timeline.json), when the run recorded it."""


class Table(NamedTuple):
    headers: list[str]
    rows: list[list[str]]
    marked: frozenset = frozenset()
    """Rows to highlight: the best cycle, the chosen candidate."""


# -- reading a run --------------------------------------------------------------------------


def load_run(location: str | Path | RunStorage) -> Run:
    """Everything the report shows of one run; ConfigError (one line) if it is not a run."""
    storage = RunStorage.of(location)
    if not storage.exists("metrics.json"):
        raise ConfigError(f"{storage.uri()} is not a raylign run: it has no metrics.json")
    try:
        records = json.loads(storage.read_text("metrics.json"))  # json reads NaN as nan
    except ValueError as e:
        raise ConfigError(f"{storage.uri('metrics.json')} is not valid JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(records, list) or not records:
        raise ConfigError(f"{storage.uri('metrics.json')} holds no evaluated cycle")
    records = sorted(records, key=lambda r: r["cycle"])
    notes: list[str] = []
    cfg = _config(storage, notes)
    best = _best(storage, records, notes)
    samples = _samples(storage, cfg, best.cycle, notes)
    return Run(storage.name, storage, records, cfg, notes, best, samples, _timeline(storage, notes))


def _timeline(storage: RunStorage, notes: list[str]) -> list[Interval]:
    if not storage.exists(TIMELINE_FILE):
        return []
    try:
        return of_records(json.loads(storage.read_text(TIMELINE_FILE)))
    except (ValueError, TypeError) as e:
        notes.append(f"{TIMELINE_FILE} cannot be read ({str(e).splitlines()[0]}): no timeline")
        return []


def _config(storage: RunStorage, notes: list[str]) -> Config | None:
    if not storage.exists("config.yaml"):
        notes.append("no config.yaml: algorithm, judges and the buffer are not known")
        return None
    try:
        return parse_config(storage.read_text("config.yaml"), storage.uri("config.yaml"))
    except ConfigError as e:  # a run written by another version of raylign: show what metrics.json holds
        notes.append(f"config.yaml could not be read ({e})")
        return None


def _best(storage: RunStorage, records: list[dict], notes: list[str]) -> Best:
    """best.json when the run wrote one, else the last record's best_cycle, else the last cycle."""
    cycles = {r["cycle"] for r in records}
    if storage.exists(BEST_FILE):
        try:
            best = json.loads(storage.read_text(BEST_FILE))
            if best.get("cycle") in cycles:
                return Best(best["cycle"], _num(best.get("value")), "best.json", best.get("objective") or {},
                            tuple(best.get("measured_on") or ("selection",)),
                            bool(best.get("chosen_on_reported_suite")))
            notes.append(f"best.json names cycle {best.get('cycle')}, which metrics.json does not hold")
        except (ValueError, AttributeError) as e:
            notes.append(f"best.json could not be read ({str(e).splitlines()[0]})")
    selection = records[-1].get("selection") or {}
    if selection.get("best_cycle") in cycles:
        value = next((_num((r.get("selection") or {}).get("value")) for r in records
                      if r["cycle"] == selection["best_cycle"]), None)
        return Best(selection["best_cycle"], value, "selection", {})
    return Best(records[-1]["cycle"], None, "last", {})


def _samples(storage: RunStorage, cfg: Config | None, best: int, notes: list[str]) -> list[Sample]:
    """For each harm level, the first prompts (by id) that both cycle 0 and the best cycle
    answered on the headline suite: judges[0]'s label and words on sample 0. Not chosen for
    being good examples, so that the page shows the policies as they are."""
    root = RunStorage(cfg.buffer.root) if cfg is not None and cfg.buffer.root else RunStorage(storage.uri("buffer"))
    judge = cfg.judges[0].name if cfg is not None else None
    stage = _headline_stage(cfg)
    try:
        start = _answers(root, 0, stage, judge)
        end = _answers(root, best, stage, judge) if best != 0 else start
    except (OSError, pa.ArrowException) as e:
        notes.append(f"the buffer at {root.uri()} could not be read ({str(e).splitlines()[0]})")
        return []
    samples = []  # none without a buffer: the section says so
    for level in LEVELS:
        ids = sorted(pid for pid, row in start.items() if row["harmful_level"] == level and pid in end)
        for pid in ids[:SAMPLES_PER_LEVEL]:
            samples.append(Sample(level, pid, start[pid]["prompt"] or "", _answer(start[pid]),
                                  _answer(end[pid]) if best != 0 else None))
    return samples


def _headline_stage(cfg: Config | None) -> str:
    """The buffer `stage` of the headline suite's answers (the run's own held-out split's without a config)."""
    headline = primary(cfg) if cfg is not None else None
    suite = next((s for s in cfg.evaluation.suites if s.name == headline), None) if headline else None
    return "eval" if suite is None else answer_stage(suite)


def _answers(root: RunStorage, cycle: int, stage: str, judge: str | None) -> dict[str, dict]:
    """Sample 0 of each prompt of `stage` in `cycle`, as `judge` (None: the first judge found) labelled it."""
    selector = pafs.FileSelector(f"{root.root}/judgments/cycle={cycle}", allow_not_found=True)
    files = sorted(i.path for i in root.fs.get_file_info(selector)
                   if i.is_file and i.base_name.endswith(".parquet") and not i.base_name.startswith("."))
    if not files:
        return {}
    wanted = (ds.field("stage") == stage) & (ds.field("sample_index") == 0)
    if judge is not None:
        wanted &= ds.field("judge") == judge
    rows = ds.dataset(files, schema=JUDGMENTS, format="parquet", filesystem=root.fs).to_table(
        columns=["prompt_id", "prompt", "harmful_level", "answer", "judge", "label", "verdict"], filter=wanted)
    rows = rows.to_pylist()
    judge = judge or (rows[0]["judge"] if rows else None)
    return {r["prompt_id"]: r for r in rows if r["judge"] == judge}


def _answer(row: dict) -> Answer:
    return Answer(row["answer"] or "", row["label"] or DASH, row["verdict"] or "")


# -- numbers --------------------------------------------------------------------------------


def _num(value) -> float | None:
    """A finite number, else None: metrics.json holds NaN for a group with no answers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _fmt(value, digits: int = 3) -> str:
    v = _num(value)
    return DASH if v is None else f"{v:.{digits}f}"


def _int(value) -> str:
    v = _num(value)
    return DASH if v is None else str(int(v))


def _g(value) -> str:
    """A hyperparameter as written (1e-05, 0.3)."""
    v = _num(value)
    return DASH if v is None else f"{v:g}"


def _record(run: Run, cycle: int) -> dict:
    return next((r for r in run.records if r["cycle"] == cycle), {})


def _suites(records: list[dict]) -> dict[str, str]:
    """Every suite the run reported, in order of first appearance, with its kind."""
    return {name: block.get("kind", "") for r in records for name, block in (r.get("suites") or {}).items()}


def _block(record: dict, suite: str) -> dict | None:
    """A suite's block of a record: a reported suite, or a selection suite (record["selection"])."""
    block = (record.get("suites") or {}).get(suite)
    if block is None:
        block = ((record.get("selection") or {}).get("suites") or {}).get(suite)
    return block if isinstance(block, dict) else None


def _best_cycle_in(records: list[dict]) -> int | None:
    return next(((r.get("selection") or {}).get("best_cycle") for r in reversed(records) if r.get("selection")), None)


def _chosen_in(records: list[dict]) -> dict[int, str]:
    return {r["cycle"]: r["selection"]["chosen"] for r in records if (r.get("selection") or {}).get("chosen")}


# -- plots ----------------------------------------------------------------------------------


def tradeoff_figure(records: list[dict], suite: str, marks: dict | None = None):
    """Harmful requests refused (x) against harmless ones refused (y), one point per cycle,
    labelled with its cycle and joined in cycle order: the over-refusal benchmarks' picture,
    where the ideal is the bottom-right corner. `suite` names a `cares` or `over_refusal`
    block of the records' `suites` (or of their `selection` suites). The best cycle gets a
    star and a cycle whose policy was a selected candidate its name, taken from the records'
    `selection`; `marks` overrides them: {"best": cycle or None, "chosen": {cycle: name},
    "label": the line's legend name}. Returns the matplotlib Figure; the caller closes it."""
    kind = next((b["kind"] for r in records if (b := _block(r, suite)) and "kind" in b), None)
    if kind not in TRADEOFF:
        raise ValueError(f"suite {suite!r} is {kind or 'not in these records'}: a trade-off plot needs a "
                         f"suite of kind {' or '.join(TRADEOFF)}")
    fig, ax = plt.subplots(figsize=(5.8, 4.6), dpi=100)
    _draw_tradeoff(ax, records, suite, kind, marks or {}, "C0")
    _tradeoff_frame(ax, kind)
    return fig


def tradeoff_png(records: list[dict], suite: str) -> bytes:
    """tradeoff_figure as PNG bytes (the trackers' image)."""
    fig = tradeoff_figure(records, suite)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


LABEL_OFFSETS = ((6, 5), (-6, 5), (6, -12), (-6, -12))
"""Where a point's label goes, in points: up right, then other corners for points close by."""


def _draw_tradeoff(ax, records: list[dict], suite: str, kind: str, marks: dict, color: str) -> None:
    (xkey, _), (ykey, _) = TRADEOFF[kind]
    points = []
    for r in records:  # a cycle the suite skipped (`every`) or a NaN leaves no point
        block = _block(r, suite) or {}
        x, y = _num(figure(block, xkey)), _num(figure(block, ykey))
        if x is not None and y is not None:
            points.append((r["cycle"], x, y))
    if not points:
        return
    ax.plot([p[1] for p in points], [p[2] for p in points], "-o", color=color, markersize=5, linewidth=1.5,
            label=marks.get("label"), zorder=2)
    chosen = marks["chosen"] if "chosen" in marks else _chosen_in(records)
    best = marks["best"] if "best" in marks else _best_cycle_in(records)
    for i, (cycle, x, y) in enumerate(points):
        text = f"{cycle}: {chosen[cycle]}" if cycle in chosen else str(cycle)
        # Cycles close together (a run that has converged) get their labels on other sides.
        near = sum(abs(x - px) < 0.06 and abs(y - py) < 0.06 for _, px, py in points[:i])
        dx, dy = (9, -16) if cycle == best else LABEL_OFFSETS[near % len(LABEL_OFFSETS)]  # clear of the star
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, color="#1f2933",
                    ha="left" if dx > 0 else "right", zorder=4)
        if cycle == best:
            ax.plot([x], [y], marker="*", markersize=17, color=color, markeredgecolor="#1f2933",
                    linestyle="none", zorder=3)


def _tradeoff_frame(ax, kind: str) -> None:
    (_, xtitle), (_, ytitle) = TRADEOFF[kind]
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"{xtitle}\nhigher is safer", fontsize=9)
    ax.set_ylabel(f"{ytitle}\nlower is better", fontsize=9)
    ax.grid(alpha=0.3)
    ax.plot([1], [0], marker="P", markersize=9, color="#2f9e44", linestyle="none", zorder=1)
    ax.annotate("ideal", (1, 0), xytext=(-8, 6), textcoords="offset points", ha="right", fontsize=8,
                color="#2f9e44")
    handles, labels = ax.get_legend_handles_labels()
    if any(labels):
        ax.legend(loc="upper left", fontsize=8)
    ax.figure.tight_layout()


def _comparison_figure(runs: list[Run], suite: str, kind: str):
    """The trade-off plot with one line per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    for i, run in enumerate(runs):
        _draw_tradeoff(ax, run.records, suite, kind, {"label": run.name, **_marks(run)}, f"C{i}")
    _tradeoff_frame(ax, kind)
    return fig


def _marks(run: Run) -> dict:
    """Star the best cycle only when the run named one (the last cycle stands in otherwise)."""
    return {"best": run.best.cycle if run.best.source != "last" else None}


def _groups_figure(series: list[tuple[str, dict]]):
    """Safety Score by harm level, principle and prompting method, one bar per (label, record):
    cycle 0 against the best, or cycle 0 alone when it is the best."""
    records = [record for _, record in series]
    groups = [(key, title, names) for key, title in GROUPS if (names := _group_names(key, *records))]
    fig, axes = plt.subplots(1, len(groups), figsize=(10.5, 3.2), dpi=100, squeeze=False, sharey=True,
                             gridspec_kw={"width_ratios": [max(len(names), 3) for _, _, names in groups]})
    width = 0.8 / len(series)
    for ax, (key, title, names) in zip(axes[0], groups):
        for j, ((label, record), color) in enumerate(zip(series, ("#9aa5b1", "#1f6fb2"))):
            values = [_num(figure(record, f"{key}.{n}")) for n in names]  # a group with no answers: no bar
            ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(len(names))],
                   [v if v is not None else 0 for v in values], width, label=label, color=color)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("_", " ") for n in names], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("Safety Score")
    # Above the plots: inside one, it covers the bars that reach the top.
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=8, loc="upper right", ncol=len(series), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


GROUPS = [("safety_by_level", "harm level"), ("safety_by_principle", "principle"),
          ("safety_by_method", "prompting method")]


def _group_names(key: str, *records: dict) -> list[str]:
    return sorted({name for record in records for name in record.get(key) or {}}, key=_group_order)


def _group_order(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
"""Left out of each SVG: a date would change the page on every write, and the rest names URLs."""


TIMELINE_COLORS = {"train": "#4477aa", "eval": "#66ccee", "learner": "#ee6677", "driver": "#999999"}


def timeline_figure(intervals: list[Interval]):
    """One row per actor, a bar per thing it did, seconds from the first; training answers
    dark, evaluation answers light, the learner red; the critical path outlined."""
    t0 = min(i.start for i in intervals)
    actors = sorted({i.actor for i in intervals}, key=lambda a: (["generator", "judge", "driver", "learner"].index(
        a.split(".")[0]) if a.split(".")[0] in ("generator", "judge", "driver", "learner") else 9, a))
    on_path = set(critical_path(intervals).chain)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(actors) + 1.2))
    for row, actor in enumerate(actors):
        for i in (i for i in intervals if i.actor == actor):
            kind = i.role if i.role in ("learner", "driver") else ("train" if i.stage == "train" else "eval")
            ax.broken_barh([(i.start - t0, i.seconds)], (row - 0.35, 0.7), facecolors=TIMELINE_COLORS[kind],
                           edgecolors="black" if i in on_path else "none", linewidth=0.8)
    ax.set_yticks(range(len(actors)), [a.rsplit(".", 1)[0] if a.startswith("judge.") else a for a in actors])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in TIMELINE_COLORS.values()]
    ax.legend(handles, ["training answers", "evaluation answers", "learner", "driver (pairs)"], loc="upper center",
              bbox_to_anchor=(0.5, -0.25 if len(actors) < 5 else -0.12), ncol=4, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def timeline_caption(intervals: list[Interval]) -> str:
    wall = span_s(intervals)
    path = critical_path(intervals)
    busy = ", ".join(f"{role} {share:.0%}" for role, share in busy_shares(intervals, wall).items())
    return (f"What each role was busy with, over the {wall:.0f} s from the first answer to the last. Busy "
            f"(per actor): {busy}. Outlined: the critical path, {path.seconds:.0f} s, the wall time with each role "
            "on hardware of its own (here they share the same cores).")


def _svg(fig) -> str:
    """The figure as inline SVG (no XML prolog), closed. Its ids hash what they define with a
    fixed salt: two plots on the page that share an id share what it defines."""
    out = io.StringIO()
    with plt.rc_context({"svg.hashsalt": "raylign-report"}):
        fig.savefig(out, format="svg", metadata=SVG_METADATA)
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg"):]


# -- tables: built once, rendered as HTML and as Markdown ----------------------------------


def headline_rows(run: Run) -> list[tuple[str, str, str, str]]:
    """(figure, cycle 0, best, what it means) for the headline: the figures a clinical safety lead reads."""
    start, best = run.records[0], _record(run, run.best.cycle)
    answers = _int(start.get("num_answers"))
    return [
        ("Safety Score", _fmt(start.get("safety_score")), _fmt(best.get("safety_score")),
         "How often the answer was the right kind for the question's harm level, as the CARES benchmark scores "
         "it: a full answer to a harmless question, care or a refusal as the risk rises. Averaged over "
         f"{answers} answers to questions the assistant never trained on; 1.000 is always right."),
        ("Harmful requests refused", _fmt(start.get("harmful_refusal_rate")), _fmt(best.get("harmful_refusal_rate")),
         "Of the requests a clinician would decline (harm levels 2 and 3), the share the assistant declined. "
         "Higher is safer."),
        ("Harmless questions wrongly refused", _fmt(start.get("erroneous_refusal_rate")),
         _fmt(best.get("erroneous_refusal_rate")),
         "Of the harmless health questions (harm level 0), the share the assistant refused to answer. Lower is "
         "better: each one leaves a person without help they should have had."),
    ]


def best_sentence(run: Run) -> str:
    best = run.best
    if best.source == "last":
        return (f"The run names no best cycle (no best.json and no selection in metrics.json): the last cycle, "
                f"{best.cycle}, stands in for it.")
    value = f", objective {_fmt(best.value)}" if best.value is not None else ""
    terms = [(w, k) for k, w in best.objective.items() if _num(w) is not None]
    weights = " ".join(f"{'−' if w < 0 else '+' if i else ''} {abs(w):g} × {k}" for i, (w, k) in enumerate(terms))
    on = ", ".join(best.measured_on)
    objective = f" ({weights.strip()}, measured on the {on} prompts)" if weights else ""
    where = "best.json" if best.source == "best.json" else "the last cycle's selection record"
    caveat = (" The run chose on no prompts set aside (it ran without selection), so this reads the reported "
              "suite itself, which flatters the best cycle." if best.on_reported else "")
    return f"Best cycle: {best.cycle}{value}{objective}, as {where} names it.{caveat}"


def cycle_table(run: Run, suite: str) -> Table | None:
    """One row per cycle that evaluated `suite`, its kind's columns; the best cycle starred."""
    rows, marked = [], set()
    kind = _suites(run.records).get(suite, "")
    columns = SUITE_COLUMNS.get(kind, [])
    for r in run.records:
        block = (r.get("suites") or {}).get(suite)
        if block is None:
            continue
        if r["cycle"] == run.best.cycle and run.best.source != "last":
            marked.add(len(rows))
        rows.append([_cycle_cell(run, r["cycle"])] + [_fmt(figure(block, key)) for _, key in columns])
    if not rows:
        return None
    return Table(["cycle"] + [title for title, _ in columns], rows, frozenset(marked))


def _cycle_cell(run: Run, cycle: int) -> str:
    return f"{cycle} ★" if cycle == run.best.cycle and run.best.source != "last" else str(cycle)


def group_table(run: Run, key: str, title: str) -> Table | None:
    start, best = run.records[0], _record(run, run.best.cycle)
    names = _group_names(key, start, best)
    if not names:
        return None
    rows = []
    for name in names:
        a, b = _num(figure(start, f"{key}.{name}")), _num(figure(best, f"{key}.{name}"))
        label = f"{name} {LEVELS[int(name)]}" if key == "safety_by_level" and name.isdigit() and int(name) in LEVELS \
            else name.replace("_", " ")
        rows.append([label, _fmt(a)] if run.best.cycle == 0 else
                    [label, _fmt(a), _fmt(b), DASH if a is None or b is None else f"{b - a:+.3f}"])
    return Table([title, "cycle 0"] + ([f"cycle {run.best.cycle}", "change"] if run.best.cycle != 0 else []), rows)


def agreement_tables(run: Run) -> list[tuple[str, Table]]:
    """Kappa per judge pair and cycle, then each pair's confusion matrix of the last cycle that has one."""
    rows, last = [], {}
    for r in run.records:
        for pair, a in (r.get("agreement") or {}).items():
            rows.append([str(r["cycle"]), pair.replace(",", " vs "), _fmt(a.get("kappa")), _fmt(a.get("observed")),
                         _int(a.get("n"))])
            last[pair] = (r["cycle"], a)
    if not rows:
        return []
    tables = [("Cohen's kappa per cycle", Table(["cycle", "judges", "kappa", "observed agreement", "answers"], rows))]
    for pair, (cycle, a) in last.items():
        confusion = a.get("confusion") or {}
        first, _, second = pair.partition(",")
        labels = list(dict.fromkeys([*confusion, *(k for row in confusion.values() for k in row)]))
        if labels:
            body = [[label] + [_int((confusion.get(label) or {}).get(other, 0)) for other in labels]
                    for label in labels]
            tables.append((f"Cycle {cycle}: rows {first}, columns {second}",
                           Table([f"{first} \\ {second}"] + labels, body)))
    return tables


def selection_table(run: Run) -> Table | None:
    rows, marked = [], set()
    for r in run.records:
        s = r.get("selection")
        if not s:
            continue
        if r["cycle"] == run.best.cycle:
            marked.add(len(rows))
        rows.append([_cycle_cell(run, r["cycle"]), s.get("chosen") or DASH, _fmt(s.get("value")),
                     _text(s.get("best_cycle")), _text(s.get("start_next"))])
    return Table(["cycle", "chosen", "objective", "best so far", "next cycle starts from"], rows,
                 frozenset(marked)) if rows else None


def candidates_table(run: Run) -> Table | None:
    """Every cycle's candidates side by side: what each changed, its objective and selection
    figures, its training, the winner marked."""
    rows, marked = [], set()
    for r in run.records:
        for c in (r.get("selection") or {}).get("candidates") or []:
            block = next(iter((c.get("suites") or {}).values()), {}) or {}
            block = (c.get("suites") or {}).get("selection", block)
            figures = [_fmt(figure(block, key)) for _, key in _selection_columns(block)]
            train = c.get("training") or {}
            if c.get("chosen"):
                marked.add(len(rows))
            rows.append([str(r["cycle"]), f"{c.get('name', DASH)}{' ✓' if c.get('chosen') else ''}",
                         c.get("algorithm") or DASH, _g(c.get("beta")), _g(c.get("learning_rate")),
                         c.get("loss_type") or DASH, _fmt(c.get("value")), *figures,
                         _int(train.get("examples")), _int(train.get("steps")), _fmt(train.get("mean_loss")),
                         _fmt(train.get("final_loss"))])
    if not rows:
        return None
    return Table(["cycle", "candidate", "algorithm", "beta", "learning rate", "loss", "objective",
                  "safety", "harmful refused", "harmless refused", "examples", "steps", "mean loss", "final loss"],
                 rows, frozenset(marked))


def _selection_columns(block: dict) -> list[tuple[str, str]]:
    """Three figures of a candidate's selection suite: the cares trade-off, else its kind's first three."""
    if block.get("kind", "cares") == "cares":
        return [("safety", "safety_score"), ("harmful refused", "harmful_refusal_rate"),
                ("harmless refused", "erroneous_refusal_rate")]
    return (SUITE_COLUMNS.get(block.get("kind"), []) + [("", "")] * 3)[:3]


TRAINING_COLUMNS = [("algorithm", "algorithm", str), ("pairs", "pairs", _int), ("examples", "examples", _int),
                    ("steps", "steps", _int), ("desirable", "desirable", _int),
                    ("undesirable", "undesirable", _int), ("desirable weight", "desirable_weight", _fmt),
                    ("undesirable weight", "undesirable_weight", _fmt), ("mean loss", "mean_loss", _fmt),
                    ("final loss", "final_loss", _fmt), ("duplicates dropped", "duplicates_dropped", _int),
                    ("replayed", "replayed", _int), ("retries", "retries", _int)]
"""The training table: (heading, key of the record's `training`, formatter)."""


def training_table(run: Run) -> Table | None:
    rows = []
    for r in run.records:
        train = r.get("training")
        if train:
            rows.append([str(r["cycle"])] + [DASH if train.get(key) is None else fmt(train[key])
                                             for _, key, fmt in TRAINING_COLUMNS])
    return Table(["cycle"] + [title for title, _, _ in TRAINING_COLUMNS], rows) if rows else None


def logs_table(run: Run) -> Table | None:
    """Per cycle, what the conversation logs gave: conversations, prompts, what was left out,
    the harm levels the prompt classifier gave (unknown: left out of the Safety Score) and the
    redactions by kind (counts only: the values never reach the run)."""
    rows = []
    for r in run.records:
        logs = r.get("logs")
        if logs:
            levels = logs.get("levels") or {}
            rows.append([str(r["cycle"]), _int(logs.get("conversations")), _int(logs.get("prompts")),
                         _int(logs.get("duplicate_conversations")), _int(logs.get("duplicate_prompts")),
                         _int(logs.get("bad_lines")), _int(logs.get("unredacted")),
                         " / ".join(_int(levels.get(k)) for k in ("0", "1", "2", "3")), _int(levels.get("unknown")),
                         ", ".join(f"{k} {v}" for k, v in (logs.get("redactions") or {}).items()) or DASH])
    if not rows:
        return None
    return Table(["cycle", "conversations", "prompts", "duplicate conversations", "duplicate prompts", "bad lines",
                  "not redactable", "levels 0 / 1 / 2 / 3", "unknown level", "redacted"], rows)


def seconds_table(run: Run) -> Table | None:
    stages = list(dict.fromkeys(k for r in run.records for k in (r.get("seconds") or {})))
    if not stages:
        return None
    rows = []
    for r in run.records:
        seconds = r.get("seconds") or {}
        total = sum(v for v in (_num(seconds.get(s)) for s in stages) if v is not None)
        rows.append([str(r["cycle"])] + [_fmt(seconds.get(s), 1) for s in stages] + [f"{total:.1f}"])
    return Table(["cycle"] + [s.replace("_", " ") for s in stages] + ["total"], rows)


def comparison_table(runs: list[Run]) -> Table:
    """One column per run: its headline figures at cycle 0 and at its best (or last) cycle."""
    heads = [headline_rows(run) for run in runs]
    rows = []
    for i, (title, _, _, _) in enumerate(heads[0]):
        rows.append([f"{title}, cycle 0"] + [h[i][1] for h in heads])
        rows.append([f"{title}, best"] + [h[i][2] for h in heads])
    rows.append(["best cycle"] + [f"{run.best.cycle}{'' if run.best.source != 'last' else ' (last)'}" for run in runs])
    rows.append(["invalid answers, best"] + [_fmt(_record(run, run.best.cycle).get("invalid_rate")) for run in runs])
    rows.append(["trained with"] + [_trained_with(run) for run in runs])
    rows.append(["cycles evaluated"] + [str(len(run.records)) for run in runs])
    return Table(["figure"] + _run_titles(runs), rows)


def _run_titles(runs: list[Run]) -> list[str]:
    """Run names, or their full locations where two share a name."""
    names = [run.name for run in runs]
    return [run.name if names.count(run.name) == 1 else run.storage.uri() for run in runs]


def _best_title(run: Run) -> str:
    return f"{'last' if run.best.source == 'last' else 'best'} (cycle {run.best.cycle})"


def _trained_with(run: Run) -> str:
    if run.cfg is None:
        algorithms = dict.fromkeys((r.get("training") or {}).get("algorithm") for r in run.records)
        return ", ".join(a for a in algorithms if a) or DASH
    if run.cfg.selection.candidates:
        return "selected among " + ", ".join(c.label for c in run.cfg.selection.candidates)
    return run.cfg.algorithm


def _text(value) -> str:
    return DASH if value is None else str(value)


NUMERIC = re.compile(r"^(?:[-+]?\d[\d.,]*(?:e[-+]?\d+)?%?(?: ★| \(last\))?|—)$")
"""A cell that reads as a number (or a dash): right-aligned in the HTML and the Markdown tables."""


# -- Markdown -------------------------------------------------------------------------------


def md_table(table: Table) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    numeric = [i > 0 and all(NUMERIC.match(row[i]) for row in table.rows) and any(row[i] != DASH for row in table.rows)
               for i in range(len(table.headers))]
    lines = ["| " + " | ".join(cell(h) for h in table.headers) + " |",
             "|" + "|".join("---:" if right else ":---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(runs: list[Run]) -> str:
    out = ["# raylign report: " + ", ".join(_run_titles(runs)), ""]
    if len(runs) > 1:
        out += ["## Runs side by side", "", md_table(comparison_table(runs)), ""]
    for run in runs:
        out += [f"## {run.name}" if len(runs) > 1 else f"`{run.storage.uri()}`", ""]
        out += [f"- {n}" for n in run.notes] + ([""] if run.notes else [])
        rows = [[title, a, b, meaning] for title, a, b, meaning in headline_rows(run)]
        out += [md_table(Table(["figure", "start (cycle 0)", _best_title(run), "what it means"], rows)), "",
                f"**{best_sentence(run)}**", ""]
        for suite, kind in _suites(run.records).items():
            table = cycle_table(run, suite)
            if table is not None:
                out += [f"### {suite} ({kind}) per cycle", "", md_table(table), ""]
        for title, table in (("Candidates per cycle", candidates_table(run)), ("Selection", selection_table(run)),
                             ("Conversation logs", logs_table(run))):
            if table is not None:
                out += [f"### {title}", "", md_table(table), ""]
    return "\n".join(out).rstrip() + "\n"


# -- the command ----------------------------------------------------------------------------


def build_report(runs: list[str | Path | RunStorage], out: str | Path | None = None) -> tuple[str, str]:
    """report.html and report.md of `runs` (folders or storage URIs) in `out` (default: the
    single run's own storage); returns where they were written."""
    if not runs:
        raise ConfigError("report needs at least one run")
    if out is None and len(runs) > 1:
        raise ConfigError(f"a report of {len(runs)} runs needs --out, a folder or URI to write it to")
    from raylign.evaluation.report_html import render_html  # report_html imports this module
    loaded = [load_run(run) for run in runs]
    where = RunStorage.of(out) if out is not None else loaded[0].storage
    return where.write_text("report.html", render_html(loaded)), where.write_text("report.md", render_markdown(loaded))
