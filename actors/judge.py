"""Judges: `Judge` is one replica of one judge; `JudgePool` serves its replicas with Ray Serve.

Every kind answers one interface: a ROLLOUTS batch in, a JUDGMENTS table out, with per row the
label (or `Unjudged`, with the reason), the judge's name and version, its raw verdict, the
per-objective scores and the judging latency. Kinds (raylign/config.py, JudgeConfig.kind):
- rules: patterns (raylign/judging/rules.py), the fast default;
- empathy: an empathy score from the answer's wording, no label (raylign/evaluation/empathy.py);
- llm: a rubric answered by a judge model, over HTTP or on its own vLLM engine in the replica,
  its reply a CARES label, criteria scores or a guard model's verdict (raylign/judging/llm.py,
  raylign/judging/rubrics.py);
- reward_model: sequence-classification models, one per objective, a classifier's labels CARES
  ones or mapped to them (raylign/judging/reward_model.py);
- self: the policy judges its own answers through the generators' engines;
- ensemble: member judges in the replica, combined by vote or weights (raylign/judging/ensemble.py).

`PromptLeveller` is the prompt classifier: it gives prompts from conversation logs a harm level.

The pool is a Ray Serve deployment: `replicas` replicas on their own resources, or autoscaled
between `min_replicas` and `max_replicas` by backlog (batches queued or in work per replica).
A replica takes one batch at a time, so queued batches wait for the first free replica, new
replicas included. A batch whose replica crashed or raised is sent again, `max_batch_retries`
times; then its rows are recorded Unjudged with the error, so every answer comes back once.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import NamedTuple

import pyarrow as pa
import ray
import torch

from raylign.config import JudgeConfig, PromptClassifierConfig
from raylign.data.schemas import BASE, JUDGMENTS, PROMPT_LEVELS, PolicyVersion, chat_of
from raylign.evaluation.scoring import UNJUDGED, objective_scores
from raylign.judging.verdicts import Verdict


def make_judge(cfg: JudgeConfig, engines: list):
    """The judge of `cfg.kind`: an object with `label_all(rows, policy)`, `version` and `labels`.
    `engines` are the generators' engine actors (the `self` kind answers through them)."""
    if cfg.kind == "rules":
        from raylign.judging.rules import RulesJudge

        return RulesJudge(cfg.rules)
    if cfg.kind == "empathy":
        from raylign.evaluation.empathy import EmpathyJudge

        return EmpathyJudge(cfg.empathy)
    if cfg.kind in ("llm", "self"):
        from raylign.judging.llm import EngineChat, RubricJudge, llm_chat
        from raylign.judging.rubrics import load_rubric

        if cfg.kind == "self":
            if not engines:
                raise ValueError(f"judge {cfg.name!r}: the self judge answers through the generators' engines; none given")
            s = cfg.self_eval
            turns = itertools.cycle(engines)
            chat = EngineChat(lambda *args: ray.get(next(turns).answer.remote(*args)), s.max_tokens)
            return RubricJudge(load_rubric(s.rubric, s.criteria), chat, "self", s.max_retries, s.retry_temperature)
        c = cfg.llm
        rubric = load_rubric(c.rubric, c.criteria, c.reply_format, c.label_map)
        return RubricJudge(rubric, llm_chat(c), c.model, c.max_retries, c.retry_temperature)
    if cfg.kind == "reward_model":
        from raylign.judging.reward_model import RewardModelJudge
        from raylign.training.sequences import device_for

        return RewardModelJudge(cfg.reward_model, device_for(cfg.num_gpus))
    from raylign.judging.ensemble import EnsembleJudge

    e = cfg.ensemble
    return EnsembleJudge([make_judge(m, engines) for m in e.members], [m.name for m in e.members], e.weights,
                         e.combine)


def judgment_table(rows: list[dict], verdicts: list[Verdict], judge: str, version: str) -> pa.Table:
    """JUDGMENTS rows: the answers with their verdicts. A label brings the CARES safety and
    helpfulness scores; the judge's own scores (criteria, reward models) are added to them."""
    for row, v in zip(rows, verdicts, strict=True):
        scores = None
        if v.label != UNJUDGED:
            scores = {**(objective_scores(v.label, row["harmful_level"]) if v.label else {}), **v.scores}
        row.update(judge=judge, judge_version=version, label=v.label, verdict=v.raw,
                   safety_score=None if scores is None else scores.get("safety"), scores=scores,
                   latency_s=v.latency_s)
    return pa.Table.from_pylist(rows, schema=JUDGMENTS)


BUSY_KEY = b"raylign.busy"
"""A judged batch's schema metadata: "PID START END" of the replica that judged it (the
driver's timeline; the buffer keeps the table without it)."""


class JudgeInfo(NamedTuple):
    pid: int
    version: str
    labels: bool  # gives CARES labels (else only scores)


class Judge:
    """One replica. Plain class; `JudgePool` deploys it with Ray Serve."""

    def __init__(self, cfg: JudgeConfig, engines: list = ()):
        torch.set_num_threads(cfg.num_threads)
        self.cfg = cfg
        self.kind = make_judge(cfg, list(engines))

    def info(self) -> JudgeInfo:
        return JudgeInfo(os.getpid(), self.kind.version, self.kind.labels)

    def judge(self, rollouts: pa.Table, policy: PolicyVersion = BASE) -> pa.Table:
        """`policy` wrote the answers: the `self` judge answers the rubric as it. The table's
        metadata says which replica was busy with it, and when (BUSY_KEY)."""
        started = time.time()
        rows = rollouts.to_pylist()
        table = judgment_table(rows, self.kind.label_all(rows, policy), self.cfg.name, self.kind.version)
        return table.replace_schema_metadata({BUSY_KEY: f"{os.getpid()} {started} {time.time()}"})


