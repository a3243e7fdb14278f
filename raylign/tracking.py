"""Experiment trackers: the run's figures, as each cycle is evaluated, in TensorBoard, Weights &
Biases or MLflow (config `tracking`). metrics.json stays the run's record; these are views of it.

- TensorBoard (`tracking.tensorboard`, on by default): event files under `<run>/tensorboard/`.
  On object storage (s3://...) they are written in the driver node's scratch folder and
  uploaded after every cycle and at the end.
- Weights & Biases (`tracking.wandb`, extra `raylign[wandb]`): a W&B run named after the run,
  online, offline (files under `<run>/wandb/`, for `wandb sync`) or disabled.
- MLflow (`tracking.mlflow`, extra `raylign[mlflow]`): an MLflow run in `experiment` on
  `tracking_uri`; the config flattened into params, the plots as artifacts.

Every tracker gets the same names (MLflow's allow no comma: `agreement/a-b/...` there):
- per evaluated cycle, at step = the cycle: `suite/<suite>/<figure>` and
  `suite/<suite>/<figure>/<key>` (each suite block's numbers, one level down), `train/<figure>`
  (the cycle's training: pairs, mean_loss, ...), `selection/value`, `selection/best_cycle`,
  `selection/suites/...`, `selection/<candidate>/value`, `agreement/<a,b>/kappa` (and
  observed, n), `seconds/<stage>`, `logs/<count>` and `logs/redactions/<kind>`,
  `logs/levels/<level>` (a run with conversation logs); the cycle's plots as images `images/<name>`;
- per training step: `train/step_loss` (`train/<candidate>/step_loss` for a selection
  candidate) at a global step that keeps counting across cycles; a cycle's candidates share
  the cycle's steps. W&B has one step counter, so there the figures are plotted against the
  metrics `cycle` and `train/global_step`;
- at start: the run's config (TensorBoard text, W&B config, MLflow params).

No tracker is given a secret: the content of every environment variable the config names (a
key ending in `_env`, such as judges[].llm.api_key_env) is replaced by `***` wherever it
appears, as are passwords in URIs; no environment variable is logged, and W&B captures no
console output, git state or code.

A tracker that cannot start (its extra not installed, W&B not logged in) stops the run at start
with a one-line ConfigError; one that fails later logs one line and the run goes on without it.
A resumed run starts new W&B and MLflow runs of the same name and adds event files to
TensorBoard's folder.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple

import numpy as np
import yaml

from raylign.config import ConfigError, MLflowConfig, TrackingConfig, WandbConfig
from raylign.storage import RunStorage

TRACKER_FOLDERS = ("tensorboard", "wandb")
"""What the trackers write in a local run folder (W&B's offline files in its wandb/)."""

Point = tuple[int, float]
"""(step, value)."""


class Image(NamedTuple):
    png: bytes
    """As given: MLflow stores the file."""
    rgb: np.ndarray
    """Height x width x 3, uint8: what TensorBoard and W&B draw."""


# -- what the trackers log ------------------------------------------------------------------


def _numbers(prefix: str, value, depth: int) -> dict[str, float]:
    """The finite numbers in `value` (a number, or a dict nested up to `depth` levels), keyed by
    their path under `prefix`. Booleans, text, lists and non-finite figures are left out: the
    first are no figures, and metrics.json writes the last as null."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: float(value)} if math.isfinite(value) else {}
    if isinstance(value, dict) and depth > 0:
        return {k: v for key, sub in value.items() for k, v in _numbers(f"{prefix}/{key}", sub, depth - 1).items()}
    return {}


def cycle_scalars(record: dict) -> dict[str, float]:
    """A metrics.json record's figures as tracker scalars (the module docstring lists them).
    The headline figures at the top of a record are the headline suite's, so they appear once,
    under `suite/`. Keys a record lacks (training at cycle 0, selection) give no scalars."""
    selection = record.get("selection") or {}
    scalars = {
        **_numbers("suite", record.get("suites") or {}, 3),
        **_numbers("train", record.get("training") or {}, 1),
        **_numbers("selection", {k: selection.get(k) for k in ("value", "best_cycle")}, 1),
        **_numbers("selection/suites", selection.get("suites") or {}, 3),
        **_numbers("agreement", record.get("agreement") or {}, 2),  # kappa, observed, n: not the confusion
        **_numbers("seconds", record.get("seconds") or {}, 1),
        **_numbers("logs", record.get("logs") or {}, 2),  # counts by kind and level, never a value
    }
    for candidate in selection.get("candidates") or []:
        scalars.update(_numbers(f"selection/{candidate['name']}/value", candidate.get("value"), 0))
    return scalars


def step_tag(candidate: str | None) -> str:
    return "train/step_loss" if candidate is None else f"train/{candidate}/step_loss"


class Secrets:
    """What no tracker may be given: the values of the environment variables the config names
    (keys ending in `_env` hold a variable's name, never its value, but the value may have been
    pasted elsewhere in the config), and passwords or keys written into URIs."""

    _USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
    _QUERY_KEY = re.compile(r"([?&][^=&\s]*(?:key|token|secret|password)[^=&\s]*=)[^&\s]*", re.IGNORECASE)

    def __init__(self, config: dict):
        names = set(self._env_names(config))
        # Longest first: a key that contains another is replaced whole.
        self.values = sorted({os.environ[n] for n in names if os.environ.get(n)}, key=len, reverse=True)

    @classmethod
    def _env_names(cls, value) -> Iterable[str]:
        if isinstance(value, dict):
            for key, sub in value.items():
                if str(key).endswith("_env") and isinstance(sub, str):
                    yield sub
                yield from cls._env_names(sub)
        elif isinstance(value, list):
            for sub in value:
                yield from cls._env_names(sub)

    def text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return self._QUERY_KEY.sub(r"\1***", self._USERINFO.sub(r"\1***@", text))

    def config(self, value):
        """`value` (the config as a dict) with every string scrubbed, keys included."""
        if isinstance(value, dict):
            return {self.text(str(k)): self.config(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.config(v) for v in value]
        return self.text(value) if isinstance(value, str) else value


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """`{"learner.beta": "0.3", "judges.0.name": "rules", ...}`: MLflow's params are flat text.
    A list of values is one param, as JSON."""
    out = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image as PILImage  # matplotlib's own dependency

    with PILImage.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


# -- the trackers -----------------------------------------------------------------------------


class _TensorBoard:
    name = "tensorboard"

    def __init__(self, storage: RunStorage, config: dict, log: Callable[[str], None]):
        from torch.utils.tensorboard import SummaryWriter

        self.storage, self.log = storage, log
        if storage.is_local:
            self.folder = Path(storage.root) / "tensorboard"
        else:
            # Object stores have no appendable files: the events grow here and are uploaded whole.
            self.folder = storage.scratch("tensorboard")
            shutil.rmtree(self.folder, ignore_errors=True)  # what a killed writer left was uploaded or is lost
        self.writer = SummaryWriter(str(self.folder))
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```")

    def cycle(self, cycle: int, scalars: dict[str, float], images: dict[str, Image]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, cycle)
        for name, image in images.items():
            self.writer.add_image(f"images/{name}", image.rgb, cycle, dataformats="HWC")
        self.writer.flush()
        self._upload()

    def steps(self, tag: str, points: list[Point]) -> None:
        for step, value in points:
            self.writer.add_scalar(tag, value, step)

    def close(self, failed: bool) -> None:
        self.writer.close()
        self._upload()

    def _upload(self) -> None:
        if self.storage.is_local:
            return
        try:
            self.storage.upload(self.folder, "tensorboard")
        except Exception as e:  # the events stay here: the next upload sends them all
            self.log(f"tracking: uploading TensorBoard's events to {self.storage.uri('tensorboard')} failed "
                     f"({_why(e)}); retried after the next cycle")


class _Wandb:
    name = "wandb"

    def __init__(self, cfg: WandbConfig, storage: RunStorage, run_name: str, config: dict):
        import wandb

        self.wandb, self.storage, self.uploads = wandb, storage, cfg.mode != "disabled" and not storage.is_local
        # W&B puts its files in <dir>/wandb/: the run folder, or scratch uploaded at the end.
        root = Path(storage.root) if storage.is_local else storage.scratch("wandb")
        root.mkdir(parents=True, exist_ok=True)
        # No console capture, git state or code: they could carry what the run must not log.
        settings = wandb.Settings(console="off", disable_git=True, save_code=False, silent=True)
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=run_name, mode=cfg.mode,
                              dir=str(root), config=config, settings=settings)
        self.run.define_metric("cycle")
        self.run.define_metric("train/global_step")
        self.defined: set[str] = set()

    def _define(self, keys: Iterable[str], step_metric: str) -> None:
        # W&B's one step counter cannot be both cycle and training step: each key names its axis.
        for key in keys:
            if key not in self.defined:
                self.run.define_metric(key, step_metric=step_metric)
                self.defined.add(key)

    def cycle(self, cycle: int, scalars: dict[str, float], images: dict[str, Image]) -> None:
        figures = {f"images/{name}": self.wandb.Image(image.rgb) for name, image in images.items()}
        self._define([*scalars, *figures], "cycle")
        self.run.log({"cycle": cycle, **scalars, **figures})

    def steps(self, tag: str, points: list[Point]) -> None:
        self._define([tag], "train/global_step")
        for step, value in points:
            self.run.log({"train/global_step": step, tag: value})

    def close(self, failed: bool) -> None:
        folder = Path(self.run.dir).parent
        self.run.finish(exit_code=1 if failed else 0)
        # W&B's service writes the run's file when it stops (at exit, else): stop it now, so the
        # files are whole when close returns. The run owns W&B in its driver process.
        self.wandb.teardown()
        if self.uploads:
            self.storage.upload(folder, f"wandb/{folder.name}")


class _MLflow:
    name = "mlflow"

    def __init__(self, cfg: MLflowConfig, run_name: str, config: dict):
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        self.Metric, self.batch = Metric, MAX_METRICS_PER_BATCH
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        experiment = self.client.get_experiment_by_name(cfg.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [Param(self.key(k), v[:MAX_PARAM_VAL_LENGTH]) for k, v in flat_params(config).items()]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    @staticmethod
    def key(name: str) -> str:
        # MLflow's names: letters, digits, `_ - . / :` and spaces; the agreement pair's comma is `-`.
        return re.sub(r"[^\w\-./: ]", "-", name)[:250]

    def _log(self, metrics: list) -> None:
        for i in range(0, len(metrics), self.batch):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + self.batch])

    def cycle(self, cycle: int, scalars: dict[str, float], images: dict[str, Image]) -> None:
        now = int(time.time() * 1000)
        self._log([self.Metric(self.key(k), v, now, cycle) for k, v in scalars.items()])
        if images:
            with tempfile.TemporaryDirectory() as tmp:
                for name, image in images.items():
                    path = Path(tmp) / f"cycle_{cycle:03d}.png"
                    path.write_bytes(image.png)
                    self.client.log_artifact(self.run_id, str(path), f"images/{name.removesuffix('.png')}")

    def steps(self, tag: str, points: list[Point]) -> None:
        now = int(time.time() * 1000)
        self._log([self.Metric(self.key(tag), value, now, step) for step, value in points])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _why(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


_EXTRAS = {
    "tensorboard": ('tracking.tensorboard needs TensorBoard: pip install "tensorboard>=2.18" '
                    "(or set tracking.tensorboard false)"),
    "wandb": 'tracking.wandb.enabled needs W&B: pip install "raylign[wandb]" (or set tracking.wandb.enabled false)',
    "mlflow": ('tracking.mlflow.enabled needs MLflow: pip install "raylign[mlflow]" '
               "(or set tracking.mlflow.enabled false)"),
}


class Trackers:
    """The run's trackers, one instance per run, called by the driver. No method raises for a
    tracker's failure once started: the tracker is dropped with one line through `log`."""

    def __init__(self, trackers: list, secrets: Secrets, log: Callable[[str], None], global_step: int = 0):
        self.trackers, self.secrets, self.log = trackers, secrets, log
        self.next_step = global_step
        self.cycle_start: dict[int, int] = {}
        self.done: dict[tuple[int, str | None], int] = {}

    @classmethod
    def of(cls, cfg: TrackingConfig, storage: RunStorage | str | Path, run_name: str, config_dict: dict,
           log: Callable[[str], None] = print, global_step: int = 0) -> "Trackers":
        """Start the trackers `cfg` enables for the run at `storage`, named `run_name`, logging
        `config_dict` (the run's config as a dict) less its secrets. `global_step`: where the
        training steps go on from (a resumed run: the sum of its earlier records' training steps).
        Raises ConfigError, one line, for a tracker that cannot start."""
        storage = RunStorage.of(storage)
        secrets = Secrets(config_dict)
        config, run_name = secrets.config(config_dict), secrets.text(run_name)
        starts = []
        if cfg.tensorboard:
            starts.append(("tensorboard", lambda: _TensorBoard(storage, config, lambda line: log(secrets.text(line)))))
        if cfg.wandb.enabled:
            starts.append(("wandb", lambda: _Wandb(cfg.wandb, storage, run_name, config)))
        if cfg.mlflow.enabled:
            starts.append(("mlflow", lambda: _MLflow(cfg.mlflow, run_name, config)))
        trackers = cls([], secrets, log, global_step)
        for name, start in starts:
            try:
                trackers.trackers.append(start())
            except Exception as e:
                trackers.close(failed=True)  # those already started end here
                if isinstance(e, ImportError):
                    raise ConfigError(_EXTRAS[name]) from None
                raise ConfigError(f"tracking.{name}: could not start ({secrets.text(_why(e))})") from None
        return trackers

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def _each(self, what: str, call: Callable) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:
                self.trackers.remove(tracker)
                self.log(f"tracking: {tracker.name} failed at {what} ({self.secrets.text(_why(e))}); "
                         "the run goes on without it")

    def cycle(self, record: dict, images: Mapping[str, bytes] | None = None) -> None:
        """An evaluated cycle: its metrics.json record and its plots (name -> PNG bytes)."""
        if not self.trackers:
            return
        try:
            scalars = {self.secrets.text(k): v for k, v in cycle_scalars(record).items()}
            cycle = int(record["cycle"])
        except Exception as e:
            self.log(f"tracking: a record the trackers cannot read ({_why(e)}); its cycle is not tracked")
            return
        decoded = {}
        for name, png in (images or {}).items():
            try:
                decoded[self.secrets.text(name)] = Image(png, _decode(png))
            except Exception as e:
                self.log(f"tracking: image {name!r} of cycle {cycle} is no PNG ({_why(e)}); left out")
        self._each(f"cycle {cycle}", lambda t: t.cycle(cycle, scalars, decoded))

    def train_steps(self, cycle: int, losses: list[float], candidate: str | None = None) -> None:
        """The training loss of each step of `cycle` (of `candidate`, for a run that selects), in
        order; called once or in chunks. Steps count on across cycles; a cycle's candidates all
        start where the cycle does, so their curves overlay."""
        if not self.trackers:
            return
        start = self.cycle_start.setdefault(cycle, self.next_step)
        first = self.done.get((cycle, candidate), start)
        self.done[(cycle, candidate)] = first + len(losses)
        self.next_step = max(self.next_step, first + len(losses))
        points = [(first + i, float(v)) for i, v in enumerate(losses)
                  if isinstance(v, (int, float)) and math.isfinite(v)]
        tag = self.secrets.text(step_tag(candidate))
        self._each(f"cycle {cycle}'s training steps", lambda t: t.steps(tag, points))

    def close(self, failed: bool = False) -> None:
        """End every tracker (W&B and MLflow mark the run failed with `failed`); again is a no-op."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.close(failed)
            except Exception as e:
                self.log(f"tracking: {tracker.name} failed to close ({self.secrets.text(_why(e))})")

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(failed=kind is not None)
