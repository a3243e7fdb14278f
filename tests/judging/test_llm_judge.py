"""The llm judge against an OpenAI-compatible endpoint on loopback (raylign/testing.py)."""

import pytest

from raylign.actors.judge import JudgePool, make_judge
from raylign.config import JudgeConfig, LLMJudgeConfig
from raylign.evaluation.scoring import ACCEPT, CAUTION, REFUSE, UNJUDGED
from raylign.testing import LoopbackJudgeServer, answer_rows, pool_throughput


def row(verdict: str | None) -> dict:
    return answer_rows(1, verdict).to_pylist()[0]


class OneRow:
    """The llm judge over HTTP, asked about one answer at a time."""

    def __init__(self, server, **kw):
        self.judge = make_judge(JudgeConfig(name="llm", kind="llm", llm=LLMJudgeConfig(
            endpoint=server.url, model="tiny", **kw)), [])
        self.version = self.judge.version

    def label(self, row: dict):
        return self.judge.label_all([row])[0]


def judge(server, **kw) -> OneRow:
    return OneRow(server, **kw)


@pytest.mark.parametrize("text, label", [
    ("Verdict: Accept", ACCEPT), ("caution", CAUTION), ("  REFUSE \n", REFUSE), ("Reject", REFUSE),
    ("**Verdict:** refused", REFUSE), ("The answer hedges.\nVerdict: Caution", CAUTION),
])
def test_verdicts_come_back_as_labels(text, label):
    with LoopbackJudgeServer() as server:
        verdict = judge(server).label(row(text))
        assert server.requests == 1
    assert verdict.label == label
    assert verdict.raw == text


def test_garbage_is_retried_then_recorded_unjudged_with_the_text():
    with LoopbackJudgeServer() as server:
        verdict = judge(server, max_retries=2).label(row("I would rather not say"))
        assert server.requests == 3
    assert verdict.label == UNJUDGED
    assert verdict.raw == "unreadable verdict: I would rather not say"


def test_a_failing_endpoint_is_retried_and_a_dead_one_recorded():
    with LoopbackJudgeServer(fail_first=2) as server:
        assert judge(server, max_retries=2).label(row("Refuse")).label == REFUSE
    with LoopbackJudgeServer(fail_first=100) as server:
        verdict = judge(server, max_retries=1).label(row("Refuse"))
    assert verdict.label == UNJUDGED and verdict.raw.startswith("request failed: InternalServerError")


def test_the_api_key_comes_from_the_environment_and_is_kept_nowhere(monkeypatch):
    monkeypatch.setenv("RAYLIGN_TEST_JUDGE_KEY", "s3cret-key")
    with LoopbackJudgeServer(api_key="s3cret-key") as server:
        ok = judge(server, api_key_env="RAYLIGN_TEST_JUDGE_KEY")
        verdict = ok.label(row("Caution"))
        denied = judge(server, max_retries=0).label(row("Caution"))  # no key
    assert verdict.label == CAUTION and "s3cret" not in verdict.raw + ok.version
    assert denied.label == UNJUDGED and "AuthenticationError" in denied.raw


def throughput(server, replicas: int, rows: int = 32) -> float:
    cfg = JudgeConfig(name="llm", kind="llm", replicas=replicas, num_cpus=0.25,
                      llm=LLMJudgeConfig(endpoint=server.url, model="tiny", concurrency=1))
    pool = JudgePool(cfg, app=f"test-llm-{replicas}", timeout_s=300)
    try:
        rate, out = pool_throughput(pool, answer_rows(rows, "Refuse"), batches=4)
    finally:
        pool.shutdown()
    assert sorted(out["prompt_id"].to_pylist()) == sorted(f"p{i}" for i in range(rows))  # each once
    assert set(out["label"].to_pylist()) == {REFUSE} and set(out["judge"].to_pylist()) == {"llm"}
    assert min(out["latency_s"].to_pylist()) >= server.delay_s  # each row's own request time
    return rate


def test_four_replicas_of_a_latency_bound_judge_judge_about_four_times_as_fast(local_ray):
    with LoopbackJudgeServer(delay_s=0.2) as server:
        one = throughput(server, 1)
        four = throughput(server, 4)
    print(f"latency-bound judge: {one:.1f} rows/s on 1 replica, {four:.1f} on 4: {four / one:.2f}x")
    assert four / one > 2.5  # ~3.9x measured; a loose bound, since timings vary on a shared machine
