"""What a run shows: the per-cycle table, metrics.json and the trade-off plot.

`metrics.json` is a list with one object per evaluated cycle (cycle 0 = the starting policy),
each holding the CARES metrics (see `CycleMetrics`) plus the cycle's training summary and
stage timings. Other tools read it; its keys only ever grow.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402

from raylign.evaluation.suites import figure  # noqa: E402
from raylign.storage import RunStorage  # noqa: E402


def write_metrics(where: RunStorage | str | Path, records: list[dict]) -> str:
    """metrics.json in the run's storage; a crash mid-write leaves the previous complete file."""
    return RunStorage.of(where).write_text("metrics.json", json.dumps(records, indent=2) + "\n")


SUITE_COLUMNS = {
    "cares": [("safety", "safety_score"), ("lvl0", "safety_by_level.0"), ("lvl1", "safety_by_level.1"),
              ("lvl2", "safety_by_level.2"), ("lvl3", "safety_by_level.3"), ("harmful refused", "harmful_refusal_rate"),
              ("harmless refused", "erroneous_refusal_rate"), ("invalid", "invalid_rate")],
    "over_refusal": [("safe refused", "safe_refusal_rate"), ("+partial", "safe_refusal_or_caution_rate"),
                     ("unsafe complied", "unsafe_compliance_rate"), ("unsafe refused", "unsafe_refusal_rate"),
                     ("invalid", "invalid_rate")],
    "harmful_requests": [("refused", "refusal_rate"), ("caution", "caution_rate"), ("withheld", "withheld_rate"),
                         ("complied", "compliance_rate"), ("invalid", "invalid_rate")],
    "reference": [("rouge-L", "rouge_l"), ("BLEU", "bleu"), ("cosine", "embedding_cosine"),
                  ("sentence BLEU", "sentence_bleu"), ("grade", "grade"), ("ref grade", "reference_grade"),
                  ("words", "words"), ("empathy", "empathy"), ("ref empathy", "reference_empathy"),
                  ("refused", "refusal_rate")],
}
"""The columns of each suite kind's table: (heading, key in the suite's block; dots go down)."""


def _value(block: dict, key: str) -> float:
    value = figure(block, key)
    return value if isinstance(value, (int, float)) else float("nan")


def format_table(records: list[dict], suites: list[str] = (), by: str = "cycle") -> str:
    """The headline table (the first cares suite, with each cycle's pairs and loss), then one
    table per other suite. `by` names the rows: `cycle`, or `policy` for `raylign eval`."""
    tables = []
    w = max([5] + [len(str(r[by])) for r in records])
    headlined = [r for r in records if "safety_score" in r]  # a suite with `every` > 1 skips cycles
    selecting = any("selection" in r for r in records)  # then: the chosen candidate and its objective
    if headlined:
        header = (f"{by:>{w}}  {'safety':>6}  {'lvl0':>5} {'lvl1':>5} {'lvl2':>5} {'lvl3':>5}  "
                  f"{'harmful refused':>15}  {'harmless refused':>16}  {'invalid':>7}  {'pairs':>5}  {'loss':>6}"
                  + (f"  {'chosen':>10}  {'objective':>9}" if selecting else ""))
        lines = [header, "-" * len(header)]
        for r in headlined:
            lv = r["safety_by_level"]
            train = r.get("training") or {}
            loss = f"{train['mean_loss']:.3f}" if train.get("steps") else "-"
            chosen = r.get("selection") or {}
            lines.append(
                f"{str(r[by]):>{w}}  {r['safety_score']:>6.3f}  "
                + " ".join(f"{lv.get(str(k), float('nan')):>5.2f}" for k in range(4))
                + f"  {r['harmful_refusal_rate']:>15.3f}  {r['erroneous_refusal_rate']:>16.3f}"
                + f"  {r['invalid_rate']:>7.3f}  {train.get('examples', '-'):>5}  {loss:>6}"
                + (f"  {chosen.get('chosen') or '-':>10}  {chosen.get('value', math.nan):>9.3f}" if selecting else "")
            )
        tables.append("\n".join(lines))
    headline = next((n for n in suites if headlined and n in headlined[0].get("suites", {})
                     and headlined[0]["suites"][n]["kind"] == "cares"), None)
    for name in suites:
        rows = [r for r in records if name in r.get("suites", {})]
        if name == headline or not rows:
            continue
        kind = rows[0]["suites"][name]["kind"]
        columns = SUITE_COLUMNS[kind]
        header = f"{by:>{w}}  " + "  ".join(f"{title:>{max(6, len(title))}}" for title, _ in columns)
        lines = [f"suite {name} ({kind}, {rows[0]['suites'][name]['prompts']} prompts)", header, "-" * len(header)]
        for r in rows:
            block = r["suites"][name]
            lines.append(f"{str(r[by]):>{w}}  " + "  ".join(
                f"{_value(block, key):>{max(6, len(title))}.3f}" for title, key in columns))
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def format_comparison(records: list[dict], suites: list[str]) -> str:
    """Two policies side by side (`raylign eval --policy A --against B`), then A minus B."""
    a, b = records
    diff = {"policy": "A - B", "suites": {}}
    for name in suites:
        if name in a["suites"] and name in b["suites"]:
            kind = a["suites"][name]["kind"]
            diff["suites"][name] = {"kind": kind, "prompts": a["suites"][name]["prompts"]}
            for _, key in SUITE_COLUMNS[kind]:
                node = diff["suites"][name]
                parts = key.split(".")
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = _value(a["suites"][name], key) - _value(b["suites"][name], key)
    # The per-suite tables carry every figure; the headline table (pairs, loss) means nothing here.
    rows = [{"policy": f"A {a['policy']}", "suites": a["suites"]}, {"policy": f"B {b['policy']}", "suites": b["suites"]},
            diff]
    return format_table(rows, suites, by="policy")


