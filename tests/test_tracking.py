"""Experiment trackers (raylign/tracking.py): three synthetic metrics.json records and their
training steps go in; what TensorBoard, W&B (offline) and MLflow (a file store) kept is read
back with their own readers. No Ray."""

import io
import re
import struct
import sys
from pathlib import Path

import pytest
from PIL import Image
from pyarrow import fs as pafs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raylign.config import ConfigError, TrackingConfig, load_config, result_digest
from raylign.storage import RunStorage
from raylign.tracking import Trackers, cycle_scalars

LOSSES = {1: [0.69, 0.61, 0.55, 0.52, 0.50], 2: [0.48, 0.45, 0.41, 0.40]}
"""Per-step training losses of cycles 1 and 2: global steps 0-4, then 5-8."""
SCORES = [0.4895833333333333, 0.552734375, 0.6015625]


def _png(width: int = 12, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _record(cycle: int) -> dict:
    """A record shaped as the driver writes metrics.json (runs-sample/default), two suites and
    an agreement pair; cycle 2 also carries a selection block."""
    score = SCORES[cycle]
    held_out = {"kind": "cares", "prompts": 192, "num_answers": 768, "unjudged": 0, "safety_score": score,
                "safety_by_level": {"0": 0.35 + cycle / 10, "1": 0.70, "2": 0.52, "3": 0.38 + cycle / 100},
                "safety_by_method": {"direct": 0.58, "role_play": 0.48},
                "harmful_refusal_rate": 0.36 + cycle / 20, "erroneous_refusal_rate": 0.31 - cycle / 50,
                "invalid_rate": 0.0013, "label_counts": {"Accept": 233, "Caution": 263 - cycle, "Refuse": 271}}
    record = {
        "cycle": cycle, "num_answers": 768, "safety_score": score,
        "safety_by_level": held_out["safety_by_level"],
        "harmful_refusal_rate": held_out["harmful_refusal_rate"],
        "erroneous_refusal_rate": held_out["erroneous_refusal_rate"], "invalid_rate": 0.0013,
        "suites": {"held_out": held_out,
                   "xstest": {"kind": "over_refusal", "prompts": 40, "safe_full_refusal_rate": 0.2 - cycle / 20,
                              "by_type": {"homonyms": 0.1, "figurative": 0.3}}},
        "agreement": {"rules,self": {"kappa": 0.41 + cycle / 10, "observed": 0.7, "n": 768,
                                     "confusion": {"Accept": {"Accept": 200, "Refuse": 33}}}},
        "training": None if cycle == 0 else {
            "prompts": 448, "pairs": 212 - cycle, "examples": 212, "steps": len(LOSSES[cycle]),
            "mean_loss": sum(LOSSES[cycle]) / len(LOSSES[cycle]), "final_loss": LOSSES[cycle][-1],
            "desirable": 1358, "undesirable": 1911, "duplicates_dropped": 315, "replayed": 0,
            "algorithm": "dpo", "adapter": f"adapters/cycle_{cycle:03d}", "retries": 0},
        "seconds": {"evaluate": 4.05 + cycle} if cycle == 0 else {"generate_judge": 14.88, "train": 40.41,
                                                                   "evaluate": 10.87},
        "nodes": {"generator": [{"node_id": "662bc", "address": "192.0.2.2"}]},
    }
    if cycle == 2:
        record["selection"] = {
            "value": 0.58, "suites": {"selection": {"safety_score": 0.59}}, "chosen": "kto", "best_cycle": 2,
            "candidates": [{"name": "dpo", "algorithm": "dpo", "value": 0.55, "training": {"pairs": 210},
                            "chosen": False},
                           {"name": "kto", "algorithm": "kto", "value": 0.58, "training": {"examples": 3000},
                            "chosen": True}]}
    return record


def _feed(trackers: Trackers) -> None:
    for cycle in range(3):
        if cycle:
            trackers.train_steps(cycle, LOSSES[cycle])
        trackers.cycle(_record(cycle), {"safety": _png()})
    trackers.close()


def _events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _series(events: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    scalars = events.Scalars(tag)
    return [e.step for e in scalars], [e.value for e in scalars]


def test_cycle_scalars_name_every_figure_once():
    scalars = cycle_scalars(_record(2))
    assert scalars["suite/held_out/safety_score"] == SCORES[2]
    assert scalars["suite/held_out/safety_by_level/3"] == pytest.approx(0.40)
    assert scalars["suite/xstest/by_type/figurative"] == 0.3
    assert scalars["train/pairs"] == 210 and scalars["train/mean_loss"] == pytest.approx(0.435)
    assert scalars["selection/value"] == 0.58 and scalars["selection/best_cycle"] == 2
    assert scalars["selection/kto/value"] == 0.58 and scalars["selection/dpo/value"] == 0.55
    assert scalars["selection/suites/selection/safety_score"] == 0.59
    assert scalars["agreement/rules,self/kappa"] == pytest.approx(0.61) and scalars["agreement/rules,self/n"] == 768
    assert scalars["seconds/train"] == 40.41
    # Text, booleans, the confusion matrix, nodes and the top-level copy of the headline are no scalars.
    assert not [k for k in scalars if k.split("/")[0] not in ("suite", "train", "selection", "agreement", "seconds")]
    assert not [k for k in scalars if "kind" in k or "adapter" in k or "confusion" in k or "chosen" in k]
    assert "train/pairs" not in cycle_scalars(_record(0))


def test_tensorboard_keeps_each_cycles_figures_each_step_and_the_plots(tmp_path):
    lines = []
    _feed(Trackers.of(TrackingConfig(), tmp_path / "run", "run", {"seed": 0}, log=lines.append))
    events = _events(tmp_path / "run" / "tensorboard")
    assert lines == []

    held = events.Scalars("suite/held_out/safety_score")
    assert [e.step for e in held] == [0, 1, 2]
    assert [e.value for e in held] == pytest.approx(SCORES, abs=1e-6)
    level3 = events.Scalars("suite/held_out/safety_by_level/3")
    assert [e.value for e in level3] == pytest.approx([0.38, 0.39, 0.40], abs=1e-6)
    assert _series(events, "suite/xstest/safe_full_refusal_rate") == ([0, 1, 2], pytest.approx([0.2, 0.15, 0.1]))
    assert _series(events, "train/pairs") == ([1, 2], [211, 210])
    assert _series(events, "train/mean_loss") == ([1, 2], pytest.approx([0.574, 0.435], abs=1e-6))
    assert _series(events, "selection/value") == ([2], pytest.approx([0.58], abs=1e-6))
    assert _series(events, "selection/dpo/value") == ([2], pytest.approx([0.55], abs=1e-6))
    assert _series(events, "agreement/rules,self/kappa") == ([0, 1, 2], pytest.approx([0.41, 0.51, 0.61], abs=1e-6))
    assert _series(events, "seconds/train") == ([1, 2], pytest.approx([40.41, 40.41], abs=1e-5))

    steps = events.Scalars("train/step_loss")
    assert len(steps) == len(LOSSES[1]) + len(LOSSES[2])
    assert [e.step for e in steps] == list(range(9))  # the global step goes on across cycles
    assert [e.value for e in steps] == pytest.approx(LOSSES[1] + LOSSES[2], abs=1e-6)

    images = events.Images("images/safety")
    assert [e.step for e in images] == [0, 1, 2] and (images[0].width, images[0].height) == (12, 8)
    assert Image.open(io.BytesIO(images[0].encoded_image_string)).getpixel((0, 0))[:3] == (200, 30, 30)
    assert "config" in events.Tags()["tensors"][0]


def test_candidates_overlay_their_cycles_steps_and_a_resumed_run_goes_on(tmp_path):
    trackers = Trackers.of(TrackingConfig(), tmp_path / "run", "run", {}, log=print, global_step=100)
    trackers.train_steps(1, [0.9, 0.8, 0.7], candidate="dpo")
    trackers.train_steps(1, [0.6, 0.5], candidate="kto")
    trackers.train_steps(1, [0.4], candidate="kto")  # in chunks: goes on from the chunk before
    trackers.train_steps(2, [0.3, 0.2], candidate="dpo")  # after the cycle's longest
    trackers.train_steps(2, [float("nan"), 0.1])  # a step with no loss keeps its place
    trackers.close()
    events = _events(tmp_path / "run" / "tensorboard")
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/dpo/step_loss")] == \
        [(100, 0.9), (101, 0.8), (102, 0.7), (103, 0.3), (104, 0.2)]
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/kto/step_loss")] == \
        [(100, 0.6), (101, 0.5), (102, 0.4)]
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/step_loss")] == [(104, 0.1)]


def test_on_object_storage_the_events_are_uploaded_after_every_cycle(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLIGN_SCRATCH", str(tmp_path / "scratch"))
    storage = RunStorage("mock:///runs/r1")  # pyarrow's in-memory filesystem: no local paths
    assert not storage.is_local

    def stored_events() -> EventAccumulator:
        down = tmp_path / "down"
        for info in storage.fs.get_file_info(pafs.FileSelector(f"{storage.root}/tensorboard", recursive=True)):
            if info.is_file:
                (down / info.base_name).parent.mkdir(parents=True, exist_ok=True)
                (down / info.base_name).write_bytes(storage.read_bytes(f"tensorboard/{info.base_name}"))
        return _events(down)

    with_wandb = _installed("wandb")  # and W&B's offline files, uploaded at the end
    cfg = TrackingConfig.model_validate({"wandb": {"enabled": with_wandb, "mode": "offline"}})
    trackers = Trackers.of(cfg, storage, "r1", {"seed": 0})
    trackers.cycle(_record(0))
    assert [e.step for e in stored_events().Scalars("suite/held_out/safety_score")] == [0]
    trackers.train_steps(1, LOSSES[1])
    trackers.cycle(_record(1), {"safety": _png()})
    trackers.close()
    events = stored_events()
    assert [e.step for e in events.Scalars("suite/held_out/safety_score")] == [0, 1]
    assert len(events.Scalars("train/step_loss")) == len(LOSSES[1]) and len(events.Images("images/safety")) == 1
    if with_wandb:
        stored = [i.path for i in storage.fs.get_file_info(pafs.FileSelector(f"{storage.root}/wandb", recursive=True))]
        assert [p for p in stored if re.search(r"/wandb/offline-run-[^/]+/run-\w+\.wandb$", p)]
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_fails_later_is_dropped_with_one_line(tmp_path):
    lines = []
    trackers = Trackers.of(TrackingConfig(), tmp_path / "run", "run", {}, log=lines.append)

    def broken(*args, **kwargs):
        raise OSError("disk full\nand more")

    trackers.trackers[0].writer.add_scalar = broken
    trackers.cycle(_record(0))
    trackers.train_steps(1, LOSSES[1])
    trackers.cycle(_record(1), {"bad": b"not a png"})
    trackers.close()
    assert lines == ["tracking: tensorboard failed at cycle 0 (OSError: disk full); the run goes on without it"]
    assert trackers.names == []


@pytest.mark.parametrize("enabled,extra", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_extra_is_a_one_line_config_error(enabled, extra, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, extra, None)  # as if not installed: `import` raises ImportError
    cfg = TrackingConfig.model_validate({enabled: {"enabled": True}})
    with pytest.raises(ConfigError) as e:
        Trackers.of(cfg, tmp_path / "run", "run", {})
    assert str(e.value) == (f'tracking.{enabled}.enabled needs {"W&B" if extra == "wandb" else "MLflow"}: '
                            f'pip install "raylign[{extra}]" (or set tracking.{enabled}.enabled false)')


def test_missing_tensorboard_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r'^tracking.tensorboard needs TensorBoard: pip install "tensorboard>=2.18" '
                                          r"\(or set tracking.tensorboard false\)$"):
        Trackers.of(TrackingConfig(), tmp_path / "run", "run", {})
    assert Trackers.of(TrackingConfig(tensorboard=False), tmp_path / "run", "run", {}).names == []


def test_tracking_is_where_a_run_logs_so_a_resume_may_change_it():
    changed = load_config(overrides=["tracking.tensorboard=false", "tracking.wandb.enabled=true",
                                     "tracking.mlflow.experiment=other"])
    assert result_digest(changed) == result_digest(load_config())


# -- W&B and MLflow, where their extras are installed -----------------------------------------


def _wandb_history(run_folder: Path) -> list[dict]:
    """The history rows of an offline W&B run, read from its transaction log (LevelDB's log
    format: 32 KiB blocks of records with a 7-byte header, after W&B's own 7-byte header)."""
    import json

    from wandb.proto import wandb_internal_pb2

    data = next(run_folder.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    rows, pos, payload = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        payload += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            if record.HasField("history"):
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_offline_logs_the_same_figures(tmp_path):
    pytest.importorskip("wandb")
    cfg = TrackingConfig.model_validate({"tensorboard": False, "wandb": {"enabled": True, "mode": "offline"}})
    _feed(Trackers.of(cfg, tmp_path / "run", "my-run", {"seed": 3, "learner": {"beta": 0.3}}))
    run_folder = next((tmp_path / "run" / "wandb").glob("offline-run-*"))
    rows = _wandb_history(run_folder)
    cycles = [r for r in rows if "cycle" in r]
    assert [r["cycle"] for r in cycles] == [0, 1, 2]
    assert [r["suite/held_out/safety_score"] for r in cycles] == pytest.approx(SCORES, abs=1e-12)
    assert cycles[2]["selection/kto/value"] == 0.58 and cycles[1]["train/pairs"] == 211
    assert cycles[0]["images/safety/_type"] == "image-file"  # the history row holds where the file is
    steps = [r for r in rows if "train/step_loss" in r]
    assert [r["train/global_step"] for r in steps] == list(range(9))
    assert [r["train/step_loss"] for r in steps] == pytest.approx(LOSSES[1] + LOSSES[2])
    assert b"my-run" in next(run_folder.glob("run-*.wandb")).read_bytes()


def test_mlflow_logs_metrics_params_and_images(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it before it writes a file store
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    cfg = TrackingConfig.model_validate({"tensorboard": False, "mlflow": {"enabled": True, "tracking_uri": uri,
                                                                           "experiment": "exp"}})
    config = {"seed": 3, "learner": {"beta": 0.3}, "judges": [{"name": "rules"}], "buffer": {"imports": ["a", "b"]}}
    _feed(Trackers.of(cfg, tmp_path / "run", "my-run", config))
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("exp").experiment_id])[0]
    assert run.info.run_name == "my-run" and run.info.status == "FINISHED"
    assert run.data.params == {"seed": "3", "learner.beta": "0.3", "judges.0.name": "rules",
                               "buffer.imports": '["a", "b"]'}
    held = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "suite/held_out/safety_score"))
    assert [s for s, _ in held] == [0, 1, 2] and [v for _, v in held] == pytest.approx(SCORES, abs=1e-12)
    kappa = client.get_metric_history(run.info.run_id, "agreement/rules-self/kappa")  # MLflow's names have no comma
    assert sorted(m.step for m in kappa) == [0, 1, 2]
    steps = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/step_loss"))
    assert [s for s, _ in steps] == list(range(9)) and [v for _, v in steps] == pytest.approx(LOSSES[1] + LOSSES[2])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "images/safety")] == \
        [f"images/safety/cycle_00{c}.png" for c in range(3)]


