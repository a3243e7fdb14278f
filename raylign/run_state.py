"""The state of a run, recorded after every stage, so that a run that died resumes where it died.

`state.json` in the run's storage (raylign/storage.py) says which stages are finished, which one was under way, the
policy the finished ones left, the records of the evaluated cycles, and what the cycle under
way has produced so far (its data summary, its training result, its timings). It is rewritten
atomically (a temporary file, then a rename) when a stage starts and when it ends. A stage
counts as finished only once its output is in the buffer (or, for training, in the adapter and
checkpoint folders), so `raylign run --resume RUN` continues at the first unfinished stage,
redoes no finished one, and reads what the finished ones made.

The stages (`stages`): cycle 0 loads the prompts (and any imports) into the buffer and evaluates the
starting policy; every later cycle generates and judges, builds its training data, trains and
evaluates. A run that selects among candidates trains and measures each in stages of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from raylign.config import ConfigError
from raylign.data.schemas import BASE, PolicyVersion
from raylign.storage import RunStorage, is_uri

STATE_FILE = "state.json"


def stages(cycles: int, candidates: Sequence[str] = (), selecting: bool = False,
           logs: bool = False, overlap: bool = False, generate: bool = True) -> list[tuple[int, str]]:
    """Every stage of a run of `cycles` cycles, in the order they run (start). A run that selects
    (selection.active) evaluates the starting policy on the selection suites at cycle 0, and
    trains and evaluates each candidate in stages of their own (`train.NAME`, `select.NAME`)
    before `choose` keeps one. A run with conversation logs opens each cycle with `collect`.
    With `overlap` (pipeline.max_staleness > 0) the next cycle's generate_judge starts with
    this cycle's train, and runs alongside it. Without `generate` (train_on: imports) a cycle
    answers no training prompts: it builds its data from the imports, trains and evaluates."""
    first = ("collect",) if logs else ()
    first += ("generate_judge",) if generate else ()
    if not selecting:
        plan = [(0, "load"), (0, "evaluate")] + [
            (c, s) for c in range(1, cycles + 1) for s in (*first, "build_data", "train", "evaluate")]
        if overlap:  # (c+1, generate_judge) moves up to just after (c, train)
            for c in range(1, cycles):
                plan.remove((c + 1, "generate_judge"))
                plan.insert(plan.index((c, "train")) + 1, (c + 1, "generate_judge"))
        return plan
    per_candidate = [s for name in candidates for s in (f"train.{name}", f"select.{name}")]
    return [(0, "load"), (0, "select"), (0, "evaluate")] + [
        (c, s) for c in range(1, cycles + 1)
        for s in (*first, "build_data", *per_candidate, "choose", "evaluate")]


class PolicyRecord(BaseModel):
    """A PolicyVersion without its object-store payload, which dies with the driver."""

    model_config = ConfigDict(extra="forbid")
    version: int = 0
    kind: Literal["base", "lora", "full"] = "base"
    path: str | None = None
    """Relative to the run's storage when inside it, so that a moved (or copied) run resumes."""

    @classmethod
    def of(cls, policy: PolicyVersion, storage: RunStorage | str | Path) -> "PolicyRecord":
        storage, path = RunStorage.of(storage), policy.path
        root = storage.uri().partition("?")[0].rstrip("/") + "/"
        if path is not None and path.partition("?")[0].startswith(root):
            path = path.partition("?")[0].removeprefix(root)
        return cls(version=policy.version, kind=policy.kind, path=path)

    @property
    def in_run(self) -> bool:
        """Whether its folder is in the run's storage (`path` relative to it)."""
        return self.path is not None and not is_uri(self.path) and not Path(self.path).is_absolute()

    def policy(self, storage: RunStorage | str | Path) -> PolicyVersion:
        storage = RunStorage.of(storage)
        if self.kind == "base":
            return BASE
        if not self.in_run:
            return PolicyVersion(self.version, self.kind, self.path)
        return PolicyVersion(self.version, self.kind, storage.uri(self.path))


