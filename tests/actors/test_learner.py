"""The learner group for real: DeepSpeed ZeRO-3 across Ray actors, gloo on CPU."""

import time
from pathlib import Path

import pyarrow as pa
import pytest
import ray
import torch

from raylign.actors.learner import LearnerGroup
from raylign.config import LearnerConfig
from raylign.training.pairs import KTOWeights
from raylign.data.schemas import BASE, KTO_EXAMPLES, PAIRS, TrainVariant, assistant_turn, user_turn
from raylign.storage import RunStorage
from raylign.training.weights import from_bucket

REFUSE = "I cannot help with this request. It could cause real harm, so I have to say no."
ACCEPT = "Sure. Here is the short answer: it usually takes a few simple steps, and most people manage."


def variant(algorithm: str, cfg: LearnerConfig) -> TrainVariant:
    return TrainVariant(algorithm, cfg.beta, cfg.learning_rate, cfg.loss_type)


def fixed_pairs(n: int = 8) -> pa.Table:
    rows = [
        {"cycle": 1, "prompt_id": f"p{i}", "harmful_level": i % 4, "prompt": user_turn(f"How do I get drug number {i}?"),
         "chosen": assistant_turn(REFUSE if i % 2 else ACCEPT), "rejected": assistant_turn(ACCEPT if i % 2 else REFUSE),
         "chosen_label": "Refuse", "rejected_label": "Accept", "chosen_score": 1.0, "rejected_score": 0.0}
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=PAIRS)


def fixed_kto(n: int = 8) -> pa.Table:
    rows = [
        {"cycle": 1, "prompt_id": f"p{i}", "harmful_level": i % 4, "prompt": user_turn(f"Question {i} about doses?"),
         "completion": assistant_turn(REFUSE if i % 3 else ACCEPT), "label": bool(i % 3), "score": float(i % 3 > 0)}
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=KTO_EXAMPLES)


def one_step(model_path, tmp_path, world_size: int, algorithm: str = "dpo", zero_stage: int = 3):
    """Train one step (8 examples, batch 8, one epoch); the result and the gathered adapter."""
    cfg = LearnerConfig(world_size=world_size, zero_stage=zero_stage, batch_size=8, epochs=1)
    group = LearnerGroup(model_path, "float32", cfg, seed=0, timeout_s=300)
    try:
        group.ready()
        numels = group.call("shard_numels")
        data = fixed_pairs() if algorithm == "dpo" else fixed_kto()
        results = group.call("train", variant(algorithm, cfg), data, 1, RunStorage(tmp_path / f"w{world_size}"),
                             BASE, KTOWeights(1.0, 1.2), "cycle_001")
        weights = group.call("gathered_trainable")
    finally:
        group.shutdown()
    return results, weights, numels


def test_a_restarted_group_resumes_from_the_deepspeed_checkpoint(two_ranks, local_ray, model_path):
    (result, _), (trained, _) = two_ranks[0], two_ranks[1]
    run_dir = Path(result.policy.path).parents[1]
    assert (run_dir / "checkpoints" / "cycle_001").is_dir()
    cfg = LearnerConfig(world_size=2, batch_size=8, epochs=1)
    group = LearnerGroup(model_path, "float32", cfg, seed=0, timeout_s=300)
    try:
        group.ready()
        # Training from version 1 with no data: the group loads the checkpoint and changes nothing.
        group.call("train", variant("dpo", cfg), fixed_pairs(0), 2, RunStorage(run_dir), result.policy,
                   KTOWeights(1.0, 1.0), "cycle_002")
        resumed = group.call("gathered_trainable")[0]
    finally:
        group.shutdown()
    for name, weight in trained.items():
        assert torch.equal(resumed[name], weight), name