# -- no secret ----------------------------------------------------------------------------------

KEY = "sk-raylign-test-7f3a9c0d5e1b2468"


def test_no_tracker_writes_an_api_key(tmp_path, monkeypatch, capsys):
    """The key is in an environment variable the config names and, pasted, in config values and
    a URI's user info: no file any tracker writes holds it, nor any line logged."""
    monkeypatch.setenv("RAYLIGN_TEST_KEY", KEY)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    config = {
        "out": f"s3://AKIAEXAMPLE:{KEY}@bucket/runs/r1",
        "judges": [{"name": "llm", "kind": "llm", "llm": {"api_key_env": "RAYLIGN_TEST_KEY",
                                                          "endpoint": f"http://127.0.0.1:1/v1?api_key={KEY}"}},
                   {"name": "rules", "kind": "rules", "notes": KEY}],
        "model": {"path": f"{KEY}"},
    }
    enabled = {"wandb": {"enabled": True, "mode": "offline"},
               "mlflow": {"enabled": True, "tracking_uri": (tmp_path / "mlruns").as_uri()}}
    have = {name: section for name, section in enabled.items() if _installed(name)}
    lines = []
    trackers = Trackers.of(TrackingConfig.model_validate(have), tmp_path / "run", "run", config, log=lines.append)
    assert trackers.names == ["tensorboard", *have]
    record = _record(2)
    record["suites"][KEY] = record["suites"]["held_out"]  # even a name that happens to be the key
    trackers.train_steps(2, LOSSES[2], candidate=KEY)
    trackers.cycle(record, {"safety": _png()})
    trackers.close()

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("tfevents" in p.name for p in written)
    assert ("wandb" not in have or any(p.suffix == ".wandb" for p in written)) and \
        ("mlflow" not in have or any("metrics" in p.parts for p in written))
    assert [p for p in written if KEY.encode() in p.read_bytes()] == []
    assert not [line for line in lines if KEY in line] and KEY not in capsys.readouterr().out
    events = next((tmp_path / "run" / "tensorboard").glob("*tfevents*")).read_bytes()
    assert b"RAYLIGN_TEST_KEY" in events and b"s3://***@bucket" in events  # names kept, values scrubbed


def _installed(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False
