"""Fault injection: a role's process is killed at a random point of a stage, the run finishes, and
its buffer holds exactly what an undisturbed run with the same seed holds: nothing lost, nothing
doubled, nothing changed.

Killed: the generator engine, the judge replica and the buffer actor (SIGKILL to the actor's
process, as a crash), each at its own point of one run, and in a run of its own the driver
process itself, which is then resumed with `raylign run --resume`. The stage is drawn from those
the role works in, and the moment within it from the undisturbed run (after a random number of
its batches, or a random time into it); RAYLIGN_FAULT_SEED changes the draw, and every test
prints where its fault landed. A learner rank killed mid-training: tests/actors/test_learner.py.
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
import pyarrow.compute as pc
import pytest
from safetensors.torch import load_file

from raylign.actors.buffer import PreferenceBuffer
from raylign.config import dump_config, load_config
from raylign.driver import Driver
from raylign.run_state import STATE_FILE, RunState
from raylign.storage import RunStorage
from raylign.testing import kill_actor_process

SEED = int(os.environ.get("RAYLIGN_FAULT_SEED", "0"))
# Two batches a stage. Runs with a fault run one cycle, or two when a kill lands in the second;
# the undisturbed run runs two, and every run is compared with it cycle by cycle.
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
    digests: dict[int, dict[str, str]]
    seconds: dict[tuple[int, str], float]


def finished_run(where: Path | str, records: list[dict]) -> Run:
    """A finished run's figures, read from its storage (a folder or a URI)."""
    storage = RunStorage(where)
    seconds = {(r["cycle"], stage): s for r in records for stage, s in r["seconds"].items()}
    counts = PreferenceBuffer(storage.uri("buffer")).counts()
    return Run(Path(str(where)), records, counts, digests(storage, len(records) - 1), seconds)


def digests(storage: RunStorage, cycles: int) -> dict[int, dict[str, str]]:
    """Per cycle: a hash of each table's rows (in a fixed order, latency left out) and of the
    cycle's adapter."""
    buffer, out = PreferenceBuffer(storage.uri("buffer")), {}
    for cycle in range(cycles + 1):
        out[cycle] = {}
        for table in ("prompts", "rollouts", "judgments", "pairs", "kto"):
            rows = [json.dumps({k: v for k, v in r.items() if k != "latency_s"}, sort_keys=True, default=str)
                    for r in buffer.read(table, cycle).to_pylist()]
            out[cycle][table] = hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()[:12]
        if cycle:
            adapter = load_file(storage.local(f"adapters/cycle_{cycle:03d}") / "adapter_model.safetensors")
            out[cycle]["adapter"] = hashlib.sha256(b"".join(adapter[k].numpy().tobytes()
                                                            for k in sorted(adapter))).hexdigest()[:12]
    return out


def state_of(where: Path | str) -> dict:
    """The run's state file as it is now ({} before it is written)."""
    try:
        return json.loads(RunStorage(where).read_text(STATE_FILE))
    except (OSError, ValueError):  # not written yet
        return {}


def read_state(where: Path | str) -> tuple[tuple[int, str] | None, list[tuple[int, str]]]:
    """The stage under way and the finished ones, as the run's state file says now."""
    state = state_of(where)
    return (tuple(state["running"]) if state.get("running") else None), [tuple(s) for s in state.get("finished", [])]


def judged_batches(where: Path | str, stage: tuple[int, str]) -> int:
    """Judgments parts committed so far in a generate-and-judge stage."""
    cycle, name = stage
    prefix = "train" if name == "generate_judge" else "eval"
    parts = PreferenceBuffer(RunStorage(where).uri("buffer")).parts("judgments", cycle)
    return sum(part.startswith(f"{prefix}-") for part in parts)


class Point(NamedTuple):
    """Where a fault strikes: `delay` seconds after `stage` has committed `batches` judged batches."""

    stage: tuple[int, str]
    batches: int
    delay: float


def draw(target: str, undisturbed: Run) -> Point:
    """A stage the role works in, and a moment in it: in a generate-and-judge stage after a random
    number of its batches, elsewhere a random time within the stage's undisturbed length."""
    rng = random.Random(f"{SEED}-{target}")
    stage = rng.choice(TARGETS[target][1] if target in TARGETS else [s for s in undisturbed.seconds if s[0] <= 1])
    seconds = undisturbed.seconds[stage]
    if stage in GENERATING:
        batches = judged_batches(undisturbed.run_dir, stage)
        return Point(stage, rng.randrange(batches), rng.uniform(0, 0.5 * seconds / batches))
    return Point(stage, 0, rng.uniform(0, 0.9 * seconds))


