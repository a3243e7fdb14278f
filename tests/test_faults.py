"""Fault injection: a role's process is killed at a random point of a stage, the run finishes, and
its buffer holds exactly what an undisturbed run with the same seed holds: nothing lost, nothing
doubled, nothing changed.

Killed, each in a run of its own: the generator engine, the judge replica and the buffer actor
(SIGKILL to the actor's process, as a crash), and the driver process itself, which is then
resumed with `raylign run --resume`. The stage is drawn from those the role works in, and the
moment within it from the undisturbed run (after a random number of its batches, or a random
time into it); RAYLIGN_FAULT_SEED changes the draw, and every test prints where its fault
landed. A learner rank killed mid-training: tests/actors/test_learner.py.
"""

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

import psutil
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from raylign.actors.buffer import PreferenceBuffer
from raylign.config import dump_config, load_config
from raylign.driver import Driver
from raylign.run_state import STATE_FILE, RunState
from raylign.testing import kill_actor_process

SEED = int(os.environ.get("RAYLIGN_FAULT_SEED", "0"))
# Two batches a stage.
OVERRIDES = ["cycles=1", "prompts.prompts_per_cycle=16", "evaluation.suites.0.max_prompts=16", "learner.epochs=2",
             "generator.batch_size=8"]
GENERATING = [(0, "evaluate"), (1, "generate_judge"), (1, "evaluate")]
TARGETS = {  # role: (actor class, stages it works in)
    "generator": ("VLLMGenerator", GENERATING),
    "judge": ("ServeReplica:", GENERATING),
    "buffer": ("PreferenceBuffer", [(0, "load"), *GENERATING, (1, "build_data")]),
}


class Run(NamedTuple):
    run_dir: Path
    records: list[dict]
    counts: dict
    digests: dict
    seconds: dict[tuple[int, str], float]


def finished_run(run_dir: Path, records: list[dict]) -> Run:
    seconds = {(r["cycle"], stage): s for r in records for stage, s in r["seconds"].items()}
    return Run(run_dir, records, PreferenceBuffer(str(run_dir / "buffer")).counts(), digests(run_dir), seconds)


def digests(run_dir: Path) -> dict[str, str]:
    """A hash of each table's rows of cycles 0 and 1 (in a fixed order, latency left out) and of
    the cycle-1 adapter."""
    out = {}
    for table in ("prompts", "rollouts", "judgments", "pairs", "kto"):
        rows = [json.dumps({k: v for k, v in r.items() if k != "latency_s"}, sort_keys=True, default=str)
                for f in sorted((run_dir / "buffer" / table).glob("cycle=[01]/*.parquet"))
                for r in pq.read_table(f).to_pylist()]
        out[table] = hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:12]
    adapter = load_file(run_dir / "adapters" / "cycle_001" / "adapter_model.safetensors")
    out["adapter"] = hashlib.sha256(b"".join(adapter[k].numpy().tobytes() for k in sorted(adapter))).hexdigest()[:12]
    return out


def read_state(run_dir: Path) -> tuple[tuple[int, str] | None, list[tuple[int, str]]]:
    """The stage under way and the finished ones, as the run's state file says now."""
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):  # not written yet
        return None, []
    return (tuple(state["running"]) if state["running"] else None), [tuple(s) for s in state["finished"]]


def judged_batches(run_dir: Path, stage: tuple[int, str]) -> int:
    """Judgments parts committed so far in a generate-and-judge stage."""
    cycle, name = stage
    prefix = "train" if name == "generate_judge" else "eval"
    return len(list((run_dir / "buffer" / "judgments" / f"cycle={cycle}").glob(f"{prefix}-*.parquet")))


class Point(NamedTuple):
    """Where a fault strikes: `delay` seconds after `stage` has committed `batches` judged batches."""

    stage: tuple[int, str]
    batches: int
    delay: float


def draw(target: str, undisturbed: Run) -> Point:
    """A stage the role works in, and a moment in it: in a generate-and-judge stage after a random
    number of its batches, elsewhere a random time within the stage's undisturbed length."""
    rng = random.Random(f"{SEED}-{target}")
    stage = rng.choice(TARGETS[target][1] if target in TARGETS else list(undisturbed.seconds))
    seconds = undisturbed.seconds[stage]
    if stage in GENERATING:
        batches = judged_batches(undisturbed.run_dir, stage)
        return Point(stage, rng.randrange(batches), rng.uniform(0, 0.5 * seconds / batches))
    return Point(stage, 0, rng.uniform(0, 0.9 * seconds))


class Fault(threading.Thread):
    """Calls `kill` at `point` of the run in `run_dir`; records the stage it landed in."""

    def __init__(self, run_dir: Path, point: Point, kill: Callable[[], object]):
        super().__init__(daemon=True)
        self.run_dir, self.point, self.kill = run_dir, point, kill
        self.landed: tuple[int, str] | None = None
        self.done = threading.Event()

    def run(self):
        deadline = time.monotonic() + 600
        stage, batches, delay = self.point
        while time.monotonic() < deadline:
            running, finished = read_state(self.run_dir)
            if stage in finished:  # a stage shorter than the polling: strike at once, in the next one
                break
            if running == stage and (not batches or judged_batches(self.run_dir, stage) >= batches):
                time.sleep(delay)
                break
            time.sleep(0.005)
        self.landed = read_state(self.run_dir)[0]
        self.kill()
        self.done.set()

    def __str__(self) -> str:
        stage, batches, delay = self.point
        return f"{delay:.2f}s after {batches} judged batch(es) of {stage}, landed in {self.landed}"


