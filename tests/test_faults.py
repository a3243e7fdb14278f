"""Fault injection: a role's process is killed at a random point of a stage, the run finishes, and
its buffer holds exactly what an undisturbed run with the same seed holds: nothing lost, nothing
doubled, nothing changed.

Killed, each in a run of its own: the generator engine, the judge replica, the buffer actor and
one learner rank (SIGKILL to the actor's process, as a crash), and the driver process itself,
which is then resumed with `raylign run --resume`. The stage is drawn from those the role works
in and the moment from the stage's length in the undisturbed run; RAYLIGN_FAULT_SEED changes
the draw (every test prints where its fault landed).
"""

import contextlib
import hashlib
import json
import os
import random
import shutil
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
# Two learner ranks (a dead rank leaves the other waiting in a collective) and two batches a stage.
OVERRIDES = ["cycles=1", "prompts.prompts_per_cycle=16", "prompts.max_eval_prompts=16", "learner.epochs=2",
             "generator.batch_size=8", "learner.world_size=2"]
GENERATING = [(0, "evaluate"), (1, "generate_judge"), (1, "evaluate")]
TARGETS = {  # role: (actor class, stages it works in)
    "generator": ("VLLMGenerator", GENERATING),
    "judge": ("ServeReplica:", GENERATING),
    "buffer": ("PreferenceBuffer", [(0, "load"), *GENERATING, (1, "build_data")]),
    "learner": ("Learner", [(1, "train")]),
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
    """A hash of each table's rows (in a fixed order, latency left out) and of the final adapter."""
    out = {}
    for table in ("prompts", "rollouts", "judgments", "pairs", "kto"):
        rows = [json.dumps({k: v for k, v in r.items() if k != "latency_s"}, sort_keys=True, default=str)
                for f in sorted((run_dir / "buffer" / table).glob("cycle=*/*.parquet"))
                for r in pq.read_table(f).to_pylist()]
        out[table] = hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:12]
    adapter = load_file(run_dir / "adapters" / "cycle_001" / "adapter_model.safetensors")
    out["adapter"] = hashlib.sha256(b"".join(adapter[k].numpy().tobytes() for k in sorted(adapter))).hexdigest()[:12]
    return out


def running_stage(run_dir: Path) -> tuple[int, str] | None:
    try:
        running = json.loads((run_dir / STATE_FILE).read_text())["running"]
    except (OSError, ValueError):  # not written yet
        return None
    return tuple(running) if running else None


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
        while time.monotonic() < deadline and not (
                running_stage(self.run_dir) == stage and (not batches or judged_batches(self.run_dir, stage) >= batches)):
            time.sleep(0.005)
        time.sleep(delay)
        self.landed = running_stage(self.run_dir)
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
    assert run.counts == undisturbed.counts  # nothing lost, nothing doubled
    assert run.digests == undisturbed.digests  # nothing changed, down to the adapter's bytes
    for mine, theirs in zip(run.records, undisturbed.records, strict=True):
        assert mine["safety_score"] == theirs["safety_score"]


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
    if target == "learner" and fault.landed == (1, "train"):
        assert records[1]["training"]["retries"] == 1


def test_a_killed_driver_resumes_where_it_died_and_the_run_loses_no_row(undisturbed, config, tmp_path):
    """`raylign run` in a process of its own (with its own local Ray), SIGKILLed mid-stage, then
    `raylign run --resume`."""
    config_file, run_dir = tmp_path / "config.yaml", tmp_path / "run"
    config_file.write_text(dump_config(config))
    cli = [sys.executable, "-m", "raylign", "run"]
    driver = subprocess.Popen([*cli, str(config_file), "--out", str(run_dir)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    family: list[psutil.Process] = []

    def kill_the_driver():
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
    print(f"seed {SEED}: killed the driver {fault}; {len(died_in.finished)} stage(s) and "
          f"{len(committed)} batch part(s) had been committed")
    assert died_in.running == fault.landed

    resumed = subprocess.run([*cli, "--resume", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir}: {len(died_in.finished)} stage(s) finished" in resumed.stdout
    state = RunState.load(run_dir)
    assert state.starts == 2 and state.running is None and len(state.finished) == len(undisturbed.seconds)
    records = json.loads((run_dir / "metrics.json").read_text())
    assert_same_as(undisturbed, finished_run(run_dir, records))
    # No batch committed before the kill was generated or judged again.
    assert {f: f.stat().st_mtime_ns for f in committed} == committed


def test_a_finished_run_resumes_with_more_cycles_and_keeps_what_it_had(undisturbed, config, tmp_path, capsys):
    """A copy of the undisturbed run (a run folder may move), resumed with cycles=2: nothing to
    redo at cycles=1; at cycles=2 one more cycle, trained on from the cycle-1 checkpoint."""
    from raylign.cli import main

    run_dir = tmp_path / "moved"
    shutil.copytree(undisturbed.run_dir, run_dir)
    assert main(["run", "--resume", str(run_dir)]) == 0  # all finished: no Ray, just the table
    assert "nothing left to run" in capsys.readouterr().out

    records = Driver(config.model_copy(update={"cycles": 2}), run_dir, log=lambda _: None, resume=True).run()
    assert [r["cycle"] for r in records] == [0, 1, 2]
    assert records[:2] == undisturbed.records
    counts = PreferenceBuffer(str(run_dir / "buffer")).counts()
    for table, per_cycle in undisturbed.counts.items():
        assert {c: n for c, n in counts[table].items() if c <= 1} == per_cycle  # cycles 0 and 1 untouched
    assert counts["rollouts"][2] == counts["rollouts"][1] and counts["pairs"][2] > 0
    state = RunState.load(run_dir)
    assert state.starts == 3 and state.policy.path == "adapters/cycle_002"
    assert records[2]["training"]["steps"] > 0 and (run_dir / "checkpoints" / "cycle_002").is_dir()
