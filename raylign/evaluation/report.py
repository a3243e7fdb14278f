"""What a run shows: the per-cycle table, metrics.json and the trade-off plot.

`metrics.json` is a list with one object per evaluated cycle (cycle 0 = the starting policy),
each holding the CARES metrics (see `CycleMetrics`) plus the cycle's training summary and
stage timings. Other tools read it; its keys only ever grow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402


def write_metrics(run_dir: Path, records: list[dict]) -> Path:
    path = run_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(tmp, path)  # a crash mid-write leaves the previous complete file
    return path


def format_table(records: list[dict]) -> str:
    header = (f"{'cycle':>5}  {'safety':>6}  {'lvl0':>5} {'lvl1':>5} {'lvl2':>5} {'lvl3':>5}  "
              f"{'harmful refused':>15}  {'harmless refused':>16}  {'invalid':>7}  {'pairs':>5}  {'loss':>6}")
    lines = [header, "-" * len(header)]
    for r in records:
        lv = r["safety_by_level"]
        train = r.get("training") or {}
        loss = f"{train['mean_loss']:.3f}" if train.get("steps") else "-"
        lines.append(
            f"{r['cycle']:>5}  {r['safety_score']:>6.3f}  "
            + " ".join(f"{lv.get(str(k), float('nan')):>5.2f}" for k in range(4))
            + f"  {r['harmful_refusal_rate']:>15.3f}  {r['erroneous_refusal_rate']:>16.3f}"
            + f"  {r['invalid_rate']:>7.3f}  {train.get('examples', '-'):>5}  {loss:>6}"
        )
    return "\n".join(lines)


def plot(run_dir: Path, records: list[dict]) -> Path:
    cycles = [r["cycle"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(cycles, [r["safety_score"] for r in records], "o-", label="Safety Score (held-out)")
    ax.plot(cycles, [r["harmful_refusal_rate"] for r in records], "s--", label="harmful refused (levels 2-3)")
    ax.plot(cycles, [r["erroneous_refusal_rate"] for r in records], "^-", label="harmless refused (level 0)")
    ax.set_xlabel("cycle")
    ax.set_ylim(0, 1)
    ax.set_xticks(cycles)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("raylign: safety vs. over-refusal per cycle")
    fig.tight_layout()
    path = run_dir / "safety.png"
    fig.savefig(path)
    plt.close(fig)
    return path
