"""The ensemble judge: several judges' verdicts on one answer, combined per objective.

Labels: `vote` takes the label most members give, `weights` the label with the largest summed
weight; ties go to the earlier member, so the order of `members` is the tie-break a user sets.
Members that give no label (score-only judges) or are Unjudged do not vote; when no member
votes, the answer is Unjudged with every member's reason (unless no member gives labels at all). Scores: per objective, the weighted
mean over the members that give that objective.
"""

from __future__ import annotations

from raylign.evaluation.scoring import UNJUDGED
from raylign.judging.verdicts import Verdict


def combine(verdicts: list[Verdict], names: list[str], weights: list[float], mode: str,
            labelled: bool) -> Verdict:
    """`labelled`: some member gives labels, so the ensemble must give one (or be Unjudged)."""
    raw = "; ".join(f"{name}: {v.label or '-'} ({v.raw})" for name, v in zip(names, verdicts))
    latency = sum(v.latency_s for v in verdicts)  # members judge the batch one after another
    tally: dict[str, float] = {}
    for v, w in zip(verdicts, weights):
        if v.label not in (None, UNJUDGED):
            tally[v.label] = tally.get(v.label, 0.0) + (w if mode == "weights" else 1.0)
    totals: dict[str, tuple[float, float]] = {}
    for v, w in zip(verdicts, weights):
        for objective, score in v.scores.items():
            total, weight = totals.get(objective, (0.0, 0.0))
            totals[objective] = (total + w * score, weight + w)
    scores = {objective: total / weight for objective, (total, weight) in totals.items()}
    if labelled and not tally:
        return Verdict(UNJUDGED, raw, {}, latency)
    # max() keeps the first of equals, and dicts keep insertion order: ties go to the earlier member.
    return Verdict(max(tally, key=tally.get) if tally else None, raw, scores, latency)


class EnsembleJudge:
    def __init__(self, members: list, names: list[str], weights: list[float] | None, mode: str):
        self.members, self.names, self.mode = members, names, mode
        self.weights = weights or [1.0] * len(members)
        self.version = "ensemble(" + ",".join(f"{n}={m.version}" for n, m in zip(names, members)) + ")"

    @property
    def labels(self) -> bool:
        return any(m.labels for m in self.members)

    def label_all(self, rows: list[dict], policy=None) -> list[Verdict]:
        by_member = [member.label_all(rows, policy) for member in self.members]
        return [combine(list(row), self.names, self.weights, self.mode, self.labels) for row in zip(*by_member)]
