"""The judge pool for real: Ray Serve replicas, a replica killed mid-batch, autoscaling by backlog.

The latency-bound judge is the `llm` kind against an OpenAI-compatible endpoint on loopback
that waits a fixed time per request (raylign/testing.py).
"""

import time

import pyarrow as pa
import ray

from raylign.actors.judge import JudgePool
from raylign.config import JudgeConfig, LLMJudgeConfig
from raylign.data.schemas import JUDGMENTS
from raylign.evaluation.scoring import CAUTION, INVALID, REFUSE, UNJUDGED
from raylign.testing import LoopbackJudgeServer, answer_rows


def latency_bound(server, name: str, **kw) -> JudgeConfig:
    return JudgeConfig(name=name, kind="llm", num_cpus=0.25, llm=LLMJudgeConfig(endpoint=server.url, concurrency=1), **kw)


def drain(pool: JudgePool) -> pa.Table:
    judged = []
    while pool.has_next():
        out = pool.poll(timeout_s=1)
        judged += [] if out is None else [out.table]
    return pa.concat_tables(judged)


def test_a_rules_pool_labels_scores_and_versions_every_row(local_ray):
    rows = answer_rows(6)
    pool = JudgePool(JudgeConfig(name="rules", replicas=2), app="test-rules", timeout_s=300)
    try:
        for start in (0, 3):
            pool.submit(ray.put(rows.slice(start, 3)))  # an ObjectRef, as the generators hand them
        out = drain(pool)
    finally:
        pool.shutdown()
    assert out.schema == JUDGMENTS and out.num_rows == 6
    assert set(out["label"].to_pylist()) == {INVALID}  # "Take it with food.": under min_words
    assert out["scores"].to_pylist()[0] == [("safety", 0.0), ("helpfulness", 0.0)]
    assert set(out["verdict"].to_pylist()) == {"4 words < min_words 5"}
    assert set(out["judge_version"].to_pylist()) == {pool.info.version} and pool.info.version.startswith("rules@")


def test_a_replica_killed_mid_batch_loses_no_answer_and_judges_none_twice(local_ray):
    rows = answer_rows(40, "Refuse")
    with LoopbackJudgeServer(delay_s=0.1) as server:
        pool = JudgePool(latency_bound(server, "llm", replicas=2), app="test-kill", timeout_s=300)
        try:
            victims = pool.replica_actors()
            assert len(victims) == 2
            for start in range(0, rows.num_rows, 4):  # ten batches of 0.4 s: both replicas stay busy
                pool.submit(rows.slice(start, 4))
            while server.requests < 6:  # both replicas about half way through their first batch
                time.sleep(0.01)
            ray.kill(victims[0], no_restart=True)
            out = drain(pool)
            deadline = time.monotonic() + 60
            while pool.running() < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            replaced = pool.running() == 2
        finally:
            pool.shutdown()
    assert sorted(out["prompt_id"].to_pylist()) == sorted(rows["prompt_id"].to_pylist())  # each exactly once
    assert set(out["label"].to_pylist()) == {REFUSE}
    # The dead replica had asked about part of its batch; Serve sent the batch to the other one.
    assert server.requests > rows.num_rows
    assert replaced  # Serve started a new replica in its place


def test_a_batch_the_judge_fails_on_is_retried_then_recorded_unjudged_with_the_error(local_ray):
    rows = answer_rows(8)
    bad = rows.slice(4, 4).to_pylist()
    bad[0]["harmful_level"] = 9  # no CARES score at this level: the replica raises
    pool = JudgePool(JudgeConfig(name="rules", max_batch_retries=2), app="test-raise", timeout_s=300)
    try:
        pool.submit(rows.slice(0, 4))
        pool.submit(pa.Table.from_pylist(bad, schema=rows.schema))
        out = drain(pool)
    finally:
        pool.shutdown()
    assert out.num_rows == 8 and pool.resent == 2
    by_id = {r["prompt_id"]: r for r in out.to_pylist()}
    assert {by_id[f"p{i}"]["label"] for i in range(4)} == {INVALID}
    for i in range(4, 8):  # the whole failed batch, each row with the reason
        assert by_id[f"p{i}"]["label"] == UNJUDGED and by_id[f"p{i}"]["safety_score"] is None
        assert by_id[f"p{i}"]["verdict"].startswith("judge failed 3 times: ValueError")
        assert "no safety score for label 'Invalid' at harmful_level 9" in by_id[f"p{i}"]["verdict"]


def test_the_pool_scales_out_with_backlog_and_stays_within_max(local_ray):
    rows = answer_rows(128, "Caution")
    with LoopbackJudgeServer(delay_s=0.1) as server:
        cfg = latency_bound(server, "llm", replicas=1, min_replicas=1, max_replicas=3, target_backlog=1,
                            upscale_delay_s=0.5, look_back_period_s=1, metrics_interval_s=0.5)
        pool = JudgePool(cfg, app="test-autoscale", timeout_s=300)
        try:
            for start in range(0, rows.num_rows, 4):  # 32 batches of 0.4 s: outlasts a replica start on 2 slow cores
                pool.submit(rows.slice(start, 4))
            seen = []
            judged = []
            while pool.has_next():
                out = pool.poll(timeout_s=0.5)
                judged += [] if out is None else [out.table]
                seen.append(pool.running())
            out = pa.concat_tables(judged)
        finally:
            pool.shutdown()
    print(f"replicas seen while the backlog drained: {seen}")
    assert out.num_rows == 128 and set(out["label"].to_pylist()) == {CAUTION}
    assert max(seen) >= 2 and max(seen) <= 3
