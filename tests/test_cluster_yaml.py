from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def test_cluster_yaml_is_valid_for_ray_up():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` runs: fill defaults, check the schema
    types = config["available_node_types"]
    assert {"generator", "judge", "learner"} <= set(types)
    for role in ("generator", "judge", "learner"):
        assert role in types[role]["resources"], f"{role} nodes must carry the {role!r} custom resource"


@pytest.mark.parametrize("run_config", ["cluster-gpu.yaml", "cluster-cpu.yaml"])
def test_cluster_run_config_asks_for_the_node_types_resources(run_config):
    from raylign.config import load_config

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    offered = {name: spec["resources"] for name, spec in cluster.items()}
    cfg = load_config(ROOT / "configs" / run_config)
    assert cfg.ray.address == "auto"
    for role_cfg, node in [(cfg.generator, "generator"), (cfg.judges[0], "judge"), (cfg.learner, "learner")]:
        for resource, amount in role_cfg.resources.items():
            assert 0 < amount <= offered[node][resource]


def test_the_schema_check_has_teeth():
    pytest.importorskip("jsonschema")
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["judge"]["replicas"] = 3  # not a cluster-launcher key
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_the_shipped_cluster_is_closed_by_default():
    """The dashboard and job server listen on the head's loopback (reached through `ray dashboard`'s
    SSH tunnel), and every node runs with Ray's token authentication, the token copied to it."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    for start in [head_start, *[c for c in config["worker_start_ray_commands"] if "ray start" in c]]:
        assert start.startswith("RAY_AUTH_MODE=token ray start")
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
