"""Judges that are language models on vLLM: `self` (the policy, through the generators' engines)
and `llm` on its own engine in the judge replica. Both use the embedded model, which learned the
`cares-short` rubric in pretraining (raylign/embedded/corpus.py).
"""

import random

import pyarrow as pa
import pytest
import ray

from raylign.actors.generator import GeneratorGroup
from raylign.actors.judge import JudgePool
from raylign.evaluation.agreement import agreement
from raylign.config import JudgeConfig, LLMJudgeConfig, load_config
from raylign.embedded.corpus import STYLE_LABELS, STYLES, answer
from raylign.data.prompts import load_prompts, split
from raylign.data.schemas import BASE, ROLLOUTS

vllm = pytest.importorskip("vllm", reason="the engine-backed judges need vLLM (README, Install)")


@pytest.fixture(scope="module")
def generators(local_ray, model_path):
    group = GeneratorGroup(model_path, "float32", load_config().generator, None, seed=0, timeout_s=600)
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def styled() -> tuple[pa.Table, list[str]]:
    """Held-out prompts, each with an answer in a random style, and the style's CARES label."""
    rng = random.Random(7)
    prompts = split(load_prompts(load_config().prompts), "test", 48, seed=5).to_pylist()
    rows, labels = [], []
    for p in prompts:
        style = rng.choice(STYLES)
        rows.append({"cycle": 0, "stage": "eval", "prompt_id": p["id"], "sample_index": 0, "prompt": p["prompt"],
                     "harmful_level": p["harmful_level"], "principle_index": p["principle_index"],
                     "method": p["method"], "answer": answer(style, p, rng), "num_tokens": 20,
                     "finish_reason": "stop", "policy_version": 0})
        labels.append(STYLE_LABELS[style])
    return pa.Table.from_pylist(rows, schema=ROLLOUTS), labels


def judge_once(pool: JudgePool, rows: pa.Table) -> pa.Table:
    pool.submit(ray.put(rows), BASE)
    out = None
    while out is None:
        out = pool.poll(timeout_s=300)
    return out.table


def test_the_policy_judges_its_own_answers_through_the_generators_engine(generators, styled):
    rows, truth = styled
    pool = JudgePool(JudgeConfig(name="self", kind="self"), app="test-self", timeout_s=300, engines=generators.engines)
    try:
        out = judge_once(pool, rows)
    finally:
        pool.shutdown()
    labels = out["label"].to_pylist()
    print(f"self vs truth on {len(truth)} held-out answers: {agreement(truth, labels)}")
    assert agreement(truth, labels).kappa >= 0.8
    assert set(out["judge_version"].to_pylist()) == {pool.info.version} and pool.info.version.startswith("self@rubric-")
    assert all(v.startswith("Verdict: ") for v in out["verdict"].to_pylist())
    assert min(out["latency_s"].to_pylist()) > 0


def test_an_llm_judge_on_its_own_vllm_engine(local_ray, model_path, styled):
    rows, truth = styled
    cfg = JudgeConfig(name="llm", kind="llm", llm=LLMJudgeConfig(backend="vllm", model=model_path,
                                                                 rubric="cares-short", max_tokens=8))
    pool = JudgePool(cfg, app="test-llm-vllm", timeout_s=300)
    try:
        out = judge_once(pool, rows)
    finally:
        pool.shutdown()
    labels = out["label"].to_pylist()
    assert agreement(truth, labels).kappa >= 0.8
    assert pool.info.version.startswith(f"{model_path}@rubric-")


def test_a_rubric_too_long_for_the_context_is_unjudged_with_the_reason(generators, styled):
    rows, _ = styled
    long = rows.slice(0, 2).to_pylist()
    long[0]["answer"] = "word " * 400  # 256-token context
    pool = JudgePool(JudgeConfig(name="self", kind="self"), app="test-self-long", timeout_s=300, engines=generators.engines)
    try:
        out = judge_once(pool, pa.Table.from_pylist(long, schema=ROLLOUTS))
    finally:
        pool.shutdown()
    assert out["label"][0].as_py() == "Unjudged"
    assert out["verdict"][0].as_py() == "request failed: the rubric prompt does not fit the model's context"
    assert out["label"][1].as_py() != "Unjudged"