@pytest.fixture(scope="module")
def config(model_path):
    return load_config(overrides=[*OVERRIDES, f"model.path={model_path}"])


@pytest.fixture(scope="module")
def undisturbed(local_ray, config, tmp_path_factory) -> Run:
    run_dir = tmp_path_factory.mktemp("undisturbed")
    return finished_run(run_dir, Driver(config, run_dir, log=lambda _: None).run())


def assert_same_as(undisturbed: Run, run: Run) -> None:
    """Cycles 0 and 1 of `run` are the undisturbed run's."""
    counts = {table: {c: n for c, n in per_cycle.items() if c <= 1} for table, per_cycle in run.counts.items()}
    assert counts == undisturbed.counts  # nothing lost, nothing doubled
    assert run.digests == undisturbed.digests  # nothing changed, down to the adapter's bytes
    for mine, theirs in zip(run.records[:2], undisturbed.records, strict=True):
        assert {k: v for k, v in mine.items() if k != "seconds"} == {k: v for k, v in theirs.items() if k != "seconds"}


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_role_killed_mid_stage_is_restarted_and_the_run_loses_no_row(target, undisturbed, config, tmp_path):
    pids = []
    fault = Fault(tmp_path, draw(target, undisturbed), lambda: pids.append(kill_actor_process(TARGETS[target][0])))
    fault.start()
    records = Driver(config, tmp_path, log=lambda _: None).run()
    assert fault.done.wait(timeout=5) and pids
    print(f"seed {SEED}: killed the {target} (pid {pids[0]}) {fault}; "
          f"rows {sum(sum(c.values()) for c in undisturbed.counts.values())}")
    assert_same_as(undisturbed, finished_run(tmp_path, records))


def test_a_killed_driver_resumes_where_it_died_and_the_run_loses_no_row(undisturbed, config, tmp_path, capsys):
    """`raylign run` in a process of its own (with its own local Ray), SIGKILLed mid-stage; the
    run folder is moved (a run folder may move) and `raylign run --resume --set cycles=2` finishes
    the cycle it died in and runs one more, from the cycle-1 checkpoint."""
    config_file, run_dir = tmp_path / "config.yaml", tmp_path / "run"
    config_file.write_text(dump_config(config))
    cli = [sys.executable, "-m", "raylign", "run"]
    driver = subprocess.Popen([*cli, str(config_file), "--out", str(run_dir)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    family: list[psutil.Process] = []

    def kill_the_driver():
        with contextlib.suppress(psutil.Error):  # a driver that already finished has no family left
            family.extend(psutil.Process(driver.pid).children(recursive=True))
        driver.kill()

    fault = Fault(run_dir, draw("driver", undisturbed), kill_the_driver)
    fault.start()
    try:
        assert fault.done.wait(timeout=600), driver.communicate(timeout=1)[1][-2000:]
        driver.wait(timeout=30)
    finally:
        driver.kill()
        for process in family:  # a killed driver's local Ray winds down slowly; free the cores now
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    died_in = RunState.load(run_dir)
    committed = {f: f.stat().st_mtime_ns for table in ("rollouts", "judgments")
                 for f in (run_dir / "buffer" / table).glob("cycle=*/*.parquet")}
    with capsys.disabled():  # the log of where the fault landed, past the capture the CLI checks need
        print(f"seed {SEED}: killed the driver {fault}; {len(died_in.finished)} stage(s) and "
              f"{len(committed)} batch part(s) had been committed")
    assert died_in.running == fault.landed

    moved = tmp_path / "moved"
    run_dir.rename(moved)
    resumed = subprocess.run([*cli, "--resume", str(moved), "--set", "cycles=2"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {moved}: {len(died_in.finished)} stage(s) finished" in resumed.stdout
    state = RunState.load(moved)
    assert state.starts == 2 and state.running is None and len(state.finished) == len(undisturbed.seconds) + 4
    records = json.loads((moved / "metrics.json").read_text())
    assert_same_as(undisturbed, finished_run(moved, records))
    # No batch committed before the kill was generated or judged again.
    committed = {moved / f.relative_to(run_dir): mtime for f, mtime in committed.items()}
    assert {f: f.stat().st_mtime_ns for f in committed} == committed
    # The extra cycle trained on from cycle 1's checkpoint, in the moved folder.
    assert [r["cycle"] for r in records] == [0, 1, 2] and records[2]["training"]["steps"] > 0
    assert state.policy.path == "adapters/cycle_002" and (moved / "checkpoints" / "cycle_002").is_dir()
    assert PreferenceBuffer(str(moved / "buffer")).counts()["rollouts"][2] == undisturbed.counts["rollouts"][1]

    # Resumed once more: nothing left to run, so no Ray, only the table.
    from raylign.cli import main

    assert main(["run", "--resume", str(moved), "--set", "cycles=2"]) == 0
    assert "nothing left to run" in capsys.readouterr().out