class Fault(threading.Thread):
    """Calls `kill` at `point` of the run in `run_dir`; records the stage it landed in."""

    def __init__(self, run_dir: Path | str, point: Point, kill: Callable[[], object], poll_s: float = 0.005):
        super().__init__(daemon=True)
        self.run_dir, self.point, self.kill, self.poll_s = run_dir, point, kill, poll_s
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
            time.sleep(self.poll_s)
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
    return finished_run(run_dir, Driver(config.model_copy(update={"cycles": 2}), run_dir, log=lambda _: None).run())


def assert_same_as(undisturbed: Run, run: Run) -> None:
    """Every cycle of `run` is the undisturbed run's."""
    cycles = len(run.records)
    expected = {table: {c: n for c, n in per_cycle.items() if c < cycles}
                for table, per_cycle in undisturbed.counts.items()}
    assert run.counts == {table: n for table, n in expected.items() if n}  # nothing lost, nothing doubled
    # Nothing changed, down to the adapters' bytes.
    assert run.digests == {c: d for c, d in undisturbed.digests.items() if c < cycles}
    for mine, theirs in zip(run.records, undisturbed.records[:cycles], strict=True):
        assert comparable(mine) == comparable(theirs)


def comparable(record: dict) -> dict:
    """A cycle's record less what a fault may change: timings, node ids, the learner's retries."""
    out = {k: v for k, v in record.items() if k not in ("seconds", "nodes")}
    if out.get("training"):
        out["training"] = {k: v for k, v in out["training"].items() if k != "retries"}
    return out


def test_each_role_killed_mid_stage_is_restarted_and_the_run_loses_no_row(undisturbed, config, tmp_path):
    """The generator engine, the judge replica and the buffer, each killed at the point drawn for
    it, in one run (one run instead of three: the suite's time goes in starting runs)."""
    pids: dict[str, list[int]] = {target: [] for target in TARGETS}
    faults = {target: Fault(tmp_path, draw(target, undisturbed),
                            lambda target=target: pids[target].append(kill_actor_process(TARGETS[target][0])))
              for target in TARGETS}
    for fault in faults.values():
        fault.start()
    records = Driver(config, tmp_path, log=lambda _: None).run()
    for target, fault in faults.items():
        assert fault.done.wait(timeout=5) and pids[target], target
        print(f"seed {SEED}: killed the {target} (pid {pids[target][0]}) {fault}")
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
    assert state.starts == 2 and state.running is None and len(state.finished) == len(undisturbed.seconds)
    records = json.loads((moved / "metrics.json").read_text())
    assert_same_as(undisturbed, finished_run(moved, records))  # cycle 2 too: trained on from the checkpoint
    # No batch committed before the kill was generated or judged again.
    committed = {moved / f.relative_to(run_dir): mtime for f, mtime in committed.items()}
    assert {f: f.stat().st_mtime_ns for f in committed} == committed
    # The extra cycle trained on from cycle 1's checkpoint, in the moved folder.
    assert [r["cycle"] for r in records] == [0, 1, 2] and records[2]["training"]["steps"] > 0
    assert state.policy.path == "adapters/cycle_002" and (moved / "checkpoints" / "cycle_002").is_dir()

    # Resumed once more: nothing left to run, so no Ray, only the table.
    from raylign.cli import main

    assert main(["run", "--resume", str(moved), "--set", "cycles=2"]) == 0
    assert "nothing left to run" in capsys.readouterr().out



