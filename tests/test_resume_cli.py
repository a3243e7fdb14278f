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


def test_resume_keeps_the_runs_own_config(capsys, run_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("c") / "other.yaml"
    other.write_text("cycles: 2\n")
    assert "give no CONFIG or --out" in error_of(capsys, ["run", str(other), "--resume", str(run_dir)])
    err = error_of(capsys, ["run", "--resume", str(run_dir), "--set", "learner.beta=0.2"])
    assert "--set learner.beta would change what the run computes; only cycles, ray may be set" in err


def test_resume_refuses_a_config_edited_since_the_run_started(capsys, run_dir):
    (run_dir / "config.yaml").write_text(dump_config(load_config(overrides=["seed=3", f"out={run_dir}"])))
    assert "the config differs from the one the run started with" in error_of(capsys, ["run", "--resume", str(run_dir)])


def test_a_new_run_will_not_write_over_a_run_folder(capsys, run_dir):
    err = error_of(capsys, ["run", "--out", str(run_dir)])
    assert f"already holds a run (state.json): continue it with `raylign run --resume {run_dir}`" in err
