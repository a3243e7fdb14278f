"""`raylign run --resume RUN`: what it refuses, each with one line (no Ray is started for these)."""

import pytest

from raylign.cli import main
from raylign.config import dump_config, load_config, result_digest
from raylign.run_state import RunState


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as a run leaves it once its first stage began."""
    cfg = load_config(overrides=[f"out={tmp_path}"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    RunState(config_digest=result_digest(cfg)).save(tmp_path)
    return tmp_path


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raylign: error: ") and "\n" not in err
    return err


def test_resume_needs_a_run_folder(capsys, tmp_path):
    assert "has no config.yaml: not a raylign run folder" in error_of(capsys, ["run", "--resume", str(tmp_path)])
    (tmp_path / "config.yaml").write_text(dump_config(load_config()))
    assert "has no state.json" in error_of(capsys, ["run", "--resume", str(tmp_path)])


def test_resume_refuses_a_change_to_what_the_run_computes_naming_the_key(capsys, run_dir, tmp_path_factory):
    assert "give no --out" in error_of(capsys, ["run", "--resume", str(run_dir), "--out", str(run_dir)])
    err = error_of(capsys, ["run", "--resume", str(run_dir), "--set", "learner.beta=0.2"])
    assert "--resume: learner.beta is 0.2, but the run started with 0.3, which changes what the run computes" in err
    other = tmp_path_factory.mktemp("c") / "other-cluster.yaml"  # a config for another cluster, one computed change
    other.write_text("judges: [{name: rules, replicas: 3, resources: {judge: 1}}]\nprompts: {prompts_per_cycle: 8}\n")
    err = error_of(capsys, ["run", str(other), "--resume", str(run_dir)])
    assert "--resume: prompts.prompts_per_cycle is 8, but the run started with null" in err


def test_resume_refuses_a_config_edited_since_the_run_started(capsys, run_dir):
    (run_dir / "config.yaml").write_text(dump_config(load_config(overrides=["seed=3", f"out={run_dir}"])))
    assert "its config.yaml no longer matches the digest state.json recorded" in error_of(capsys, ["run", "--resume",
                                                                                                str(run_dir)])


def test_a_new_run_will_not_write_over_a_run_folder(capsys, run_dir):
    err = error_of(capsys, ["run", "--out", str(run_dir)])
    assert f"already holds a run (state.json): continue it with `raylign run --resume {run_dir}`" in err
