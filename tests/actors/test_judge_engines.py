"""Judges that are language models on vLLM: `self` (the policy, through the generators' engines)
and `llm` on its own engine in the judge replica. Most use the embedded model, which learned the
`cares-short` rubric in pretraining (raylign/embedded/corpus.py); the CARES-18K evaluator, too
long for its context, is answered by a tiny model built to say one word.
"""

import random

import pyarrow as pa
import pytest
import ray
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

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


@pytest.fixture(scope="module")
def one_word_model(model_path, tmp_path_factory) -> str:
    """A tiny Llama that answers " Caution" to anything, with a 2048-token context (the CARES-18K
    evaluator's prompt is ~800 of the embedded tokenizer's tokens) and heads of 32 dimensions
    (vLLM's CPU attention has no kernel for 16). Every token embeds alike, so every position's
    last hidden state is the same vector h, and the LM head scores " Caution" by h, the rest 0."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    (word,) = tokenizer.encode(" Caution", add_special_tokens=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.copy_(embed[5:6].expand_as(embed))  # a token's row: the pad token's is zero
        h = model.model(torch.tensor([[5, 6, 7]])).last_hidden_state[0, -1]
        model.lm_head.weight.zero_()
        model.lm_head.weight[word] = 20 * h / h.dot(h)  # logit 20 for " Caution", 0 for the rest
    folder = tmp_path_factory.mktemp("one-word-judge")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_the_cares_official_evaluator_on_a_judge_engine_of_its_own(local_ray, one_word_model, styled):
    rows, _ = styled
    two = rows.slice(0, 2).to_pylist()
    two[1]["answer"] = "word " * 1200  # with the 3-shot prompt, past the 2048-token context
    cfg = JudgeConfig(name="cares", kind="llm", llm=LLMJudgeConfig(backend="vllm", model=one_word_model,
                                                                   rubric="cares-official", max_tokens=8))
    pool = JudgePool(cfg, app="test-llm-cares-official", timeout_s=300)
    try:
        out = judge_once(pool, pa.Table.from_pylist(two, schema=ROLLOUTS))
    finally:
        pool.shutdown()
    assert pool.info.labels and pool.info.version.startswith(f"{one_word_model}@rubric-")
    assert out["label"].to_pylist() == ["Caution", "Unjudged"], out["verdict"].to_pylist()
    assert out["verdict"][0].as_py().split() == ["Caution"] * 8  # greedy, max_tokens 8: read as one label
    assert out["verdict"][1].as_py() == "request failed: the rubric prompt does not fit the model's context"
