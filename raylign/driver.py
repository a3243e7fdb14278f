"""The driver: places the roles on Ray and runs the alignment cycles.

One cycle (DESIGN.md):  train prompts -> generate -> judge -> pairs / KTO examples -> buffer
-> train -> evaluation suites: generate -> judge -> metrics. Cycle 0 loads the prompts and the
suites (and checks every model the run names, before anything is placed) and evaluates the
starting policy. The driver owns nothing heavy; it times each stage inline, shows a progress
bar per stage and writes metrics.json after every cycle.

Every stage reads its input from the buffer (or the run's state) and commits its output there
before it counts as finished, and the run's state is saved as each stage starts and ends
(raylign/run_state.py): a run that died resumes at the first unfinished stage with
`raylign run --resume RUN`, and within a generate-and-judge stage at the first missing batch.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import random
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm

from raylign.evaluation import report, run_report
from raylign.actors.buffer import PreferenceBuffer
from raylign.actors.generator import GeneratorGroup
from raylign.actors.judge import BUSY_KEY, JudgePool
from raylign.actors.metrics import RunMetrics
from raylign.actors.learner import LearnerGroup
from raylign.actors.placement import nodes_of
from raylign.evaluation.agreement import Agreement, agreement
from raylign.events import RunLog
from raylign.config import (EMBEDDED_MODELS, SELECTION_SUITE, Config, ConfigError, SamplingConfig, SuiteConfig,
                            changed_key, dump_config, parse_config, result_digest)
from raylign.data import logs as logs_
from raylign.data import exchange
from raylign.data.exchange import import_file
from raylign.training.pairs import (KTOWeights, build_kto_examples, build_pairs, distinct_answers, kto_weights,
                                    with_unknown_levels_scored, within_staleness)
from raylign.data.prompts import read_prompts, sample, split
from raylign.evaluation import review as review_
from raylign.evaluation import selection as selection_
from raylign.evaluation import suites as suites_
from raylign.evaluation.selection import BEST_FILE, Candidate
from raylign.evaluation.suites import Suite
from raylign.model_check import check_model, models_to_check
from raylign.run_state import STATE_FILE, PolicyRecord, RunState, stages
from raylign.storage import RunStorage
from raylign import timeline
from raylign.timeline import TIMELINE_FILE, Interval
from raylign.tracking import TRACKER_FOLDERS, Trackers
from raylign.data.schemas import PROMPTS, TABLES, PolicyVersion
from raylign.evaluation.scoring import UNJUDGED


def judge_agreement(primary: pa.Table, other: pa.Table) -> Agreement:
    """Agreement of two judges over the answers both labelled (Unjudged ones left out)."""
    key = ("cycle", "stage", "prompt_id", "sample_index")
    theirs = {tuple(r[k] for k in key): r["label"] for r in other.select([*key, "label"]).to_pylist()}
    both = [(r["label"], theirs.get(tuple(r[k] for k in key))) for r in primary.select([*key, "label"]).to_pylist()]
    both = [(a, b) for a, b in both if UNJUDGED not in (a, b) and b is not None]
    return agreement([a for a, _ in both], [b for _, b in both])


def steps_trained(records: list[dict]) -> int:
    """Training steps of the recorded cycles, a cycle's candidates side by side (the trackers'
    global step, which a resumed run continues)."""
    return sum(max([c["training"]["steps"] for c in (r.get("selection") or {}).get("candidates", [])]
                   or [(r.get("training") or {}).get("steps") or 0]) for r in records)


class Roles(NamedTuple):
    generators: GeneratorGroup | None  # None only for a start that failed before them (release_roles)
    judges: list[JudgePool]  # judges[0] gives the safety labels; every two are compared
    learners: LearnerGroup | None  # None when only evaluating (raylign eval)
    buffer: ray.actor.ActorHandle

    def nodes(self) -> dict[str, list[dict[str, str]]]:
        """Where each role runs now: {role: [{node_id, address}]}, one entry per actor."""
        out = {"generator": nodes_of(self.generators.engines)}
        if self.learners is not None:
            out["learner"] = nodes_of(self.learners.ranks)
        out["buffer"] = nodes_of([self.buffer])
        for pool in self.judges:
            out[f"judge.{pool.cfg.name}"] = nodes_of(pool.replica_actors())
        return out


def resolve_model(cfg: Config, log: Callable[[str], None]) -> str:
    """A folder or hub id that transformers loads; builds the embedded model when asked."""
    if cfg.model.path in EMBEDDED_MODELS:
        from raylign.embedded.model import RECIPES, ensure_embedded_model

        return str(ensure_embedded_model(log=log, recipe=RECIPES[cfg.model.path]))
    return cfg.model.path


def lora_rank(cfg: Config) -> int | None:
    """The adapter rank engines must serve; None when the learner trains full weights."""
    return cfg.learner.lora.r if cfg.learner.finetune == "lora" else None


@contextlib.contextmanager
def ray_session(cfg: Config):
    """Start (or join) Ray for the run; shut it down after if this run started it."""
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=cfg.ray.address or "local",  # not a cluster this machine happens to run
            num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
            include_dashboard=False,
            log_to_driver=False,  # actors' load bars would bury the progress; errors still propagate
            configure_logging=False,
        )
    try:
        yield
    finally:
        if started:
            # Not serve.shutdown() first: killing the Serve controller under the judge handles'
            # long polls makes Ray print their failed retries after the run's table.
            ray.shutdown()


@contextlib.contextmanager
def placed_roles(cfg: Config, model_path: str, storage: RunStorage, train: bool = True, rank: int | None = None):
    """The run's actors; released on the way out, placement groups included, so that a second
    run in the same Ray session (tests, notebooks) finds its CPUs and GPUs free. With `train`
    the learner group is placed and the engines serve its adapters; without (raylign eval) no
    learners are placed and the engines serve adapters of LoRA rank `rank` (None: none)."""
    roles = place_roles(cfg, model_path, storage, lora_rank(cfg) if train else rank, train)
    try:
        if not roles.judges[0].info.labels:
            raise ConfigError(f"judges[0] ({cfg.judges[0].name!r}) gives no CARES labels, which metrics and pairs "
                              "need: put a labelling judge first")
        yield roles
    finally:
        release_roles(roles)


def release_roles(roles: Roles) -> None:
    """Shut every role down (those that started, for a run that failed to start)."""
    for pool in roles.judges:
        pool.shutdown()
    if roles.generators is not None:
        roles.generators.shutdown()
    if roles.learners is not None:
        roles.learners.shutdown()
    ray.kill(roles.buffer)


def place_roles(cfg: Config, model_path: str, storage: RunStorage, rank: int | None, train: bool = True) -> Roles:
    """Every role's actors, started at once. A role that cannot start stops the run here, with
    its error, and the roles already started are released: a second run in the same Ray session
    must not wait for CPUs a failed one still holds."""
    buffer_root = cfg.buffer.root or storage.uri("buffer")
    buffer = (
        ray.remote(PreferenceBuffer)
        .options(
            name=f"raylign-buffer-{storage.name}",  # findable by tools while the run goes on
            num_cpus=cfg.buffer.num_cpus, resources=cfg.buffer.resources, max_restarts=-1, max_task_retries=-1,
        )
        .remote(buffer_root, storage.name)
    )
    learners = generators = None
    judges: list[JudgePool] = []
    try:
        if train:
            learners = LearnerGroup(model_path, cfg.model.dtype, cfg.learner, cfg.seed, cfg.ray.get_timeout_s)
        generators = GeneratorGroup(model_path, cfg.model.dtype, cfg.generator, rank, cfg.seed, cfg.ray.get_timeout_s)
        # After the generators: the `self` judge answers through their engines.
        judges.extend(JudgePool(judge, f"raylign-{storage.name}-{judge.name}", cfg.ray.get_timeout_s,
                                generators.engines) for judge in cfg.judges)
        generators.ready()
        if learners is not None:
            learners.ready()
    except BaseException:
        release_roles(Roles(generators=generators, judges=judges, learners=learners, buffer=buffer))
        raise
    return Roles(generators=generators, judges=judges, learners=learners, buffer=buffer)


def sampling_seed(seed: int, cycle: int, stage: str) -> int:
    """The seed of a stage's draws (batch i adds i). Training draws differ every cycle. An
    evaluation suite is drawn with the same seed every cycle (common random numbers), so cycles
    differ by their policy, not by their draws, and `raylign eval` of a run's policy, with the
    same prompts, samples, batch size and seed, gives the figures the run recorded."""
    if stage == "train":
        return seed * 7919 + cycle * 104_729
    return seed * 7919 + zlib.crc32(stage.encode()) % 1_000_003


def rollouts_part(stage: str, batch: int) -> str:
    return f"{stage}-{batch:05d}"


def offline_check(cfg: Config, imported: list[exchange.Imported]) -> None:
    """train_on imports: the imports hold what every algorithm the run trains needs."""
    pairs = [i.data for i in imported if i.table == "pairs"]
    for algorithm in {c.variant.algorithm for c in selection_.candidates(cfg)}:
        if algorithm != "kto" and not pairs:
            raise ConfigError(f"algorithm {algorithm} trains on pairs, and buffer.imports has only unpaired examples: "
                              "give a preference file (prompt/chosen/rejected), or train kto")
        if algorithm == "modpo" and any(t["chosen_scores"].null_count or t["rejected_scores"].null_count
                                        for t in pairs):
            raise ConfigError("algorithm modpo trains on per-objective margins: every imported pair needs "
                              "chosen_scores and rejected_scores ({objective: score}); train dpo or kto on a file "
                              "without them")


def import_part(path: str) -> str:
    """The buffer part (of cycle 0) an imported file goes to."""
    return f"import-{Path(path).stem}"


def judgments_part(stage: str, judge: str, batch: int) -> str:
    return f"{stage}-{judge}-{batch:05d}"


class Stream(NamedTuple):
    """One stage's answers in a pass of the engines: what is asked, of which policy, and where
    the answers go (the buffer's cycle and stage). Several streams share one pass."""

    prompts: pa.Table
    policy: PolicyVersion
    sampling: SamplingConfig
    cycle: int
    stage: str
    seed_stage: str
    """The stage whose seeds the batches draw (a candidate's answers draw the suite's)."""
    staleness: int = 0


class TrainingSet(NamedTuple):
    data: pa.Table
    """The cycle's own pairs (KTO: examples), then the rows replayed from earlier cycles."""
    fresh: int
    weights: KTOWeights
    desirable: int
    undesirable: int


class Driver:
    """Runs the stages of a run in order, each once: a stage already finished in the run's
    state (a resumed run) is skipped, and its output read from where it was committed."""

    trains = True
    """Whether the run trains, and so needs the prompt set's train split (`raylign eval` does not)."""

    def __init__(self, cfg: Config, run_dir: str | Path, log: RunLog | Callable[[str], None] = print,
                 resume: bool = False):
        # A folder (made absolute: actors write there from their own working folders) or a URI.
        self.storage = RunStorage.of(run_dir)
        self.run_dir = self.storage.location
        self.cfg, self.resume = cfg, resume
        # The run's log (text lines and bars, or JSON events) and its Ray metrics.
        self.log = RunLog.of(log, self.run_dir)
        self.metrics = RunMetrics(self.storage.name)
        self.timeout = cfg.ray.get_timeout_s
        self._published: PolicyVersion | None = None
        self.selecting = cfg.selection.active and self.trains
        self.candidates = selection_.candidates(cfg)
        self.with_logs = cfg.logs is not None and self.trains
        self.overlap = cfg.pipeline.max_staleness > 0 and self.trains
        self.generates_training = self.trains and cfg.train_on == "rollouts"
        """Whether cycles answer training prompts; a run that trains on its imports alone does not."""
        self.plan = stages(cfg.cycles, [c.name for c in self.candidates], self.selecting, self.with_logs, self.overlap,
                           self.generates_training)
        self._state_lock = threading.Lock()  # the stage alongside saves the state too
        self.trackers: Trackers | None = None

    def run(self) -> list[dict]:
        cfg = self.cfg
        self.log.run_start(cfg.cycles, self.resume)
        self.state = self._resumed_state() if self.resume else self._new_state()
        if not self.state.all_finished(self.plan):
            with self._no_folder_left_if_nothing_finished():
                self.trackers = Trackers.of(cfg.tracking, self.storage, self.storage.name, cfg.model_dump(mode="json"),
                                            log=self.log, global_step=steps_trained(self.state.records))
                model_path = resolve_model(cfg, self.log)
                with self.trackers, ray_session(cfg), placed_roles(cfg, model_path, self.storage) as self.roles:
                    self._stage(0, "load", self._load)
                    if self.selecting:
                        self._stage(0, "select", self._select_start)
                    self._stage(0, "evaluate", self._evaluate)
                    for cycle in range(1, cfg.cycles + 1):
                        if self.state.stopped is not None:  # selection.patience ran out
                            break
                        if self.with_logs:
                            self._stage(cycle, "collect", self._collect)
                        if self.generates_training:
                            self._stage(cycle, "generate_judge", self._generate_train)
                        self._stage(cycle, "build_data", self._build_data)
                        if self.selecting:
                            for c in self.candidates:
                                self._stage(cycle, f"train.{c.name}", functools.partial(self._train, c))
                                self._stage(cycle, f"select.{c.name}", functools.partial(self._select, c))
                            self._stage(cycle, "choose", self._choose)
                        else:
                            with self._alongside(cycle + 1, "generate_judge", self._generate_train,
                                                 self.overlap and cycle < cfg.cycles):
                                self._stage(cycle, "train", functools.partial(self._train, self.candidates[0]))
                        self._stage(cycle, "evaluate", self._evaluate)
        self.log.show("\n" + report.format_table(self.state.records, self._suite_names()))
        self.log.show(f"\nrun folder: {self.run_dir}  (report.html, metrics.json, best.json, safety.png, config.yaml, "
                      "state.json, buffer/, adapters/ or policies/, checkpoints/, tensorboard/)")
        self.log.run_end(self.storage.uri("metrics.json"))
        return self.state.records

    # -- the run's state ------------------------------------------------------------------

    def _new_state(self) -> RunState:
        storage = self.storage
        if storage.exists(STATE_FILE):
            raise ConfigError(f"{self.run_dir} already holds a run ({STATE_FILE}): continue it with "
                              f"`raylign run --resume {self.run_dir}`, or give another --out")
        self._read_inputs()
        self._created_dir = storage.is_empty()
        storage.write_text("config.yaml", dump_config(self.cfg))
        state = RunState(config_digest=result_digest(self.cfg))
        state.save(storage)
        return state

    def _resumed_state(self) -> RunState:
        state = RunState.load(self.storage)
        if state.config_digest != result_digest(self.cfg):
            raise ConfigError(f"{self.run_dir}: {changed_key(self._started_config(), self.cfg)}")
        state.starts += 1
        self.storage.write_text("config.yaml", dump_config(self.cfg))  # where it runs now
        state.save(self.storage)
        where = state.next_stage(self.plan)
        self.log.resume(len(state.finished), where, f"resuming {self.run_dir}: {len(state.finished)} stage(s) finished"
                        + (f"; continuing at cycle {where[0]} {where[1]}" if where else "; nothing left to run"))
        if not state.is_finished(0, "load"):
            self._read_inputs()
        if state.records:  # metrics.json may lag the state by one write
            report.write_metrics(self.storage, state.records)
        return state

    def _started_config(self) -> Config:
        """The config the run started with, as its storage keeps it."""
        return parse_config(self.storage.read_text("config.yaml"), self.storage.uri("config.yaml"))

    def _read_inputs(self) -> None:
        """The prompt set, the suites and the imports, for the load stage, and the models the
        run names: bad files, a split with no rows, a leak into a suite or a model that cannot
        load stop the run here, before anything is placed or written."""
        prompt_set = read_prompts(self.cfg.prompts)
        needed = [self.cfg.prompts.train_split] if self.generates_training else []
        if any(suite.path is None for suite in self.cfg.evaluation.suites):
            needed.append(self.cfg.prompts.eval_split)
        for name in needed:
            split(prompt_set.table, name, None, self.cfg.seed)
        suites = suites_.load_suites(self.cfg, prompt_set.table)
        if self.trains:  # a selection split with no rows stops the run here
            selection_.split_for_selection(prompt_set.table, self.cfg)
            suites += suites_.load_suites(self.cfg, prompt_set.table, self.cfg.selection.suites, "selection.suites")
        for path, key, kind in self._models():
            check_model(path, key, kind)
        if self.with_logs:
            logs_.log_files(self.cfg.logs.path)  # a path that is not there stops the run here
            self._redactor  # and so does a redaction that cannot be set up (a missing ner_model)
        imported = [import_file(Path(p), self.cfg.buffer.on_invalid) for p in self.cfg.buffer.imports]
        if self.trains and not self.generates_training:
            offline_check(self.cfg, imported)
        self._inputs = prompt_set, suites, imported

    def _models(self) -> list[tuple[str, str, str]]:
        """(path, config key, kind) of every model the run loads (raylign.model_check)."""
        return models_to_check(self.cfg)

    @contextlib.contextmanager
    def _no_folder_left_if_nothing_finished(self):
        """A new run that fails before its first stage finishes (a role that cannot start)
        leaves no run folder behind, so the same --out can start again."""
        try:
            yield
        except BaseException:
            if not self.resume and not self.state.finished:
                if getattr(self, "_created_dir", False):
                    self.storage.delete()
                else:
                    for name in (STATE_FILE, "config.yaml", *TRACKER_FOLDERS):
                        self.storage.delete(name)
            raise

    def _stage(self, cycle: int, stage: str, run: Callable[[int], None], alongside: bool = False) -> None:
        """Run one stage unless it is finished; the state is saved as it starts and as it ends.
        The cycle's record is closed with its last stage, evaluate. A stage `alongside` runs
        on a thread of its own while the main one runs another (`_alongside`)."""
        state = self.state
        if state.is_finished(cycle, stage):
            return
        with self._state_lock:
            state.start(cycle, stage, alongside)
            state.nodes = self.roles.nodes()  # where the roles are now: faults move them
            state.save(self.storage)
        self.log.stage_start(cycle, stage)
        t0 = time.perf_counter()
        run(cycle)
        seconds = round(time.perf_counter() - t0, 2)
        with self._state_lock:
            state.progress(alongside).seconds[stage] = seconds
            if stage == "evaluate":
                state.records.append(self._record(cycle))
                state.close_cycle()
                if self.selecting:
                    self._after_cycle(cycle)
            state.finish(cycle, stage)
            state.save(self.storage)
        self.log.stage_end(cycle, stage, seconds)
        self.metrics.stage(stage, seconds)
        if stage == "evaluate":
            self._report(state.records)

    @contextlib.contextmanager
    def _alongside(self, cycle: int, stage: str, run: Callable[[int], None], when: bool):
        """Runs a stage on a thread of its own (`when`) while the body runs; both end before
        the body's exit goes on, and the first error of either is raised."""
        if not when or self.state.is_finished(cycle, stage):
            yield
            return
        failed: list[BaseException] = []

        def work() -> None:
            try:
                self._stage(cycle, stage, run, alongside=True)
            except BaseException as e:  # noqa: BLE001 - raised on the main thread below
                failed.append(e)

        thread = threading.Thread(target=work, name=f"raylign-{stage}-{cycle}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join()  # its committed batches count for a resumed run: let it finish them
        if failed:
            raise failed[0]

    def _policy(self) -> PolicyVersion:
        """The policy the finished stages left, with its files in the object store."""
        return self._published_policy(self.state.policy.policy(self.storage))

    def _published_policy(self, policy: PolicyVersion) -> PolicyVersion:
        """`policy` with its files in the object store (once per policy: a resumed run publishes
        it again from its folder)."""
        if policy.kind == "base":
            return policy
        if self._published is None or self._published._replace(payload=()) != policy:
            self._published = self.roles.learners.publish(policy)
        return self._published

    @functools.cached_property
    def prompts(self) -> pa.Table:
        """The prompt set as committed to the buffer by the load stage."""
        return ray.get(self.roles.buffer.read.remote("prompts", 0, "all"), timeout=self.timeout)

    @functools.cached_property
    def suites(self) -> list[Suite]:
        """The evaluation suites with their prompts as the load stage committed them."""
        out = []
        for suite in self.cfg.evaluation.suites:
            if suite.path is None:  # the held-out split, less what load found leaked into it
                table = split(self.prompts, self.cfg.prompts.eval_split, None, self.cfg.seed)
                leaked = suites_.leaks(table, suites_.trained_texts(self.prompts, self.cfg.prompts.train_split))
                table = table.filter(pa.array([not leak for leak in leaked]))
            else:
                table = self._committed_suite(suite)
            out.append(Suite(suite, table, 0, [], 0))
        return out

    @functools.cached_property
    def _splits(self) -> selection_.Splits:
        """The training prompts, and the selection split set aside from them (raylign/evaluation/selection.py)."""
        return selection_.split_for_selection(self.prompts, self.cfg)

    @functools.cached_property
    def selection_suites(self) -> list[Suite]:
        """The suites candidates are chosen on: the selection split, then selection.suites' files."""
        split_suite = Suite(SuiteConfig(name=SELECTION_SUITE), self._splits.selection, 0, [], 0)
        return [split_suite] + [Suite(suite, self._committed_suite(suite), 0, [], 0)
                                for suite in self.cfg.selection.suites]

    def _committed_suite(self, suite: SuiteConfig) -> pa.Table:
        """A suite file's prompts, as the load stage committed them to the buffer."""
        return ray.get(self.roles.buffer.read.remote("prompts", 0, f"suite.{suite.name}"), timeout=self.timeout)

    def _due(self, suite: Suite, cycle: int) -> bool:
        return suite.due(cycle, self.cfg.cycles)

    def _suite_names(self) -> list[str]:
        return [s.name for s in self.cfg.evaluation.suites]

    # -- stages ---------------------------------------------------------------------------

    def _load(self, cycle: int) -> None:
        """The prompt set, the suites' prompts and any imports into the buffer at cycle 0."""
        prompt_set, suites, imported = self._inputs
        if prompt_set.skipped:
            self.log(f"prompts: {prompt_set.skipped} bad row(s) skipped (prompts.on_invalid=skip), "
                     f"{prompt_set.table.num_rows} kept; first problems: {'; '.join(prompt_set.problems[:5])}")
        self._write("prompts", cycle, "all", prompt_set.table)
        for suite in suites:
            if suite.skipped:
                self.log(f"suite {suite.cfg.name}: {suite.skipped} bad row(s) skipped; first problems: "
                         f"{'; '.join(suite.problems[:5])}")
            if suite.leaked:
                self.log(f"suite {suite.cfg.name}: {suite.leaked} prompt(s) also in the training prompts, left out "
                         "(evaluation.on_leak=drop)")
            if suite.cfg.path is not None:
                self._write("prompts", cycle, f"suite.{suite.cfg.name}", suite.table)
        for path, (table, data, skipped, problems) in zip(self.cfg.buffer.imports, imported):
            self._write(table, cycle, import_part(path), data)
            if skipped:
                self.log(f"import {path}: {skipped} bad row(s) skipped (buffer.on_invalid=skip), {data.num_rows} kept; "
                         f"first problems: {'; '.join(problems[:5])}")
        self.state.current.prompts = {
            "kept": prompt_set.table.num_rows, "skipped": prompt_set.skipped, "problems": prompt_set.problems[:20],
            "suites": {s.cfg.name: {"kept": s.table.num_rows, "skipped": s.skipped, "leaked": s.leaked,
                                    "problems": s.problems[:20]} for s in suites},
            "imports": {path: {"table": i.table, "kept": i.data.num_rows, "skipped": i.skipped,
                               "problems": i.problems[:20]} for path, i in zip(self.cfg.buffer.imports, imported)},
        }

    @functools.cached_property
    def _redactor(self):
        from raylign.data.redaction import Redactor  # Presidio and spaCy load only for a run with logs

        try:
            return Redactor(self.cfg.logs.redaction)
        except ValueError as e:  # a missing ner_model, a bad pattern: one line naming the key
            raise ConfigError(str(e)) from None

    def _collect(self, cycle: int) -> None:
        """The conversations added to the logs since they were last read: redacted (before
        anything is stored), cut into prompts, deduplicated, given a harm level; committed with
        the record of what was read, which the next cycle (and a resumed run) reads by."""
        read = self._read("conversations")
        seen = set(read.filter(pc.less(read["cycle"], cycle))["digest"].to_pylist())
        known = logs_.known_keys(pa.concat_tables([self.prompts, *(self._log_prompts(c) for c in range(1, cycle))]))
        batch = logs_.collect(self.cfg.logs, cycle, seen, known, self._redactor)
        levels = self._classify(batch.prompts, cycle)
        prompts = batch.prompts.set_column(batch.prompts.schema.get_field_index("harmful_level"), "harmful_level",
                                           levels["harmful_level"])
        self._write("prompt_levels", cycle, "logs", levels)
        self._write("prompts", cycle, "logs", prompts)
        self._write("conversations", cycle, "logs", batch.conversations)
        known_levels = [lvl for lvl in levels["harmful_level"].to_pylist() if lvl is not None]
        summary = {**batch.summary, "levels": {**{str(lvl): known_levels.count(lvl) for lvl in range(4)},
                                               "unknown": levels.num_rows - len(known_levels)},
                   "redactor": self._redactor.version}
        self.state.current.logs = summary
        redacted = ", ".join(f"{kind} {n}" for kind, n in summary["redactions"].items()) or "nothing"
        self.log(f"cycle {cycle} collect: {summary['conversations']} new conversation(s) in {summary['files']} "
                 f"file(s) -> {summary['prompts']} prompt(s) ({summary['duplicate_prompts']} duplicate(s) left out, "
                 f"{summary['levels']['unknown']} of unknown harm level); redacted: {redacted}; "
                 f"{summary['bad_lines']} bad line(s), {summary['unredacted']} not redactable, "
                 f"{summary['duplicate_conversations']} duplicate conversation(s)"
                 + (f"; first problems: {'; '.join(summary['problems'][:5])}" if summary["problems"] else ""))

    def _classify(self, prompts: pa.Table, cycle: int) -> pa.Table:
        """The prompt classifier's levels (PROMPT_LEVELS rows, in the prompts' order), on an
        actor of its own for the cycle."""
        from raylign.actors.generator import vllm_env
        from raylign.actors.judge import PromptLeveller

        c = self.cfg.logs.classifier
        leveller = ray.remote(PromptLeveller).options(num_cpus=c.num_cpus, num_gpus=c.num_gpus, runtime_env={
            "env_vars": vllm_env(c.llm.engine, c.num_threads)}).remote(c)
        try:
            return ray.get(leveller.classify.remote(prompts, cycle), timeout=self.timeout)
        finally:
            ray.kill(leveller)

    def _log_prompts(self, cycle: int) -> pa.Table:
        """The prompts the logs gave at `cycle` (none before it collected)."""
        if "logs" not in self._parts("prompts", cycle):
            return PROMPTS.empty_table()
        return self._read_part("prompts", cycle, "logs")

    def _generate_train(self, cycle: int) -> None:
        self._generate_and_judge(self._train_stream(cycle))

    def _train_stream(self, cycle: int) -> Stream:
        """The cycle's training prompts, answered by the policy pipeline.max_staleness allows."""
        cfg = self.cfg
        batch = []
        if cfg.logs is None or cfg.logs.with_prompt_set:
            batch.append(sample(self._splits.train, cfg.prompts.prompts_per_cycle, cfg.seed + cycle))
        if self.with_logs:
            batch.append(self._log_prompts(cycle))
        policy, staleness = self._rollout_policy(cycle)
        return Stream(pa.concat_tables(batch), policy, cfg.generator.sampling, cycle, "train", "train", staleness)

    def _rollout_policy(self, cycle: int) -> tuple[PolicyVersion, int]:
        """The policy that answers the cycle's training prompts, and how many updates it lags the
        policy trained on them. On-policy: the one the last finished cycle left. Overlapped
        (pipeline.max_staleness 1): the one cycle-1 started from, which the generators answer
        with while cycle-1 trains, so that nothing waits for the learner; cycle 1 has no
        training to overlap and answers on-policy. A function of the cycle and the finished
        cycles' records, so a resumed run answers with the same policy as the run that died."""
        lag = self._lag(cycle)
        if not lag:
            return self._policy(), 0
        start = next(r for r in self.state.records if r["cycle"] == cycle - 1 - lag)
        return self._published_policy(self._policy_left_by(start).policy(self.storage)), lag

    def _lag(self, cycle: int) -> int:
        """Policy updates the cycle's training answers lag (`_rollout_policy`)."""
        return min(self.cfg.pipeline.max_staleness, cycle - 1)

    def _policy_left_by(self, record: dict) -> PolicyRecord:
        """The policy a cycle's record says its training left; the starting model for cycle 0."""
        adapter = (record["training"] or {}).get("adapter")
        return PolicyRecord(version=record["cycle"], kind=self.cfg.learner.finetune, path=adapter) if adapter \
            else PolicyRecord()

    def _train_judgments(self, cycle: int, human: pa.Table) -> pa.Table:
        """judges[0]'s judgments of a cycle's training answers, as pairs are built from them."""
        return self._as_trained(self._judged(cycle, "train")[self.cfg.judges[0].name], human)

    def _as_trained(self, judgments: pa.Table, human: pa.Table) -> pa.Table:
        """Judgments as pairs are built from them: human labels in place of the judge's
        (review.override), prompts of unknown harm level scored by logs.unknown_level_prior."""
        if self.cfg.review.override and human.num_rows:
            judgments = review_.with_human_labels(judgments, human)[0]
        if self.cfg.logs is not None:
            judgments = with_unknown_levels_scored(judgments, self.cfg.logs.unknown_level_prior)
        return judgments

    def _build_data(self, cycle: int) -> None:
        """DPO pairs and KTO examples from judges[0]'s labels, both into the buffer; and, when
        clinicians reviewed earlier cycles' answers since the last build, those answers' pairs
        and examples again with the human labels, where they differ from the judge's."""
        started = time.time()
        if not self.generates_training:
            self._build_offline_data(cycle)
            self._busy(Interval(timeline.DRIVER, cycle, "build_data", None, started, time.time()))
            return
        human = self._human_judgments()
        judgments, stale = within_staleness(self._train_judgments(cycle, human), self.cfg.pipeline.max_staleness)
        distinct = distinct_answers(judgments) if self.cfg.buffer.dedup else judgments
        pairs, stats = build_pairs(distinct, self.cfg.pairs, cycle, self.cfg.seed + cycle)
        self._write("pairs", cycle, "all", pairs)
        self._write("kto", cycle, "all", build_kto_examples(distinct, self.cfg.kto, cycle))
        review = self._review_corrections(cycle, human) if self.cfg.review.override else None
        training = self._training_set(cycle, self.candidates[0].variant.algorithm)
        self.state.current.data = {
            **stats._asdict(), "duplicates_dropped": judgments.num_rows - distinct.num_rows,
            "replayed": training.data.num_rows - training.fresh, "desirable": training.desirable,
            "undesirable": training.undesirable, "desirable_weight": training.weights.desirable,
            "undesirable_weight": training.weights.undesirable, "stale_dropped": stale,
        }
        if review is not None:
            self.state.current.data["review"] = review
        self._busy(Interval(timeline.DRIVER, cycle, "build_data", None, started, time.time()))

    def _build_offline_data(self, cycle: int) -> None:
        """train_on imports: the cycle trains on every imported row; KTO on a preference file
        takes its chosen answers as desirable and its rejected as undesirable (committed once,
        as cycle 0's `unpaired` part, so every cycle and a resumed run read the same rows)."""
        if any(c.variant.algorithm == "kto" for c in self.candidates) and not self._read("kto", 0).num_rows:
            self._write("kto", 0, "unpaired", exchange.unpaired(self._read("pairs", 0)))
        training = self._training_set(cycle, self.candidates[0].variant.algorithm)
        self.state.current.data = {"source": "imports", "pairs": self._read("pairs", 0).num_rows,
                                   "examples": training.fresh, "desirable": training.desirable,
                                   "undesirable": training.undesirable, "desirable_weight": training.weights.desirable,
                                   "undesirable_weight": training.weights.undesirable}

    def _human_judgments(self) -> pa.Table:
        """Every human label imported so far (raylign review import), the latest per answer."""
        parts = [self._read_part("judgments", c, p) for c in range(self.cfg.cycles + 1)
                 for p in self._parts("judgments", c) if review_.is_review_part(p)]
        return review_.latest(pa.concat_tables(parts) if parts else TABLES["judgments"].empty_table())

    def _review_corrections(self, cycle: int, human: pa.Table) -> dict | None:
        """Pairs and KTO examples of earlier cycles' answers that reviews imported since the last
        build relabel: each prompt with a relabelled answer gets its pair built again from the
        human labels (not balanced: the corrections are few and all wanted), each relabelled
        answer its example; committed as this cycle's `review` parts, which it trains on."""
        applied = {part for r in self.state.records for part in
                   (((r.get("training") or {}).get("review") or {}).get("parts") or [])}
        new = {c: [p for p in self._parts("judgments", c) if review_.is_review_part(p) and p not in applied]
               for c in range(1, cycle)}
        new = {c: parts for c, parts in new.items() if parts}
        if not new:
            return None
        pairs, examples, relabelled = [], [], 0
        no_balance = self.cfg.pairs.model_copy(update={"balance_directions": False})
        for c, parts in new.items():
            judged = self._judged(c, "train")[self.cfg.judges[0].name]
            fresh = pa.concat_tables([self._read_part("judgments", c, p) for p in parts])
            changed = review_.disagreeing(judged, fresh)
            relabelled += len(changed)
            corrected = self._as_trained(judged, human)
            corrected = distinct_answers(corrected) if self.cfg.buffer.dedup else corrected
            keys = zip(*(corrected[k].to_pylist() for k in review_.KEY))
            relabelled_answers = corrected.filter(pa.array([key in changed for key in keys]))
            their_prompts = pc.is_in(corrected["prompt_id"], relabelled_answers["prompt_id"].unique())
            pairs.append(build_pairs(corrected.filter(their_prompts), no_balance, cycle, self.cfg.seed + cycle)[0])
            examples.append(build_kto_examples(relabelled_answers, self.cfg.kto, cycle))
        pairs, examples = pa.concat_tables(pairs), pa.concat_tables(examples)
        self._write("pairs", cycle, "review", pairs)
        self._write("kto", cycle, "review", examples)
        self.log(f"cycle {cycle} build_data: {relabelled} answer(s) relabelled by clinicians in cycle(s) "
                 f"{sorted(new)} -> {pairs.num_rows} pair(s) and {examples.num_rows} KTO example(s) rebuilt")
        return {"parts": sorted(p for parts in new.values() for p in parts), "relabelled": relabelled,
                "pairs": pairs.num_rows, "kto": examples.num_rows}

    def _train(self, candidate: Candidate, cycle: int) -> None:
        """The cycle's training of one candidate (a run that does not select has one) from the
        cycle's starting policy. A run that selects keeps the result as the candidate's until
        `choose`; otherwise it is the policy the cycle leaves."""
        variant = candidate.variant
        training = self._training_set(cycle, variant.algorithm)
        start = self.state.policy.policy(self.storage)
        restarts = self.selecting and self.cfg.selection.restarts
        with tqdm(desc=f"cycle {cycle} train ({candidate.name or variant.algorithm})", unit="step", leave=False,
                  disable=not self.log.bars) as bar:
            def progress(done: int, total: int) -> None:
                bar.n, bar.total = done, total
                bar.refresh()

            started = time.time()
            result = self.roles.learners.train(variant, training.data, cycle, self.storage, start, training.weights,
                                               selection_.policy_tag(cycle, candidate.name), restarts, progress)
            self._busy(Interval(timeline.LEARNER, cycle, f"train.{candidate.name}" if candidate.name else "train",
                                None, started, time.time()))
        if result.retries:
            self._retried(cycle, "train", "learner", result.retries,
                          "a learner rank died; trained again from the checkpoint")
        self.trackers.train_steps(cycle, list(result.step_losses), candidate.name or None)
        policy = PolicyRecord.of(result.policy, self.storage)
        summary = {
            "algorithm": variant.algorithm, "examples": result.examples, "steps": result.steps,
            "mean_loss": result.mean_loss, "final_loss": result.final_loss,
            "adapter": policy.path,  # relative to the run's storage, which may move
            "start": start.tag, "retries": result.retries,
        }
        if not self.selecting:
            self.state.policy, self.state.current.training = policy, summary
            return
        entry = {"name": candidate.name, **variant._asdict(), "training": summary, "policy": policy.model_dump()}
        if variant.algorithm != "dpo":
            entry["loss_type"] = None  # DPO's alone: KTO and MODPO have losses of their own
        progress_ = self.state.current.selection = self.state.current.selection or {"candidates": []}
        progress_["candidates"] = [c for c in progress_["candidates"] if c["name"] != candidate.name] + [entry]

    def _select(self, candidate: Candidate, cycle: int) -> None:
        """One candidate's figures on the selection suites, and its objective."""
        entry = next(c for c in self.state.current.selection["candidates"] if c["name"] == candidate.name)
        policy = PolicyRecord(**entry["policy"]).policy(self.storage)
        entry["suites"] = self._measure(self.selection_suites, self._published_policy(policy), cycle,
                                        f"select.{candidate.name}")[0]
        entry["value"] = selection_.objective(self.cfg, entry["suites"])

    def _select_start(self, cycle: int) -> None:
        """Cycle 0: the starting policy on the selection suites, the first best."""
        blocks = self._measure(self.selection_suites, self._policy(), cycle, "select.start")[0]
        self.state.current.selection = {
            "value": selection_.objective(self.cfg, blocks), "suites": blocks, "chosen": None, "candidates": [],
            "best_cycle": 0, "start_next": 0, "policy": self.state.policy.model_dump()}
        self._write_best(0, self.state.current.selection["value"], self.state.policy, self._selection_names())

    def _choose(self, cycle: int) -> None:
        """The candidate with the best objective becomes the cycle's policy (the first of equals,
        in config order); the others' adapters and checkpoints go unless
        selection.keep_candidates. The run's best cycle moves here if this one beats it."""
        current = self.state.current
        entries = current.selection["candidates"]
        winner = max(entries, key=lambda c: selection_.ranked(c["value"]))  # max keeps the first of equals
        for entry in entries:
            entry["chosen"] = entry is winner
            if entry is not winner and not self.cfg.selection.keep_candidates:
                self.storage.delete(entry["training"]["adapter"])
                self.storage.delete(f"checkpoints/{PolicyRecord(**entry['policy']).policy(self.storage).tag}")
                entry["training"]["adapter"] = None
        values = {r["cycle"]: r["selection"]["value"] for r in self.state.records} | {cycle: winner["value"]}
        best = selection_.best_cycle(values)
        self.state.policy = PolicyRecord(**winner["policy"])
        current.training = {**winner["training"], "candidate": winner["name"]}
        current.selection.update(value=winner["value"], suites=winner["suites"], chosen=winner["name"],
                                 best_cycle=best, start_next=best if self.cfg.selection.keep == "best" else cycle,
                                 policy=winner["policy"])
        if best == cycle:
            self._write_best(cycle, winner["value"], self.state.policy, self._selection_names())
        self.log(f"cycle {cycle} choose: {winner['name']} (objective " + ", ".join(
            f"{c['name']} {c['value']:.3f}" for c in entries) + f"); best cycle so far {best}")

    def _after_cycle(self, cycle: int) -> None:
        """A selecting run, once the cycle is evaluated: the next cycle starts from the best
        policy (selection.keep=best), and selection.patience may stop the run."""
        selection = self.state.records[-1]["selection"]
        if self.cfg.selection.keep == "best":
            best = next(r for r in self.state.records if r["cycle"] == selection["best_cycle"])
            self.state.policy = PolicyRecord(**best["selection"]["policy"])
        patience = self.cfg.selection.patience
        if patience is not None and cycle - selection["best_cycle"] >= patience and cycle < self.cfg.cycles:
            self.state.stopped = cycle
            self.log(f"selection.patience {patience}: no better objective than cycle {selection['best_cycle']}'s "
                     f"in {cycle - selection['best_cycle']} cycle(s); the run stops after cycle {cycle}")

    def _evaluate(self, cycle: int) -> None:
        """Every suite due this cycle, generated and judged, its metrics by judges[0]; and the
        agreement of every two judges that give labels, on the first suite's answers, keyed
        "first,second" in the config's order. The next cycle's training answers, when the same
        policy gives them, come in the same pass (pipeline.fuse)."""
        suites = [suite for suite in self.suites if self._due(suite, cycle)]
        blocks, agreements = self._measure(suites, self._policy(), cycle, alongside=self._fused(cycle))
        self.state.current.metrics = {"suites": blocks}
        self.state.current.agreement = {**agreements, **self._human_agreement()}

    def _fused(self, cycle: int) -> list[Stream]:
        """The next cycle's training stream, when it can share this evaluation's pass: the
        same policy answers it, and its prompts are known now (no logs to collect first, no
        candidate to choose after)."""
        cfg, next_cycle = self.cfg, cycle + 1
        if (not cfg.pipeline.fuse or not self.generates_training or self.selecting or self.with_logs
                or next_cycle > cfg.cycles or self._lag(next_cycle)
                or self.state.is_finished(next_cycle, "generate_judge")):
            return []
        return [self._train_stream(next_cycle)]

    def _human_agreement(self) -> dict[str, dict]:
        """Each labelling judge against the clinicians, on every answer they reviewed so far,
        keyed "judge,human"."""
        human = self._human_judgments()
        if not human.num_rows:
            return {}
        rows = pa.concat_tables([self._read("judgments", c) for c in sorted(set(human["cycle"].to_pylist()))])
        return {f"{pool.cfg.name},{review_.HUMAN}": judge_agreement(
                    rows.filter(pc.equal(rows["judge"], pool.cfg.name)), human)._asdict()
                for pool in self.roles.judges if pool.info.labels}

    def _measure(self, suites: list[Suite], policy: PolicyVersion, cycle: int, stage: str | None = None,
                 alongside: list[Stream] = ()) -> tuple[dict[str, dict], dict[str, dict]]:
        """`policy` on `suites`, in one pass of the engines with the `alongside` streams: each
        suite's block by judges[0], and the agreement of every two labelling judges on the first
        suite's answers. The buffer's `stage` of a suite's answers is `suite.stage`, or `stage`
        (then `stage.SUITE` for all but the first): candidates' answers are kept apart, but drawn
        with the suite's own seeds, the same for each."""
        cfg = self.cfg
        where = [suite.stage if stage is None else (stage if i == 0 else f"{stage}.{suite.cfg.name}")
                 for i, suite in enumerate(suites)]
        self._generate_and_judge(*(
            Stream(suite.prompts(cfg.seed), policy, cfg.evaluation.sampling, cycle, at,
                   suite.stage if stage is None else f"select.{suite.cfg.name}")
            for suite, at in zip(suites, where)), *alongside)
        blocks, agreements = {}, {}
        for i, (suite, at) in enumerate(zip(suites, where)):
            by_judge = self._judged(cycle, at)
            blocks[suite.cfg.name] = suites_.suite_metrics(suite, cycle, by_judge[cfg.judges[0].name])
            if i == 0:
                labelling = [pool.cfg.name for pool in self.roles.judges if pool.info.labels]
                agreements = {f"{a},{b}": judge_agreement(by_judge[a], by_judge[b])._asdict()
                              for a, b in itertools.combinations(labelling, 2)}
        return blocks, agreements

    # -- generate and judge, batch by batch -----------------------------------------------

    def _generate_and_judge(self, *streams: Stream) -> None:
        """One pass of the engines over every stream's prompts, in batches; each batch's answers
        go to the buffer and to every judge as soon as they are done, and each judge's verdicts
        to the buffer as they come back. Parts are named by batch, so a batch done again
        replaces its parts, and a stage that is run again (a resumed run) only does the batches
        whose parts are missing: judging stored answers where only verdicts are missing,
        generating where answers are."""
        pools, generators = self.roles.judges, self.roles.generators
        pending: dict[ray.ObjectRef, tuple[int, int]] = {}  # -> (stream, batch)
        todo: list[dict[int, list[JudgePool]]] = []
        total = already = 0
        primary = pools[0]
        for s, stream in enumerate(streams):
            missing, stored = self._missing_batches(generators.num_batches(stream.prompts), stream.cycle, stream.stage)
            todo.append(missing)
            for i in stored:
                answers = self.roles.buffer.read.remote("rollouts", stream.cycle, rollouts_part(stream.stage, i))
                for pool in missing[i]:
                    pool.submit(answers, stream.policy, tag=(s, i))
            seed = sampling_seed(self.cfg.seed, stream.cycle, stream.seed_stage)
            refs = generators.generate(stream.prompts, stream.policy, stream.sampling, stream.cycle, stream.stage,
                                       seed, batches=missing.keys() - stored, staleness=stream.staleness)
            pending.update({ref: (s, i) for i, ref in refs.items()})
            size, n = self.cfg.generator.batch_size, stream.prompts.num_rows
            answers = [min(size, n - i * size) * stream.sampling.samples_per_prompt
                       for i in range(generators.num_batches(stream.prompts))]
            total += sum(answers)
            already += sum(k for i, k in enumerate(answers) if primary not in missing.get(i, ()))
        resent = [pool.resent for pool in pools]
        what = " + ".join(f"cycle {s.cycle} {s.stage}" for s in streams)
        last_progress = time.monotonic()
        with tqdm(total=total, initial=already, desc=f"{what}: generate+judge", unit="answer",
                  leave=False, disable=not self.log.bars) as bar:
            while pending or any(pool.has_next() for pool in pools):
                busy = any(pool.has_next() for pool in pools)
                progressed = False
                if pending:
                    # Block briefly on generation only when the judges have nothing to return.
                    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0 if busy else 0.2)
                    for ref in done:
                        s, i = pending.pop(ref)
                        stream = streams[s]
                        # Straight from the engine to the buffer.
                        rows = self._write("rollouts", stream.cycle, rollouts_part(stream.stage, i), ref)
                        self.metrics.generated(stream.stage, rows)
                        for pool in todo[s][i]:
                            pool.submit(ref, stream.policy, tag=(s, i))
                        progressed = True
                for pool in pools:
                    judged_batch = pool.poll(timeout_s=0.2 / len(pools)) if pool.has_next() else None
                    if judged_batch is None:
                        continue
                    s, i = judged_batch.tag
                    stream = streams[s]
                    table = self._judge_busy(pool, stream, i, judged_batch.table)
                    self._write("judgments", stream.cycle, judgments_part(stream.stage, pool.cfg.name, i), table)
                    self.metrics.judged(stream.stage, pool.cfg.name, table)
                    if pool is primary:
                        bar.update(table.num_rows)
                    progressed = True
                if progressed:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > self.timeout:
                    raise TimeoutError(f"{what}: no batch generated and judged in "
                                       f"{self.timeout:.0f}s (ray.get_timeout_s)")
        self._generator_busy(streams)
        for pool, before in zip(pools, resent):
            if pool.resent > before:
                stream = streams[0]
                self._retried(stream.cycle, stream.stage, f"judge.{pool.cfg.name}", pool.resent - before,
                              f"judge {pool.cfg.name}: batch(es) sent again after a replica failed them")

    def _generator_busy(self, streams: tuple[Stream, ...]) -> None:
        """The engines' batches of this pass into the timeline, with the policy that answered."""
        policies = {(s.cycle, s.stage): s.policy.version for s in streams}
        for engine, b in self.roles.generators.busy():
            self._busy(Interval(f"{timeline.GENERATOR}.{engine}", b.cycle, b.stage, b.batch, b.start, b.end,
                                policies.get((b.cycle, b.stage))))

    def _judge_busy(self, pool: JudgePool, stream: Stream, batch: int, table: pa.Table) -> pa.Table:
        """A judged batch's replica and busy time (actors/judge.py BUSY_KEY) into the timeline;
        the table as the buffer keeps it, without them."""
        meta = table.schema.metadata or {}
        if BUSY_KEY in meta:
            pid, start, end = meta[BUSY_KEY].decode().split()
            self._busy(Interval(f"{timeline.JUDGE}.{pool.cfg.name}.{pid}", stream.cycle, stream.stage, batch,
                                float(start), float(end)))
        return table.replace_schema_metadata(None)

    def _busy(self, interval: Interval) -> None:
        with self._state_lock:  # the stage alongside adds to it too
            self.state.timeline.append(interval._asdict())

    def _missing_batches(self, batches: int, cycle: int, stage: str) -> tuple[dict[int, list[JudgePool]], set[int]]:
        """The judges each batch still lacks verdicts of (batches with none left out), and the
        batches among them whose answers are already stored."""
        generated = set(self._parts("rollouts", cycle))
        judged = set(self._parts("judgments", cycle))
        todo = {i: [pool for pool in self.roles.judges if judgments_part(stage, pool.cfg.name, i) not in judged]
                for i in range(batches)}
        todo = {i: missing for i, missing in todo.items() if missing}
        return todo, {i for i in todo if rollouts_part(stage, i) in generated}

    # -- the buffer -----------------------------------------------------------------------

    def _write(self, table: str, cycle: int, part: str, data: pa.Table | ray.ObjectRef) -> int:
        return ray.get(self.roles.buffer.write.remote(table, cycle, part, data), timeout=self.timeout)

    def _read(self, table: str, cycle: int | None = None) -> pa.Table:
        return ray.get(self.roles.buffer.read.remote(table, cycle), timeout=self.timeout)

    def _read_part(self, table: str, cycle: int, part: str) -> pa.Table:
        return ray.get(self.roles.buffer.read.remote(table, cycle, part), timeout=self.timeout)

    def _parts(self, table: str, cycle: int) -> list[str]:
        return ray.get(self.roles.buffer.parts.remote(table, cycle), timeout=self.timeout)

    def _judged(self, cycle: int, stage: str) -> dict[str, pa.Table]:
        """Each judge's committed judgments of one stage, in batch order."""
        rows = self._read("judgments", cycle)
        rows = rows.filter(pc.equal(rows["stage"], stage))
        return {pool.cfg.name: rows.filter(pc.equal(rows["judge"], pool.cfg.name)) for pool in self.roles.judges}

    def _training_set(self, cycle: int, algorithm: str) -> TrainingSet:
        """The algorithm's data for `cycle` from the buffer (with earlier cycles' rows replayed
        into it), and the KTO class weights from its desirable and undesirable counts."""
        table = "kto" if algorithm == "kto" else "pairs"
        if not self.generates_training:  # every imported row, every cycle
            fresh = self._read(table, 0)
            data, examples = fresh, self._read("kto", 0)
        else:
            fresh = self._read(table, cycle)
            data = pa.concat_tables([fresh, self._replay(table, fresh.num_rows, cycle, algorithm)])
            examples = data if table == "kto" else self._read("kto", cycle)
        desirable = int(pc.sum(examples["label"]).as_py() or 0)
        undesirable = examples.num_rows - desirable
        return TrainingSet(data, fresh.num_rows, kto_weights(desirable, undesirable), desirable, undesirable)

    def _replay(self, table: str, fresh_rows: int, cycle: int, algorithm: str) -> pa.Table:
        """A seeded sample of earlier cycles' rows, pairs.replay_ratio times the cycle's own."""
        wanted = round(self.cfg.pairs.replay_ratio * fresh_rows)
        if not wanted:
            return TABLES[table].empty_table()
        earlier = self._read(table)
        earlier = earlier.filter(pc.less(earlier["cycle"], cycle))
        if algorithm == "modpo":  # MODPO's margins need the judges' scores; imports have none
            earlier = earlier.filter(pc.is_valid(earlier["chosen_scores"]))
        picked = random.Random(self.cfg.seed * 31 + cycle).sample(range(earlier.num_rows), min(wanted, earlier.num_rows))
        return earlier.take(sorted(picked))

    # -- bookkeeping ----------------------------------------------------------------------

    def _record(self, cycle: int) -> dict:
        """The cycle's metrics.json entry, from what its stages recorded."""
        current = self.state.current
        blocks = current.metrics["suites"]
        headline = suites_.primary(self.cfg)
        record = {"cycle": cycle}
        if headline in blocks:  # the first cares suite's figures, at the top as before suites
            record.update({k: v for k, v in blocks[headline].items() if k not in ("kind", "prompts")})
        record["suites"] = blocks
        record["agreement"] = current.agreement  # every two labelling judges, on answers both labelled
        record["training"] = None if current.training is None else {**(current.data or {}), **current.training}
        if current.selection is not None:  # the candidates' figures, the chosen one, the best cycle
            record["selection"] = current.selection
        record["seconds"] = current.seconds
        record["nodes"] = self.roles.nodes()
        if current.prompts is not None:
            record["prompts"] = current.prompts
        if current.logs is not None:
            record["logs"] = current.logs
        return record

    def _report(self, records: list[dict]) -> None:
        report.write_metrics(self.storage, records)
        self.storage.write_text(TIMELINE_FILE, json.dumps(self.state.timeline) + "\n")
        report.plot(self.storage, records)
        if not self.selecting:
            self._best_of_reported(records)
        self.log.cycle(records[-1], report.cycle_line(records[-1], suites_.primary(self.cfg)))
        self.metrics.cycle(records[-1])
        headline = suites_.primary(self.cfg)
        self.trackers.cycle(records[-1], images={"tradeoff": run_report.tradeoff_png(records, headline)}
                            if headline else None)
        run_report.build_report([self.storage])  # report.html and report.md, after every cycle

    def _best_of_reported(self, records: list[dict]) -> None:
        """A run that does not select still points at its best cycle, by the objective read off
        its headline suite; best.json says so, since that suite is also what it reports."""
        headline = suites_.primary(self.cfg)
        values = {r["cycle"]: selection_.headline_objective(self.cfg, r, headline) for r in records}
        best = selection_.best_cycle(values)
        if best != records[-1]["cycle"] and self.storage.exists("best.json"):
            return
        self._write_best(best, values[best], self._policy_left_by(records[best]), [headline] if headline else [],
                         on_reported=True)

    def _selection_names(self) -> list[str]:
        return self.cfg.selection.suite_names()

    def _write_best(self, cycle: int, value: float, policy: PolicyRecord, measured_on: list[str],
                    on_reported: bool = False) -> None:
        """best.json, and the best policy's folder copied to adapters/best (policies/best), which
        `raylign eval --policy RUN@best` and exports read; the starting model has no folder."""
        folder = "policies/best" if self.cfg.learner.finetune == "full" else "adapters/best"
        best = {"cycle": cycle, "value": value, "objective": self.cfg.selection.objective, "measured_on": measured_on,
                "chosen_on_reported_suite": on_reported, "policy": policy.model_dump(), "folder": None}
        if policy.kind == "base" or not policy.in_run:
            self.storage.delete(folder)
        else:
            best["folder"] = folder
            self.storage.copy(policy.path, folder)
        self.storage.write_text(BEST_FILE, json.dumps(best, indent=2) + "\n")

    def _retried(self, cycle: int, stage: str, role: str, retries: int, why: str) -> None:
        """Work done again after a role failed (`role`: learner, judge.NAME): logged and counted."""
        self.log.retry(cycle, stage, role, retries, f"cycle {cycle} {stage}: {why} ({retries} retry(s))")
        self.metrics.retries(role, retries)
