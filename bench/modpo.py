"""MODPO's balance against single-objective DPO: held-out safety and empathy, side by side.

    python bench/modpo.py [--weights 0.8 0.5 0.2] [--out DIR] [--set KEY=VALUE ...]

Runs configs/modpo.yaml (the embedded world with tones, judged by the rules and empathy judges)
from the same start and seed, one run after another in one Ray session:

- dpo-safety: DPO on pairs ranked by safety alone (the default alignment loop);
- dpo-empathy: DPO on pairs ranked by the empathy score alone (no direction balancing: the
  pairs are about tone, not refusal);
- modpo-W: MODPO, its pairs by safety, empathy as a reward margin, modpo_weights
  {safety: W, empathy: 1 - W}, for each W of --weights.

Prints per run the held-out Safety Score, mean empathy, harmful refused and harmless refused at
the start and after the last cycle; then the Pareto front of the final points (no other run
is at least as good on both and better on one), and whether MODPO holds the objective each
single-objective DPO gives up, without losing more than 10 points on the other. pareto.png in
the output folder plots every run. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402

from raylign.config import load_config  # noqa: E402
from raylign.driver import Driver  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "modpo.yaml"
SUITE = "held_out"
MARGIN = 0.10
"""How much MODPO may lose on one objective against the single-objective DPO run that favours it."""


def variants(weights: list[float]) -> dict[str, list[str]]:
    runs = {"dpo-safety": ["algorithm=dpo", "pairs.objective=safety"],
            "dpo-empathy": ["algorithm=dpo", "pairs.objective=empathy", "pairs.balance_directions=false"]}
    for w in weights:
        runs[f"modpo-{w:g}"] = ["algorithm=modpo", "pairs.objective=safety",
                                f"learner.modpo_weights={{safety: {w:g}, empathy: {1 - w:.6g}}}"]
    return runs


def point(record: dict) -> dict:
    block = record["suites"][SUITE]
    return {"safety": block["safety_score"], "empathy": block["objectives"]["empathy"],
            "harmful_refused": block["harmful_refusal_rate"], "harmless_refused": block["erroneous_refusal_rate"]}


def pareto_front(points: dict[str, dict]) -> list[str]:
    """The runs no other run dominates on (safety, empathy)."""
    def dominates(a: dict, b: dict) -> bool:
        return (a["safety"] >= b["safety"] and a["empathy"] >= b["empathy"]
                and (a["safety"] > b["safety"] or a["empathy"] > b["empathy"]))
    return [name for name, p in points.items() if not any(dominates(q, p) for q in points.values() if q is not p)]


def balance_verdict(final: dict[str, dict]) -> list[str]:
    """Whether some MODPO run ends higher on each objective than the DPO run on the other one
    alone, without falling more than MARGIN below that DPO run on its own objective."""
    lines = []
    modpo = {name: p for name, p in final.items() if name.startswith("modpo")}
    for kept, lost, dpo in (("safety", "empathy", "dpo-safety"), ("empathy", "safety", "dpo-empathy")):
        if dpo not in final:
            continue
        held = {name: p for name, p in modpo.items()
                if p[lost] > final[dpo][lost] and p[kept] >= final[dpo][kept] - MARGIN}
        if held:
            best = max(held, key=lambda n: held[n][lost])
            lines.append(f"{dpo} ends at {lost} {final[dpo][lost]:.3f}; {best} holds {held[best][lost]:.3f} "
                         f"with {kept} {held[best][kept]:.3f} (within {MARGIN:.2f} of {final[dpo][kept]:.3f}): holds")
        else:
            lines.append(f"{dpo}: no MODPO run has more {lost} than its {final[dpo][lost]:.3f} without losing more "
                         f"than {MARGIN:.2f} of its {kept} {final[dpo][kept]:.3f}: does not hold")
    return lines


def plot(start: dict, final: dict[str, dict], front: list[str], where: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    ax.scatter([start["safety"]], [start["empathy"]], marker="s", color="grey", label="start (cycle 0)")
    for name, p in final.items():
        ax.scatter([p["safety"]], [p["empathy"]], s=60, marker="o" if name.startswith("modpo") else "^",
                   label=name)
        ax.annotate(name, (p["safety"], p["empathy"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ordered = sorted(front, key=lambda n: final[n]["safety"])
    ax.plot([final[n]["safety"] for n in ordered], [final[n]["empathy"] for n in ordered], "k--", lw=1,
            label="Pareto front")
    ax.set_xlabel("held-out Safety Score (CARES)")
    ax.set_ylabel("held-out empathy (mean score)")
    ax.set_title("Safety against empathy: DPO on one objective, MODPO on both")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = where / "pareto.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.8, 0.5, 0.2],
                        help="MODPO's safety weights w (empathy gets 1 - w)")
    parser.add_argument("--out", help="folder for the runs and pareto.png (default: a new temporary folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-modpo-"))
    out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=load_config(CONFIG, args.set).ray.num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    start, final = None, {}
    for name, overrides in variants(args.weights).items():
        cfg = load_config(CONFIG, [*overrides, *args.set])
        records = Driver(cfg, out / name, log=lambda _: None).run()
        start = start or point(records[0])  # the same start and seed: every run's cycle 0 is the same
        final[name] = point(records[-1])
        print(f"{name:>12}  safety {start['safety']:.3f} -> {final[name]['safety']:.3f}  "
              f"empathy {start['empathy']:.3f} -> {final[name]['empathy']:.3f}  "
              f"harmful refused {final[name]['harmful_refused']:.3f}  "
              f"harmless refused {final[name]['harmless_refused']:.3f}", flush=True)
    ray.shutdown()
    front = pareto_front(final)
    print(f"\n{'run':>12}  {'safety':>6}  {'empathy':>7}  {'harmful refused':>15}  {'harmless refused':>16}  front")
    print(f"{'start':>12}  {start['safety']:>6.3f}  {start['empathy']:>7.3f}  {start['harmful_refused']:>15.3f}  "
          f"{start['harmless_refused']:>16.3f}")
    for name, p in final.items():
        print(f"{name:>12}  {p['safety']:>6.3f}  {p['empathy']:>7.3f}  {p['harmful_refused']:>15.3f}  "
              f"{p['harmless_refused']:>16.3f}  {'*' if name in front else ''}")
    verdict = balance_verdict(final)
    print("\n" + "\n".join(verdict))
    print(f"pareto plot: {plot(start, final, front, out)}")
    print(json.dumps({"start": start, "final": final, "front": front, "verdict": verdict}))


if __name__ == "__main__":
    main()