def test_full_finetuning_gathers_the_whole_model_for_the_engines(local_ray, model_path, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = LearnerConfig(world_size=2, finetune="full", batch_size=8, epochs=1, learning_rate=1e-4,
                        weight_bucket_mb=1, save_checkpoints=False)
    group = LearnerGroup(model_path, "float32", cfg, seed=0, timeout_s=300)
    try:
        group.ready()
        (result, _) = group.call("train", variant("dpo", cfg), fixed_pairs(), 1, RunStorage(tmp_path), BASE,
                                 KTOWeights(1.0, 1.0), "cycle_001")
        policy = group.publish(result.policy)
        # Published again (a resumed run, a restarted rank): read back from the model folder.
        again = group.publish(result.policy)
    finally:
        group.shutdown()
    assert policy.kind == "full" and len(policy.payload) > 1  # 1 MiB buckets: several
    sent = {k: v for ref in policy.payload for k, v in from_bucket(ray.get(ref)).items()}
    resent = {k: v for ref in again.payload for k, v in from_bucket(ray.get(ref)).items()}
    assert set(resent) == set(sent) and all(torch.equal(resent[k], sent[k]) for k in sent)  # tied lm_head too
    initial = AutoModelForCausalLM.from_pretrained(model_path).state_dict()
    written = AutoModelForCausalLM.from_pretrained(policy.path).state_dict()
    assert set(initial) <= set(sent)
    assert sum(not torch.equal(sent[k], initial[k]) for k in initial) >= len(initial) // 2  # it trained
    for name in initial:
        assert torch.equal(written[name], sent[name]), name  # the folder and the buckets agree


@pytest.fixture(scope="module")
def two_ranks(local_ray, model_path, tmp_path_factory):
    return one_step(model_path, tmp_path_factory.mktemp("learn"), world_size=2)


@pytest.fixture(scope="module")
def one_rank(local_ray, model_path, tmp_path_factory):
    return one_step(model_path, tmp_path_factory.mktemp("learn"), world_size=1)


def test_zero3_partitions_every_parameter_across_the_two_ranks(two_ranks):
    _, _, numels = two_ranks
    for (name, full, held0), (name1, full1, held1) in zip(*numels, strict=True):
        assert name == name1 and full == full1
        assert held0 == held1 == -(-full // 2), name  # each rank holds half (rounded up)


def test_one_step_loss_on_two_ranks_equals_one_rank(two_ranks, one_rank):
    two, one = two_ranks[0], one_rank[0]
    assert two[0].steps == one[0].steps == 1
    assert abs(two[0].mean_loss - one[0].mean_loss) < 1e-4
    assert two[0].mean_loss == two[1].mean_loss  # every rank reports the batch loss


def test_weights_after_a_step_are_identical_on_both_ranks_and_match_one_rank(two_ranks, one_rank):
    w0, w1 = two_ranks[1]
    assert set(w0) == set(w1) and len(w0) > 0
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    (single,) = one_rank[1]
    moved = 0
    for name in w0:
        assert torch.allclose(w0[name], single[name], atol=1e-5), name
        moved += "lora_B" in name and bool(w0[name].abs().max() > 0)
    assert moved > 0  # the step really changed the adapter (lora_B starts at zero)


def test_adapter_folder_written_by_rank_0_loads_in_peft(two_ranks, model_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    policy = two_ranks[0][0].policy
    assert policy.kind == "lora" and policy.version == 1
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), policy.path)
    w0 = two_ranks[1][0]
    for name, p in peft.named_parameters():
        if "lora_" in name:
            assert torch.equal(p.detach(), w0[name]), name


def test_kto_one_step_on_two_ranks_equals_one_rank(local_ray, model_path, tmp_path):
    two, _, _ = one_step(model_path, tmp_path, world_size=2, algorithm="kto", zero_stage=2)
    one, _, _ = one_step(model_path, tmp_path, world_size=1, algorithm="kto", zero_stage=2)
    assert abs(two[0].mean_loss - one[0].mean_loss) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_bf16_step_on_a_gpu_with_nccl(local_ray, model_path, tmp_path):
    cfg = LearnerConfig(world_size=1, num_gpus=1, batch_size=8, epochs=1)
    group = LearnerGroup(model_path, "bfloat16", cfg, seed=0, timeout_s=600)
    try:
        (info,) = group.ready()
        assert info.backend == "nccl"
        (result,) = group.call("train", variant("dpo", cfg), fixed_pairs(), 1, RunStorage(tmp_path), BASE,
                               KTOWeights(1.0, 1.0), "cycle_001")
    finally:
        group.shutdown()
    assert result.steps == 1 and result.mean_loss == result.mean_loss  # not NaN


def test_a_rank_that_dies_mid_training_fails_the_call_on_every_rank_at_once(local_ray, model_path, tmp_path):
    """With no retries left, the group raises as soon as the rank dies, naming it, instead of
    leaving the other rank to wait out its collective timeout."""
    import threading

    from raylign.testing import kill_actor_process

    cfg = LearnerConfig(world_size=2, batch_size=8, epochs=40, max_train_retries=0, init_timeout_s=240)
    group = LearnerGroup(model_path, "float32", cfg, seed=0, timeout_s=300)
    started = threading.Event()
    try:
        group.ready()
        killer = threading.Timer(0, lambda: started.wait(120) and kill_actor_process("Learner"))
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"cycle 1 training: learner rank\(s\) \[[01]\] died, on each of 1 "
                                               r"tries \(learner.max_train_retries 0\)"):
            group.train(variant("dpo", cfg), fixed_pairs(), 1, RunStorage(tmp_path), BASE, KTOWeights(1.0, 1.0),
                        "cycle_001", on_progress=lambda done, total: done >= 1 and started.set())
        failed_after = time.monotonic() - t0
    finally:
        group.shutdown()
    assert failed_after < cfg.init_timeout_s / 2  # not the survivor's collective timeout


def test_a_rank_killed_mid_training_is_replaced_and_the_cycle_retrained_from_the_checkpoint(two_ranks, local_ray,
                                                                                             model_path):
    """Cycle 2 from the cycle-1 checkpoint, undisturbed and with a rank SIGKILLed two steps in:
    the group is replaced, trains again from the checkpoint, and ends with the same weights."""
    from raylign.testing import kill_actor_process

    start = two_ranks[0][0].policy
    run_dir = Path(start.path).parents[1]
    cfg = LearnerConfig(world_size=2, batch_size=8, epochs=16, max_train_retries=1, save_checkpoints=False)

    def cycle_two(kill: bool):
        group = LearnerGroup(model_path, "float32", cfg, seed=0, timeout_s=300)
        killed = []

        def progress(done: int, total: int) -> None:
            # The kill lands in the progress callback itself, two steps in and before the last: a
            # thread woken for it could be scheduled late on a busy machine, after the training.
            if kill and 2 <= done < total and not killed:
                killed.append(kill_actor_process("Learner"))

        try:
            group.ready()
            result = group.train(variant("dpo", cfg), fixed_pairs(), 2, RunStorage(run_dir), start,
                                 KTOWeights(1.0, 1.0), "cycle_002", on_progress=progress)
            return result, group.call("gathered_trainable")[0]
        finally:
            group.shutdown()

    (calm, calm_weights), (hit, hit_weights) = cycle_two(kill=False), cycle_two(kill=True)
    assert (calm.retries, hit.retries) == (0, 1)
    assert hit.steps == calm.steps == 16 and hit.mean_loss == calm.mean_loss
    for name, weight in calm_weights.items():
        assert torch.equal(hit_weights[name], weight), name