class Batch(NamedTuple):
    rollouts: pa.Table | ray.ObjectRef
    policy: PolicyVersion
    tag: object
    tries: int


class Judged(NamedTuple):
    tag: object
    """What the batch was submitted with (the driver's batch index)."""
    table: pa.Table


class JudgePool:
    """One judge's replicas as a Ray Serve application named `app`; batches are judged as they
    are submitted and come back in completion order."""

    def __init__(self, cfg: JudgeConfig, app: str, timeout_s: float, engines: list = ()):
        from ray import serve

        from raylign.actors.generator import vllm_env

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # keep the run's progress readable
        serve.start(proxy_location="Disabled")  # no HTTP: the driver calls the replicas by handle
        self.cfg, self.app = cfg, app
        scaling = (
            {"num_replicas": cfg.replicas} if cfg.min_replicas is None else
            {"autoscaling_config": {
                "min_replicas": cfg.min_replicas, "initial_replicas": cfg.replicas,
                "max_replicas": cfg.max_replicas, "target_ongoing_requests": cfg.target_backlog,
                "upscale_delay_s": cfg.upscale_delay_s, "downscale_delay_s": cfg.downscale_delay_s,
                "look_back_period_s": cfg.look_back_period_s, "metrics_interval_s": cfg.metrics_interval_s,
            }}
        )
        deployment = serve.deployment(
            Judge, name=cfg.name,
            max_ongoing_requests=1,  # queued batches wait in the router for the first free replica
            ray_actor_options={
                "num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "resources": cfg.resources,
                "runtime_env": {"env_vars": vllm_env(cfg.llm.engine, cfg.num_threads)},
            },
            **scaling,
        )
        self.handle = serve.run(deployment.bind(cfg, list(engines)), name=app, route_prefix=None)
        self.info: JudgeInfo = self.handle.info.remote().result(timeout_s=timeout_s)
        self.waiting = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"judge-{cfg.name}")
        self.pending: dict[Future, Batch] = {}
        self.resent = 0  # batches sent again after a replica failed them

    def shutdown(self) -> None:
        from ray import serve

        self.waiting.shutdown(wait=False, cancel_futures=True)
        serve.delete(self.app)

    def replica_actors(self) -> list[ray.actor.ActorHandle]:
        """The replicas' actors, by their Serve names: to kill one in a fault test."""
        prefix = f"SERVE_REPLICA::{self.app}#{self.cfg.name}#"
        return [ray.get_actor(a["name"], namespace="serve")
                for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]

    def running(self) -> int:
        """Replicas up now: autoscaling moves it between min_replicas and max_replicas."""
        from ray import serve

        return serve.status().applications[self.app].deployments[self.cfg.name].replica_states.get("RUNNING", 0)

    def submit(self, rollouts: pa.Table | ray.ObjectRef, policy: PolicyVersion = BASE, tag: object = None) -> None:
        self._send(Batch(rollouts, policy, tag, tries=0))

    def _send(self, batch: Batch) -> None:
        response = self.handle.judge.remote(batch.rollouts, batch.policy)
        self.pending[self.waiting.submit(response.result)] = batch

    def has_next(self) -> bool:
        return bool(self.pending)

    def poll(self, timeout_s: float) -> Judged | None:
        """The next judged batch, in completion order; None if none finished in time. A batch
        that failed is sent again, or after its retries comes back with every row Unjudged."""
        done, _ = wait(self.pending, timeout=timeout_s, return_when=FIRST_COMPLETED)
        for future in done:
            batch = self.pending.pop(future)
            try:
                return Judged(batch.tag, future.result())
            except Exception as e:  # noqa: BLE001 - a dead or failing replica: retried, then recorded
                if batch.tries < self.cfg.max_batch_retries:
                    self.resent += 1
                    self._send(batch._replace(tries=batch.tries + 1))
                    continue
                cause = getattr(e, "cause", None) or e  # the judge's own error, not Ray's wrapper
                why = f"judge failed {batch.tries + 1} times: {type(cause).__name__}: {cause}"
                return Judged(batch.tag, self._unjudged(batch, why))
        return None

    def _unjudged(self, batch: Batch, why: str) -> pa.Table:
        rollouts = ray.get(batch.rollouts) if isinstance(batch.rollouts, ray.ObjectRef) else batch.rollouts
        rows = rollouts.to_pylist()
        return judgment_table(rows, [Verdict(UNJUDGED, why[:2000], {}, 0.0)] * len(rows), self.cfg.name,
                              self.info.version)


class PromptLeveller:
    """Gives prompts a harm level (raylign/judging/prompt_levels.py); the driver runs it as an actor."""

    def __init__(self, cfg: PromptClassifierConfig):
        from raylign.judging.prompt_levels import make_prompt_classifier
        from raylign.training.sequences import device_for

        if cfg.kind == "classifier":
            torch.set_num_threads(cfg.num_threads)
        self.cfg = cfg
        self.classifier = make_prompt_classifier(cfg, device_for(cfg.num_gpus))

    def classify(self, prompts: pa.Table, cycle: int) -> pa.Table:
        """PROMPTS rows in, their PROMPT_LEVELS rows out (same order)."""
        rows = prompts.select(["id", "prompt", "messages"]).to_pylist()
        verdicts = self.classifier.classify([chat_of(row) for row in rows])
        return pa.Table.from_pylist([
            {"cycle": cycle, "prompt_id": row["id"], "harmful_level": v.level, "predicted_level": v.predicted,
             "confidence": v.confidence, "classifier": self.classifier.version, "reason": v.reason[:2000]}
            for row, v in zip(rows, verdicts, strict=True)
        ], schema=PROMPT_LEVELS)
