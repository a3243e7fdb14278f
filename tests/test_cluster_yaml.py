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


def test_cluster_run_config_asks_for_the_node_types_resources():
    from raylign.config import load_config

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    offered = {name: spec["resources"] for name, spec in cluster.items()}
    cfg = load_config(ROOT / "configs" / "cluster-gpu.yaml")
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
