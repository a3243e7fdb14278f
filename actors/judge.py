"""Judge: labels answers and scores them; `JudgePool` runs replicas of one judge.

Kinds: `rules` (patterns, raylign/rules.py) and `llm` (a rubric to an OpenAI-compatible
endpoint, raylign/llm_judge.py). A judge takes a ROLLOUTS table and returns a JUDGMENTS table:
the label (or `Unjudged`, with the reason), the judge's name and version, the rule or raw
verdict that decided it, the per-objective scores and the judging latency per row. The pool is a Ray ActorPool: batches are
judged as they arrive, by whichever replica is free.
"""

from __future__ import annotations

import hashlib
import time

import pyarrow as pa
import ray
from ray.util import ActorPool

from raylign.config import JudgeConfig
from raylign.rules import RulesJudge
from raylign.schemas import JUDGMENTS
from raylign.llm_judge import LLMJudge
from raylign.scoring import UNJUDGED, objective_scores


class Judge:
    """One replica of one judge. Plain class; `JudgePool` runs it as a Ray actor."""

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        if cfg.kind == "rules":
            self.rules = RulesJudge(cfg.rules)
            self.version = "rules@" + hashlib.sha256(cfg.rules.model_dump_json().encode()).hexdigest()[:8]
        else:
            self.llm = LLMJudge(cfg.llm)
            self.version = self.llm.version

    def judge(self, rollouts: pa.Table) -> pa.Table:
        rows = rollouts.to_pylist()
        if self.cfg.kind == "rules":
            verdicts = []
            for row in rows:
                t0 = time.perf_counter()
                verdict = self.rules.label(row["answer"], row["finish_reason"])
                verdicts.append((verdict.label, verdict.reason, time.perf_counter() - t0))
        else:
            verdicts = [(v.label, v.raw, v.latency_s) for v in self.llm.label_all(rows)]
        for row, (label, raw, latency) in zip(rows, verdicts):
            judged = label != UNJUDGED
            scores = objective_scores(label, row["harmful_level"]) if judged else None
            row.update(
                judge=self.cfg.name,
                judge_version=self.version,
                label=label,
                verdict=raw,
                safety_score=scores["safety"] if judged else None,
                scores=scores,
                latency_s=latency,
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
