from pathlib import Path

import pytest
import yaml

from raylign.config import Config, ConfigError, dump_config, load_config

CONFIGS = Path(__file__).parents[1] / "configs"


def test_defaults_are_the_embedded_local_run():
    cfg = load_config()
    assert cfg.cycles == 3 and cfg.algorithm == "dpo"
    assert cfg.model.path == "embedded" and cfg.prompts.path == "embedded"
    assert cfg.generator.sampling.samples_per_prompt >= 4
    assert [j.kind for j in cfg.judges] == ["rules"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_exemplar_config_validates(path):
    load_config(path)


def test_local_yaml_is_the_default():
    assert load_config(CONFIGS / "local.yaml") == load_config()


def test_unknown_key_is_one_line_naming_it(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("learner:\n  learnin_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("config learner.learnin_rate: unknown key")


def test_wrong_value_names_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"^config algorithm: must be one of 'dpo', 'kto' or 'modpo' \(got 'ppo'\)$"):
        load_config(overrides=["algorithm=ppo"])
    with pytest.raises(ConfigError, match=r"config judges\[0\]\.replicas: .*greater than or equal to 1 \(got 0\)"):
        load_config(overrides=["judges.0.replicas=0"])
    with pytest.raises(ConfigError, match=r"config cycles: .*valid integer"):
        load_config(overrides=["cycles=many"])


def test_dotted_overrides():
    cfg = load_config(CONFIGS / "local.yaml", ["cycles=2", "learner.learning_rate=5e-4", "generator.sampling.temperature=0.7",
                                               "judges.0.replicas=3", "prompts.prompts_per_cycle=null"])
    assert cfg.cycles == 2
    assert cfg.learner.learning_rate == 5e-4
    assert cfg.generator.sampling.temperature == 0.7
    assert cfg.judges[0].replicas == 3
    assert cfg.prompts.prompts_per_cycle is None


def test_override_without_equals_is_explained():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(overrides=["cycles"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="samples_per_prompt must be >= 2"):
        load_config(overrides=["generator.sampling.samples_per_prompt=1"])
    with pytest.raises(ConfigError, match="batch_size 2 is split across learner.world_size 4 ranks"):
        load_config(overrides=["learner.world_size=4", "learner.batch_size=2"])
    with pytest.raises(ConfigError, match=r"^config generator: .*tensor_parallel_size 2 .* generator.num_gpus >= 2 \(got 1.0\)$"):
        load_config(overrides=["generator.vllm.tensor_parallel_size=2", "generator.num_gpus=1"])
    with pytest.raises(ConfigError, match=r"learner.lora.r must be a rank vLLM serves, .* \(got 12\)"):
        load_config(overrides=["learner.lora.r=12"])
    assert load_config(overrides=["learner.lora.r=12", "generator.backend=hf"]).learner.lora.r == 12
    with pytest.raises(ConfigError, match="pipeline.max_staleness 1 overlaps .* a run with selection knows the next "
                                          "cycle's policy only after evaluating"):
        load_config(overrides=["pipeline.max_staleness=1", "selection.candidates=[dpo, kto]"])
    with pytest.raises(ConfigError, match=r"^config pipeline.max_staleness: .*less than or equal to 1"):
        load_config(overrides=["pipeline.max_staleness=2"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cycles: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_dump_round_trips():
    cfg = load_config(overrides=["cycles=5"])
    assert Config.model_validate(yaml.safe_load(dump_config(cfg))) == cfg


def test_an_older_runs_config_still_loads(tmp_path):
    """prompts.max_eval_prompts (before evaluation suites) is the held-out suite's max_prompts."""
    old = tmp_path / "config.yaml"
    old.write_text("prompts:\n  path: embedded\n  max_eval_prompts: 16\n")
    assert load_config(old).evaluation.suites[0].max_prompts == 16
    assert load_config(old).evaluation.suites[0].name == "held_out"


def test_one_suite_at_most_is_the_held_out_split():
    with pytest.raises(ConfigError, match="both have no path"):
        load_config(overrides=["evaluation.suites=[{name: a}, {name: b}]"])