def test_a_run_on_s3_survives_a_killed_driver_and_a_lost_learner_node(undisturbed, config, tmp_path, monkeypatch):
    """Run storage with no shared disk. The run lives in an S3-compatible server on loopback, on a
    cluster of three Ray nodes with a scratch folder each: a head (generator, judge, buffer) and
    two learner nodes. Its driver is SIGKILLed in cycle 0 or 1, and a fresh process in another
    working folder resumes it from the URI alone with `--set cycles=2`, and with twice the judge
    replicas on other resources (where it runs may change); in cycle 2 the node that
    holds the learner is lost mid-training, the group is placed on the other learner node, which
    never saw the run, and trains again from the cycle-1 checkpoint it downloads from storage.
    Every cycle equals the undisturbed run's, down to the adapters' bytes."""
    from ray.cluster_utils import Cluster

    from raylign.testing import LoopbackS3

    scratch = {name: tmp_path / "scratch" / name for name in ("head", "learner-a", "learner-b", "driver")}
    with LoopbackS3() as s3:
        env = {**os.environ, **s3.env, "RAYLIGN_SCRATCH": str(scratch["driver"])}
        node_env = {name: {**s3.env, "RAYLIGN_SCRATCH": str(folder)} for name, folder in scratch.items()}
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1},
                                                                "env_vars": node_env["head"]})
        learner_nodes = [cluster.add_node(num_cpus=1, resources={"learner": 1}, env_vars=node_env[name])
                         for name in ("learner-a", "learner-b")]
        for key, value in s3.env.items():  # this process reads the run's state from the server too
            monkeypatch.setenv(key, value)
        try:
            uri = s3.uri("runs/faults")
            cfg = config.model_copy(deep=True)
            for section in (cfg.generator, cfg.buffer, cfg.judges[0]):
                section.resources = {"head": 0.01}
            cfg.learner.resources = {"learner": 1}
            cfg.ray.address = cluster.address
            config_file = tmp_path / "cluster.yaml"
            config_file.write_text(dump_config(cfg))
            cli = [sys.executable, "-m", "raylign", "run"]

            first_dir, second_dir = tmp_path / "a", tmp_path / "b"
            first_dir.mkdir(), second_dir.mkdir()
            driver = subprocess.Popen([*cli, str(config_file), "--out", uri], cwd=first_dir, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            fault = Fault(uri, draw("storage-driver", undisturbed), driver.kill, poll_s=0.05)
            fault.start()
            assert fault.done.wait(timeout=600), driver.communicate(timeout=1)[1][-2000:]
            driver.wait(timeout=30)
            died_in = read_state(uri)

            # Resumed elsewhere; in cycle 2's training the learner's node goes.
            lost = []

            def lose_the_learners_node():
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    state = state_of(uri)
                    if state.get("running") == [2, "train"] and state["nodes"].get("learner"):
                        held = state["nodes"]["learner"][0]["node_id"]
                        (node,) = [n for n in learner_nodes if n.node_id == held]
                        cluster.remove_node(node, allow_graceful=False)
                        lost.append(learner_nodes.index(node))
                        return
                    time.sleep(0.1)

            loser = threading.Thread(target=lose_the_learners_node, daemon=True)
            loser.start()
            # On another cluster shape too: two judge replicas instead of one, on other resources.
            resumed = subprocess.run([*cli, "--resume", uri, "--set", "cycles=2", "--set", "judges.0.replicas=2",
                                      "--set", "judges.0.resources={head: 0.02}"], cwd=second_dir, env=env,
                                     capture_output=True, text=True, timeout=900)
            loser.join(timeout=5)
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            records = json.loads(RunStorage(uri).read_text("metrics.json"))
            state = RunState.load(uri)
            print(f"seed {SEED}: killed the driver {fault}; resumed from {uri.split('?')[0]}; lost learner node "
                  f"{lost} in cycle 2's training, {records[2]['training']['retries']} retry")
            assert died_in[0] == fault.landed and state.starts == 2
            assert len(state.nodes["judge.rules"]) == 2  # the resumed run's shape
            assert lost and records[2]["training"]["retries"] == 1
            survivor = scratch["learner-b" if lost == [0] else "learner-a"]
            # The retry downloaded the cycle-1 checkpoint into the surviving node's own scratch.
            assert list(survivor.glob("*/cycle_001/*model_states.pt"))  # ZeRO 3's name, or 2's on one rank
            assert state.nodes["learner"][0]["node_id"] == learner_nodes[1 - lost[0]].node_id
            assert_same_as(undisturbed, finished_run(uri, records))
            assert not list(first_dir.iterdir()) and not list(second_dir.iterdir())  # nothing written where they ran
        finally:
            cluster.shutdown()


# -- overlapped cycles (pipeline.max_staleness 1) ------------------------------------------------


class Crash(Exception):
    pass


class FaultyDriver(Driver):
    """Kills a process of each role while cycle 2's answers are generated and judged alongside
    cycle 1's training: the learner rank as that training starts (the embedded model's takes
    under a second: later would race its end), the engine as the pass's first answers are
    committed, a judge replica as its first verdicts are, the buffer as its second answers are;
    then the driver itself dies before committing the second verdicts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.killed: list[str] = []
        self.writes = {"rollouts": 0, "judgments": 0}

    def _write(self, table, cycle, part, data):
        if cycle == 2 and part.startswith("train-") and table in self.writes:
            self.writes[table] += 1
            kills = {("rollouts", 1): "VLLMGenerator", ("judgments", 1): "ServeReplica:",
                     ("rollouts", 2): "PreferenceBuffer"}
            if (table, self.writes[table]) in kills:
                self._kill(kills[table, self.writes[table]])
            if (table, self.writes[table]) == ("judgments", 2):
                raise Crash("the driver dies mid-pass")
        return super()._write(table, cycle, part, data)

    def _train(self, candidate, cycle):
        if cycle == 1:
            self._kill("Learner")
        return super()._train(candidate, cycle)

    def _kill(self, actor: str) -> None:
        kill_actor_process(actor)
        self.killed.append(actor)


@pytest.fixture(scope="module")
def overlapped(config):
    # Unfused, so that its first cycles also show a fused pass gives the same bytes as one alone.
    return config.model_copy(update={"cycles": 2, "pipeline": config.pipeline.model_copy(
        update={"max_staleness": 1, "fuse": False})})


def test_overlapped_cycles_lose_no_row_to_a_fault_in_any_role(undisturbed, overlapped, tmp_path):
    """Cycle 2's training answers come from the policy cycle 1 started from (the base model),
    recorded as one update stale, while cycle 1 trains; a killed engine, judge replica, learner
    rank and buffer, and a driver that dies mid-pass and resumes, change no byte of the run."""
    calm = finished_run(tmp_path / "calm", Driver(overlapped, tmp_path / "calm", log=lambda _: None).run())
    # Cycles 0 and 1 are on-policy either way: the strictly on-policy (and fused) run's bytes.
    assert {c: calm.digests[c] for c in (0, 1)} == {c: undisturbed.digests[c] for c in (0, 1)}
    assert calm.digests[2]["rollouts"] != undisturbed.digests[2]["rollouts"]
    buffer = PreferenceBuffer(RunStorage(tmp_path / "calm").uri("buffer"))
    answered = buffer.read("rollouts", 2)
    train = answered.filter(pc.equal(answered["stage"], "train"))
    assert set(zip(train["policy_version"].to_pylist(), train["staleness"].to_pylist())) == {(0, 1)}
    assert calm.records[2]["training"]["stale_dropped"] == 0 and calm.records[2]["training"]["pairs"] > 0
    state = RunState.load(tmp_path / "calm")
    assert state.alongside is None and state.ahead is None
    overlapped_for = [i for i in state.timeline if i["cycle"] == 2 and i["stage"] == "train"]
    learner = next(i for i in state.timeline if i["actor"] == "learner" and i["cycle"] == 1)
    assert any(i["start"] < learner["end"] for i in overlapped_for)  # generated while the learner trained
    assert "<h4>Timeline</h4>" in (tmp_path / "calm" / "report.html").read_text()

    run_dir = tmp_path / "faulty"
    driver = FaultyDriver(overlapped, run_dir, log=lambda _: None)
    with pytest.raises(Crash):
        driver.run()
    died_in = RunState.load(run_dir)
    assert sorted(driver.killed) == ["Learner", "PreferenceBuffer", "ServeReplica:", "VLLMGenerator"]
    assert (2, "generate_judge") not in died_in.finished and died_in.alongside == (2, "generate_judge")
    records = Driver(overlapped, run_dir, log=lambda _: None, resume=True).run()
    run = finished_run(run_dir, records)
    retries = [r["training"]["retries"] for r in records[1:]]
    print(f"killed {driver.killed} alongside cycle 1's training; the driver died with "
          f"{len(died_in.finished)} stage(s) finished; learner retries by cycle {retries}")
    assert retries == [1, 0]  # cycle 1's training, again on a fresh group
    assert_same_as(calm, run)