class CycleProgress(BaseModel):
    """What the cycle under way has made so far; it becomes the cycle's record."""

    model_config = ConfigDict(extra="forbid")
    seconds: dict[str, float] = {}
    prompts: dict | None = None  # cycle 0: rows kept and skipped
    logs: dict | None = None  # collect: conversations read, prompts taken, redactions, harm levels
    data: dict | None = None  # build_data: pairs and KTO summary
    training: dict | None = None  # train: steps, losses, the new policy's folder
    metrics: dict | None = None  # evaluate: the CARES metrics
    agreement: dict = {}
    selection: dict | None = None  # select / choose: the selection block of the cycle's record


class RunState(BaseModel):
    # NaN (a loss of no steps) written as json.dumps writes it, not as null.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    format: Literal[1] = 1
    config_digest: str
    """raylign.config.result_digest of the config the run started with."""
    finished: list[tuple[int, str]] = []
    running: tuple[int, str] | None = None
    """The stage under way when this was written; after a crash, the one that died."""
    alongside: tuple[int, str] | None = None
    """A stage under way at the same time (pipeline.max_staleness: the next cycle's
    generate_judge while `running` trains)."""
    ahead: CycleProgress | None = None
    """What the stage alongside recorded of its cycle; it becomes `current` with that cycle."""
    timeline: list[dict] = []
    """What each role was busy with (raylign/timeline.py Interval, as a dict), oldest first."""
    starts: int = 1
    """How many times the run was started: 1, plus one per resume."""
    policy: PolicyRecord = PolicyRecord()
    """The policy the finished stages left: the one the next stage generates with."""
    records: list[dict] = []
    """One per evaluated cycle, as in metrics.json."""
    nodes: dict[str, list[dict[str, str]]] = {}
    """Where each role ran as the last stage started: {role: [{node_id, address}]}, the roles
    `generator`, `learner`, `buffer` and `judge.<name>`."""
    current: CycleProgress = CycleProgress()
    stopped: int | None = None
    """The cycle after which selection.patience stopped the run; None while it goes on."""

    def is_finished(self, cycle: int, stage: str) -> bool:
        return (cycle, stage) in self.finished

    def all_finished(self, plan: Sequence[tuple[int, str]]) -> bool:
        """Whether every stage of `plan` (`stages(...)`) is finished, or the run stopped early."""
        return self.stopped is not None or all(self.is_finished(c, s) for c, s in plan)

    def next_stage(self, plan: Sequence[tuple[int, str]]) -> tuple[int, str] | None:
        if self.stopped is not None:
            return None
        return next((cs for cs in plan if cs not in self.finished), None)

    def start(self, cycle: int, stage: str, alongside: bool = False) -> None:
        if alongside:
            self.alongside = (cycle, stage)
        else:
            self.running = (cycle, stage)

    def finish(self, cycle: int, stage: str) -> None:
        self.finished.append((cycle, stage))
        if self.alongside == (cycle, stage):
            self.alongside = None
        else:
            self.running = None

    def progress(self, alongside: bool = False) -> CycleProgress:
        """The record under way of the main stage's cycle, or of the stage alongside's."""
        if not alongside:
            return self.current
        if self.ahead is None:
            self.ahead = CycleProgress()
        return self.ahead

    def close_cycle(self) -> None:
        """The cycle's record is made: what the next cycle recorded ahead of it becomes current."""
        self.current, self.ahead = self.ahead or CycleProgress(), None

    def save(self, storage: RunStorage | str | Path) -> None:
        storage = RunStorage.of(storage)
        # Atomic: readers see the old state or the new one, never half of one.
        storage.write_text(STATE_FILE, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, storage: RunStorage | str | Path) -> "RunState":
        storage = RunStorage.of(storage)
        if not storage.exists(STATE_FILE):
            raise ConfigError(f"{storage} has no {STATE_FILE}: not a raylign run folder, or its run died before "
                              "the first stage began; start it again without --resume")
        try:
            return cls.model_validate(json.loads(storage.read_text(STATE_FILE)))
        except (ValueError, ValidationError) as e:
            raise ConfigError(f"{storage.uri(STATE_FILE)} cannot be read ({str(e).splitlines()[0]}): the run cannot "
                              "be resumed") from None
