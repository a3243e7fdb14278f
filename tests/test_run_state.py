import json
import math

import pytest

from raylign.config import ConfigError, load_config, result_digest
from raylign.run_state import STATE_FILE, PolicyRecord, RunState, stages
from raylign.data.schemas import BASE, PolicyVersion


def test_stages_run_in_the_cycle_order_of_the_design():
    assert stages(2) == [
        (0, "load"), (0, "evaluate"),
        (1, "generate_judge"), (1, "build_data"), (1, "train"), (1, "evaluate"),
        (2, "generate_judge"), (2, "build_data"), (2, "train"), (2, "evaluate"),
    ]


def test_overlapped_cycles_start_the_next_generation_with_the_training():
    assert stages(2, overlap=True) == [
        (0, "load"), (0, "evaluate"),
        (1, "generate_judge"), (1, "build_data"), (1, "train"), (2, "generate_judge"), (1, "evaluate"),
        (2, "build_data"), (2, "train"), (2, "evaluate"),
    ]
    state = RunState(config_digest="d")
    state.start(1, "train")
    state.start(2, "generate_judge", alongside=True)
    state.progress(alongside=True).seconds["generate_judge"] = 3.0
    state.finish(2, "generate_judge")
    assert (state.running, state.alongside) == ((1, "train"), None)
    state.finish(1, "train")
    state.close_cycle()  # cycle 1 evaluated: cycle 2's record starts with what was recorded ahead
    assert state.current.seconds == {"generate_judge": 3.0} and state.ahead is None


def test_a_selecting_run_trains_and_measures_each_candidate_in_stages_of_its_own():
    assert stages(1, ["dpo", "kto"], selecting=True) == [
        (0, "load"), (0, "select"), (0, "evaluate"),
        (1, "generate_judge"), (1, "build_data"), (1, "train.dpo"), (1, "select.dpo"), (1, "train.kto"),
        (1, "select.kto"), (1, "choose"), (1, "evaluate"),
    ]


def test_the_next_stage_is_the_first_unfinished_one(tmp_path):
    state = RunState(config_digest="d")
    for stage in stages(1)[:3]:
        state.start(*stage)
        state.finish(*stage)
    state.start(1, "build_data")  # under way when the run died
    assert state.next_stage(stages(1)) == (1, "build_data") and not state.all_finished(stages(1))
    assert state.next_stage(stages(2)) == (1, "build_data")
    for stage in stages(1)[3:]:
        state.finish(*stage)
    assert state.all_finished(stages(1)) and state.next_stage(stages(1)) is None
    assert state.next_stage(stages(3)) == (2, "generate_judge")  # more cycles continue a finished run
    state.stopped = 1  # selection.patience ended it: more cycles do not restart it
    assert state.all_finished(stages(3)) and state.next_stage(stages(3)) is None


def test_state_round_trips_through_its_file_nan_included(tmp_path):
    policy = PolicyVersion(2, "lora", str(tmp_path / "adapters" / "cycle_002"))
    state = RunState(config_digest="abc", policy=PolicyRecord.of(policy, tmp_path))
    state.finish(0, "load")
    state.start(0, "evaluate")
    state.records.append({"cycle": 0, "safety_score": 0.5, "training": {"mean_loss": float("nan")}})
    state.current.seconds["load"] = 0.1
    state.save(tmp_path)
    again = RunState.load(tmp_path)
    assert again.finished == [(0, "load")] and again.running == (0, "evaluate")
    assert again.is_finished(0, "load") and not again.is_finished(0, "evaluate")
    assert math.isnan(again.records[0]["training"]["mean_loss"])
    assert again.current.seconds == {"load": 0.1}
    assert again.policy.path == "adapters/cycle_002"  # the run folder may move
    assert again.policy.policy(tmp_path) == policy
    assert again.policy.policy(tmp_path / "moved") == policy._replace(path=str(tmp_path / "moved/adapters/cycle_002"))
    assert RunState(config_digest="x").policy.policy(tmp_path) == BASE
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, then renamed


def test_a_missing_or_unreadable_state_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=f"has no {STATE_FILE}: not a raylign run folder"):
        RunState.load(tmp_path)
    (tmp_path / STATE_FILE).write_text('{"format": 1, "finished": [[0, "load"]')
    with pytest.raises(ConfigError, match="cannot be read .* cannot be resumed"):
        RunState.load(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({"format": 1, "config_digest": "d", "finished": "all"}))
    with pytest.raises(ConfigError, match="cannot be read"):
        RunState.load(tmp_path)


def test_the_digest_ignores_what_a_resume_may_change_and_nothing_else():
    base = result_digest(load_config())
    assert result_digest(load_config(overrides=["cycles=7", "ray.get_timeout_s=60", "out=elsewhere"])) == base
    # Another cluster's shape: replicas, autoscaling bounds, resources, engines, GPUs, storage.
    placed = ["judges.0.replicas=3", "judges.0.min_replicas=1", "judges.0.max_replicas=6",
              "judges.0.resources={judge: 1}", "generator.engines=4", "generator.num_gpus=1",
              "generator.vllm.enforce_eager=false", "learner.resources={learner: 8}", "learner.num_gpus=1",
              "buffer.root=s3://bucket/buffer", "ray.address=auto"]
    assert result_digest(load_config(overrides=placed)) == base
    assert result_digest(load_config(overrides=["generator.vllm.max_model_len=128"])) != base
    assert result_digest(load_config(overrides=["learner.beta=0.2"])) != base
    assert result_digest(load_config(overrides=["seed=1"])) != base
