"""What a policy string names for `raylign eval`: a model, an adapter on model.path, a run's
last policy, one of its cycles, or its best."""

import json

import pytest

from raylign.config import ConfigError, dump_config, load_config
from raylign.data.schemas import BASE
from raylign.evaluate import resolve_policy
from raylign.run_state import RunState


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "adapters" / "cycle_001").mkdir(parents=True)
    (run / "adapters" / "cycle_002").mkdir(parents=True)
    for c in (1, 2):
        (run / "adapters" / f"cycle_{c:03d}" / "adapter_config.json").write_text(json.dumps({"r": 16}))
    (run / "config.yaml").write_text(dump_config(load_config(overrides=["model.path=/models/base"])))
    stages = [(0, "load"), (0, "evaluate")] + [(c, s) for c in (1, 2) for s in ("generate_judge", "build_data", "train", "evaluate")]
    records = [{"cycle": 0, "training": None}] + [
        {"cycle": c, "training": {"adapter": f"adapters/cycle_{c:03d}"}} for c in (1, 2)]
    RunState(config_digest="x", finished=stages, records=records).save(run)
    (run / "best.json").write_text(json.dumps({"cycle": 1, "policy": {"path": "adapters/cycle_001"}}))
    return run


def test_a_run_names_its_last_policy_or_one_cycle(run_dir):
    last = resolve_policy(str(run_dir), "embedded")
    assert last.model_path == "/models/base" and last.lora_rank == 16
    assert (last.policy.version, last.policy.kind, last.policy.path) == (2, "lora", str(run_dir / "adapters" / "cycle_002"))
    assert resolve_policy(f"{run_dir}@1", "embedded").policy.path.endswith("cycle_001")
    start = resolve_policy(f"{run_dir}@0", "embedded")
    assert start.policy == BASE and start.model_path == "/models/base"
    with pytest.raises(ConfigError, match="has no trained cycle 3"):
        resolve_policy(f"{run_dir}@3", "embedded")
    with pytest.raises(ConfigError, match="after @ comes a cycle number or `best`"):
        resolve_policy(f"{run_dir}@last", "embedded")
    best = resolve_policy(f"{run_dir}@best", "embedded")  # best.json's cycle
    assert (best.policy.version, best.policy.path) == (1, str(run_dir / "adapters" / "cycle_001"))


def test_an_adapter_rides_on_model_path_and_a_model_is_itself(run_dir):
    adapter = resolve_policy(str(run_dir / "adapters" / "cycle_001"), "/models/other")
    assert adapter.model_path == "/models/other" and adapter.policy.kind == "lora" and adapter.lora_rank == 16
    model = resolve_policy("org/some-model", "embedded")
    assert (model.model_path, model.policy, model.lora_rank) == ("org/some-model", BASE, None)
    with pytest.raises(ConfigError, match="is not a run folder"):
        resolve_policy("/models/base@2", "embedded")
