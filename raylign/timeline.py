"""The run's timeline: what each role was busy with, and how long the cycles would take on
hardware of their own.

Every interval names the actor that did the work (`generator.0`, `judge.rules.PID`,
`learner`, `driver`), the cycle and buffer stage of the data it made, and its start and end
(wall-clock seconds, each on its own node: a duration never mixes two clocks). The critical
path is the longest chain of dependent intervals: an answer is judged after it was generated,
pairs are built once the cycle's training answers (and the evaluation before them) are judged,
the learner trains on them, and an engine answers with a policy once the learner made it; an
actor does one thing at a time.
On a machine where every role shares the cores, that chain is the wall time the same work
takes with each role on hardware of its own: the figure that carries to a cluster.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, NamedTuple

GENERATOR, JUDGE, LEARNER, DRIVER = "generator", "judge", "learner", "driver"

TIMELINE_FILE = "timeline.json"
"""In the run's storage: every Interval so far, as a JSON list, rewritten after every cycle."""


class Interval(NamedTuple):
    actor: str
    """`generator.I`, `judge.NAME.PID`, `learner` or `driver`: one actor does one thing at a time."""
    cycle: int
    stage: str
    """The buffer stage of the answers (train, eval, ...), or the driver's stage (build_data, train)."""
    batch: int | None
    start: float
    end: float
    policy: int | None = None
    """A generator's: the version of the policy that answered (the cycle whose training made it)."""

    @property
    def role(self) -> str:
        return self.actor.split(".")[0]

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def label(self) -> str:
        return f"{self.actor} cycle {self.cycle} {self.stage}" + ("" if self.batch is None else f" batch {self.batch}")


def _dependencies(intervals: list[Interval]) -> list[list[int]]:
    """For each interval, the indices of those it waited for."""
    generated = {(i.cycle, i.stage, i.batch): n for n, i in enumerate(intervals) if i.role == GENERATOR}
    judged_train, judged_eval = defaultdict(list), defaultdict(list)
    built, trained = {}, {}
    for n, i in enumerate(intervals):
        if i.role == JUDGE:
            (judged_train if i.stage == "train" else judged_eval)[i.cycle].append(n)
        elif i.role == DRIVER and i.stage == "build_data":
            built[i.cycle] = n
        elif i.role == LEARNER:
            trained[i.cycle] = n
    deps: list[list[int]] = [[] for _ in intervals]
    previous: dict[str, int] = {}
    for n in sorted(range(len(intervals)), key=lambda n: intervals[n].start):
        i = intervals[n]
        if i.actor in previous:
            deps[n].append(previous[i.actor])
        previous[i.actor] = n
        if i.role == GENERATOR and i.policy in trained:
            deps[n].append(trained[i.policy])
        elif i.role == JUDGE and (i.cycle, i.stage, i.batch) in generated:
            deps[n].append(generated[(i.cycle, i.stage, i.batch)])
        elif i.role == DRIVER and i.stage == "build_data":
            # The cycle's training answers judged, and (the driver's order) the last evaluation.
            deps[n] += judged_train[i.cycle] + judged_eval[i.cycle - 1]
        elif i.role == LEARNER and i.cycle in built:
            deps[n].append(built[i.cycle])
    return deps


class CriticalPath(NamedTuple):
    seconds: float
    """The wall time of the work on separate hardware: the longest chain of dependent intervals."""
    chain: list[Interval]
    """That chain, first to last."""

    def by_role(self) -> dict[str, float]:
        """Seconds of the chain each role accounts for."""
        out: dict[str, float] = defaultdict(float)
        for i in self.chain:
            out[i.role] += i.seconds
        return dict(out)


def critical_path(intervals: Iterable[Interval]) -> CriticalPath:
    intervals = list(intervals)
    if not intervals:
        return CriticalPath(0.0, [])
    deps = _dependencies(intervals)
    finish, via = [0.0] * len(intervals), [None] * len(intervals)
    for n in sorted(range(len(intervals)), key=lambda n: intervals[n].start):  # a dependency starts first
        before = max(deps[n], key=lambda d: finish[d], default=None)
        finish[n] = intervals[n].seconds + (0.0 if before is None else finish[before])
        via[n] = before
    last = max(range(len(intervals)), key=lambda n: finish[n])
    chain = []
    while last is not None:
        chain.append(intervals[last])
        last = via[last]
    return CriticalPath(round(max(finish), 3), chain[::-1])


def span_s(intervals: Iterable[Interval]) -> float:
    """Seconds from the first interval's start to the last one's end."""
    intervals = list(intervals)
    return max(i.end for i in intervals) - min(i.start for i in intervals)


def busy_shares(intervals: Iterable[Interval], wall_s: float) -> dict[str, float]:
    """Per role, the share of `wall_s` its actors were busy (the mean over its actors)."""
    busy: dict[str, float] = defaultdict(float)
    actors: dict[str, set[str]] = defaultdict(set)
    for i in intervals:
        busy[i.role] += i.seconds
        actors[i.role].add(i.actor)
    return {role: round(busy[role] / len(actors[role]) / wall_s, 3) if wall_s else 0.0 for role in sorted(busy)}


def of_records(rows: Iterable[dict]) -> list[Interval]:
    """Intervals from their JSON form (state.json, timeline.json)."""
    return [Interval(**row) for row in rows]
