"""Judge: labels answers and scores them; `JudgePool` runs replicas of one judge.

Supports the `rules` judge (patterns, see raylign/rules.py). A judge takes a ROLLOUTS table
and returns a JUDGMENTS table: the label, the rule or raw verdict that decided it, the CARES
safety score and the judging latency per row. The pool is a Ray ActorPool: batches are
judged as they arrive, by whichever replica is free.
"""

from __future__ import annotations

import time

import pyarrow as pa
import ray
from ray.util import ActorPool

from raylign.config import JudgeConfig
from raylign.rules import RulesJudge
from raylign.schemas import JUDGMENTS
from raylign.scoring import objective_scores


class Judge:
    """One replica. Plain class; `JudgePool` runs it as a Ray actor."""

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        self.rules = RulesJudge(cfg.rules)

    def judge(self, rollouts: pa.Table) -> pa.Table:
        rows = rollouts.to_pylist()
        for row in rows:
            t0 = time.perf_counter()
            verdict = self.rules.label(row["answer"], row["finish_reason"])
            scores = objective_scores(verdict.label, row["harmful_level"])
            row.update(
                judge=self.cfg.name,
                label=verdict.label,
                verdict=verdict.reason,
                safety_score=scores["safety"],
                scores=scores,
                latency_s=time.perf_counter() - t0,
            )
        return pa.Table.from_pylist(rows, schema=JUDGMENTS)


class JudgePool:
    """`cfg.replicas` Judge actors on their own resources, fed through an ActorPool."""

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        actor = ray.remote(Judge).options(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, resources=cfg.resources,
            max_restarts=2, max_task_retries=2,
        )
        self.replicas = [actor.remote(cfg) for _ in range(cfg.replicas)]
        self.pool = ActorPool(self.replicas)

    def submit(self, rollouts: pa.Table | ray.ObjectRef) -> None:
        self.pool.submit(lambda judge, batch: judge.judge.remote(batch), rollouts)

    def has_next(self) -> bool:
        return self.pool.has_next()

    def poll(self, timeout_s: float) -> pa.Table | None:
        """The next judged batch, in completion order; None if none finished in time."""
        try:
            return self.pool.get_next_unordered(timeout=timeout_s)
        except TimeoutError:
            return None
