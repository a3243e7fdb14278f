"""A model that cannot be loaded stops `raylign run` and `raylign eval` in seconds, before any
role is placed, in one line naming the config key, and leaves no run folder behind."""

import json
import time

import pytest

from raylign.cli import main
from raylign.model_check import ModelError, check_model


def run_fails(capsys, argv, out) -> str:
    t0 = time.perf_counter()
    assert main([*argv, "--out", str(out)]) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raylign: error: ")
    assert not out.exists()  # so the same --out can start again
    return err


def test_a_missing_model_folder_stops_the_run_and_the_same_out_can_start_again(capsys, tmp_path):
    for _ in range(2):
        err = run_fails(capsys, ["run", "--set", "model.path=/no/such/folder"], tmp_path / "r")
        assert "model.path: '/no/such/folder' is not a folder" in err


def test_a_hub_id_with_no_hub_and_a_folder_without_a_causal_lm(capsys, tmp_path, model_path):
    err = run_fails(capsys, ["run", "--set", "model.path=some-org/some-model"], tmp_path / "r")
    assert "model.path: 'some-org/some-model' is not a local folder" in err and "give the folder of a saved model" in err
    (tmp_path / "empty").mkdir()
    err = run_fails(capsys, ["run", "--set", f"model.path={tmp_path / 'empty'}"], tmp_path / "r")
    assert "holds no config.json" in err
    # A model folder of the wrong kind: the embedded causal LM named as a reward model.
    judges = json.dumps([{"name": "rm", "kind": "reward_model", "reward_model": {"models": {"safety": model_path}}}])
    err = run_fails(capsys, ["run", "--set", f"judges={judges}"], tmp_path / "r")
    assert "judges[0].reward_model.models.safety:" in err and "is not a sequence-classification model" in err
    judges = json.dumps([{"name": "rules"}, {"name": "j", "kind": "llm", "llm": {"backend": "vllm", "model": "/nope"}}])
    err = run_fails(capsys, ["run", "--set", f"judges={judges}"], tmp_path / "r")
    assert "judges[1].llm.model: '/nope' is not a folder" in err
    err = run_fails(capsys, ["eval", "--policy", "/no/such/model"], tmp_path / "e")
    assert "policy '/no/such/model': '/no/such/model' is not a folder" in err


def test_the_embedded_model_passes_and_a_classifier_is_not_a_policy(model_path, tmp_path):
    check_model(model_path, "model.path")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    classifier = LlamaForSequenceClassification(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                            num_hidden_layers=1, num_attention_heads=2, num_labels=1))
    classifier.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(model_path).save_pretrained(tmp_path / "rm")
    check_model(str(tmp_path / "rm"), "judges[0].reward_model.models.safety", "classifier")
    with pytest.raises(ModelError, match=r"model.path: .* is not a causal language model"):
        check_model(str(tmp_path / "rm"), "model.path")


def test_a_role_that_cannot_start_leaves_no_run_folder(tmp_path, monkeypatch, model_path):
    """Past the checks, a role may still fail to start (a GPU too small, a judge that raises in
    its constructor): the run stops with that error and the same --out can start again."""
    import contextlib

    from raylign import driver
    from raylign.config import load_config

    def cannot_start(*args, **kwargs):
        raise RuntimeError("engine failed to start")

    monkeypatch.setattr(driver, "ray_session", lambda cfg: contextlib.nullcontext())
    monkeypatch.setattr(driver, "placed_roles", cannot_start)
    cfg = load_config(overrides=[f"model.path={model_path}"])
    for _ in range(2):
        with pytest.raises(RuntimeError, match="engine failed to start"):
            driver.Driver(cfg, tmp_path / "r", log=lambda _: None).run()
        assert not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError):
        driver.Driver(cfg, tmp_path / "mine", log=lambda _: None).run()
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]  # a folder it did not make stays


def test_a_role_that_fails_to_start_releases_the_roles_started_before_it(local_ray, tmp_path, monkeypatch, model_path):
    """A failed start in a shared Ray session (tests, notebooks) leaves no actor and no CPU held:
    the next run must not wait for what the failed one placed."""
    import ray

    from raylign import driver
    from raylign.config import load_config
    from raylign.storage import RunStorage
    from raylign.testing import live_actors

    def judge_that_raises(*args, **kwargs):
        raise RuntimeError("judge failed to start")

    monkeypatch.setattr(driver, "JudgePool", judge_that_raises)
    cfg = load_config(overrides=[f"model.path={model_path}"])
    with pytest.raises(RuntimeError, match="judge failed to start"):
        driver.place_roles(cfg, model_path, RunStorage.of(tmp_path / "r"), rank=16)

    def held() -> tuple[list, float]:
        alive = [a["ActorClassName"] for name in ("VLLMGenerator", "Learner", "PreferenceBuffer")
                 for a in live_actors(name)]
        return alive, ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0)

    deadline = time.monotonic() + 30  # ray.kill returns before the raylet frees the actor's CPUs
    while held() != ([], 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held() == ([], 0)
