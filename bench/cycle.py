"""Cycle timelines with generation overlapping training and without, side by side in one run.

    python bench/cycle.py [--set cycles=2 ...]

Runs the embedded default (or it with --set) three times from the same seed, one after the
other in one Ray session, and reads each run's timeline (raylign/timeline.py):

- alone: pipeline.fuse false, max_staleness 0: every stage by itself, as raylign ran before
  pipelining; its stage seconds are "the stages measured alone";
- off: the default (fused passes, max_staleness 0): cycle n's evaluation and cycle n+1's
  training answers in one pass of the engines; the same answers, so the same table;
- on: max_staleness 1: cycle n+1's training answers are generated and judged while cycle n
  trains, by the policy cycle n started from.

For each it prints the table, each role's busy share of the run's wall time, the critical
path (the longest chain of dependent intervals, by role), and two ratios to the sum of the
stages measured alone: the wall time here, where every role shares the same cores, and the
critical path, which is the wall time the same timeline takes with each role on hardware of
its own, the figure that carries to a cluster. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import ray

from raylign.config import load_config
from raylign.driver import Driver
from raylign.evaluation import report
from raylign.timeline import TIMELINE_FILE, busy_shares, critical_path, of_records, span_s

SETTINGS = {
    "alone": ["pipeline.fuse=false", "pipeline.max_staleness=0"],
    "off": ["pipeline.fuse=true", "pipeline.max_staleness=0"],
    "on": ["pipeline.fuse=true", "pipeline.max_staleness=1"],
}


def measured(run_dir: str, records: list[dict]) -> dict:
    intervals = of_records(json.loads(open(f"{run_dir}/{TIMELINE_FILE}").read()))
    wall = span_s(intervals)
    path = critical_path(intervals)
    stages = sum(s for r in records for name, s in r["seconds"].items() if name != "load")
    return {"wall_s": round(wall, 1), "stages_s": round(stages, 1), "critical_path_s": round(path.seconds, 1),
            "path_by_role": {k: round(v, 1) for k, v in path.by_role().items()},
            "busy": busy_shares(intervals, wall), "safety": [r["safety_score"] for r in records],
            "harmful_refused": [r["harmful_refusal_rate"] for r in records],
            "harmless_refused": [r["erroneous_refusal_rate"] for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="bench-cycle-")
    results = {}
    ray.init(num_cpus=load_config(overrides=args.set).ray.num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    for name, overrides in SETTINGS.items():
        cfg = load_config(overrides=[*args.set, *overrides])
        run_dir = f"{out}/{name}"
        records = Driver(cfg, run_dir, log=lambda _: None).run()
        results[name] = measured(run_dir, records)
        table = report.format_table(records, [s.name for s in cfg.evaluation.suites])
        print(f"\n== {name}: {' '.join(overrides)}\n{table}")
    ray.shutdown()
    alone = results["alone"]["stages_s"]
    print(f"\nstages measured alone (pipeline.fuse false): {alone:.1f}s")
    print(f"{'setting':8} {'wall s':>7} {'wall/alone':>10} {'critical s':>10} {'critical/alone':>14}  busy share "
          "(per actor)                        critical path by role")
    for name, r in results.items():
        r["wall_over_alone"] = round(r["wall_s"] / alone, 3)
        r["critical_over_alone"] = round(r["critical_path_s"] / alone, 3)
        busy = "  ".join(f"{role} {share:.2f}" for role, share in r["busy"].items())
        path = "  ".join(f"{role} {s:.1f}s" for role, s in r["path_by_role"].items())
        print(f"{name:8} {r['wall_s']:7.1f} {r['wall_over_alone']:10.3f} {r['critical_path_s']:10.1f} "
              f"{r['critical_over_alone']:14.3f}  {busy:50} {path}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