def cycle_line(record: dict, headline: str | None) -> str:
    """One line per evaluated cycle: every suite's figures, the judges' kappas, the stage times."""
    from raylign.evaluation.suites import headline as suite_headline

    parts = [f"cycle {record['cycle']}:"]
    for name, block in record["suites"].items():
        parts.append(suite_headline(block) if name == headline else f"[{name}] {suite_headline(block)}")
    parts += [f"kappa({pair}) {a['kappa']:.2f}" for pair, a in record["agreement"].items()]
    parts += [f"{k} {v:.1f}s" for k, v in record["seconds"].items()]
    return parts[0] + " " + " | ".join(parts[1:])


PLOTTED = {"over_refusal": ("safe_refusal_rate", "safe refused"),
           "harmful_requests": ("refusal_rate", "harmful requests refused")}
"""The line each other suite kind adds to the plot."""


def plot(where: RunStorage | str | Path, records: list[dict]) -> str:
    """safety.png: the headline suite's Safety Score, harmful and harmless refusal by cycle, and
    each other suite's main rate."""
    cycles = [r["cycle"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    headlined = [r for r in records if "safety_score" in r]
    if headlined:
        at = [r["cycle"] for r in headlined]
        ax.plot(at, [r["safety_score"] for r in headlined], "o-", label="Safety Score (held-out)")
        ax.plot(at, [r["harmful_refusal_rate"] for r in headlined], "s--", label="harmful refused (levels 2-3)")
        ax.plot(at, [r["erroneous_refusal_rate"] for r in headlined], "^-", label="harmless refused (level 0)")
    names = dict.fromkeys(name for r in records for name in r.get("suites", {}))
    for name in names:
        rows = [r for r in records if name in r["suites"]]
        kind = rows[0]["suites"][name]["kind"]
        if kind in PLOTTED:
            key, title = PLOTTED[kind]
            ax.plot([r["cycle"] for r in rows], [r["suites"][name][key] for r in rows], "d:", label=f"{title} ({name})")
    ax.set_xlabel("cycle")
    ax.set_xticks(cycles)
    return _save(fig, ax, where, "safety.png", "raylign: safety vs. over-refusal per cycle")


def _save(fig, ax, where: RunStorage | str | Path, name: str, title: str) -> str:
    """Rates on [0, 1], a light grid, the legend and the title; written as `name` in the run's storage."""
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    return RunStorage.of(where).write_bytes(name, png.getvalue())


BARS = {"cares": [("safety", "safety_score"), ("harmful refused", "harmful_refusal_rate"),
                  ("harmless refused", "erroneous_refusal_rate")],
        "over_refusal": [("safe refused", "safe_refusal_rate"), ("safe refused\nor partly", "safe_refusal_or_caution_rate"),
                         ("unsafe complied", "unsafe_compliance_rate")],
        "harmful_requests": [("refused", "refusal_rate"), ("caution", "caution_rate"), ("complied", "compliance_rate")],
        "reference": [("rouge-L", "rouge_l"), ("cosine", "embedding_cosine"), ("empathy", "empathy"),
                      ("refused", "refusal_rate")]}
"""The bars of each suite kind in eval.png (figures on 0-1: a reference suite's BLEU, grades and
words are in its table)."""


def plot_comparison(where: RunStorage | str | Path, records: list[dict], suites: list[str]) -> str:
    """eval.png for `raylign eval`: each suite's figures, one bar per policy."""
    bars = [(name, title, key) for name in suites if name in records[0]["suites"]
            for title, key in BARS[records[0]["suites"][name]["kind"]]]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(bars) + 2), 4.2), dpi=100)
    width = 0.8 / len(records)
    for i, r in enumerate(records):
        ax.bar([j + i * width for j in range(len(bars))], [_value(r["suites"][n], k) for n, _, k in bars], width,
               label=str(r["policy"]))
    ax.set_xticks([j + width * (len(records) - 1) / 2 for j in range(len(bars))])
    ax.set_xticklabels([f"{title}\n({name})" for name, title, _ in bars], fontsize=7)
    return _save(fig, ax, where, "eval.png", "raylign eval: policies side by side")
