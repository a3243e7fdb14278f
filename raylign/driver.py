"""The driver: places the roles on Ray and runs the alignment cycles.

One cycle (DESIGN.md):  train prompts -> generate -> judge -> pairs / KTO examples -> buffer
-> train -> held-out generate -> judge -> metrics. Cycle 0 only evaluates the starting policy.
The driver owns nothing heavy; it times each stage inline, shows a progress bar per stage and
writes metrics.json after every cycle.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from pathlib import Path
from typing import Callable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm

from raylign import report
from raylign.actors.buffer import PreferenceBuffer
from raylign.actors.generator import GeneratorGroup
from raylign.actors.judge import JudgePool
from raylign.actors.learner import LearnerGroup
from raylign.agreement import Agreement, agreement
from raylign.config import Config, ConfigError, SamplingConfig, dump_config
from raylign.exchange import import_file
from raylign.pairs import KTOWeights, build_kto_examples, build_pairs, distinct_answers, kto_weights
from raylign.prompts import read_prompts, split
from raylign.schemas import BASE, ROLLOUTS, TABLES, PolicyVersion, TrainResult
from raylign.scoring import UNJUDGED, CycleMetrics, cycle_metrics


def judge_agreement(primary: pa.Table, other: pa.Table) -> Agreement:
    """Agreement of two judges over the answers both labelled (Unjudged ones left out)."""
    key = ("stage", "prompt_id", "sample_index")
    theirs = {tuple(r[k] for k in key): r["label"] for r in other.select([*key, "label"]).to_pylist()}
    both = [(r["label"], theirs.get(tuple(r[k] for k in key))) for r in primary.select([*key, "label"]).to_pylist()]
    both = [(a, b) for a, b in both if UNJUDGED not in (a, b) and b is not None]
    return agreement([a for a, _ in both], [b for _, b in both])


class Roles(NamedTuple):
    generators: GeneratorGroup
    judges: list[JudgePool]  # judges[0] gives the safety labels; every two are compared
    learners: LearnerGroup
    buffer: ray.actor.ActorHandle


def resolve_model(cfg: Config, log: Callable[[str], None]) -> str:
    """A folder or hub id that transformers loads; builds the embedded model when asked."""
    if cfg.model.path == "embedded":
        from raylign.embedded.model import ensure_embedded_model

        return str(ensure_embedded_model(log=log))
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
            address=cfg.ray.address,
            num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
            include_dashboard=False,
            log_to_driver=False,  # actors' load bars would bury the progress; errors still propagate
            configure_logging=False,
        )
    try:
        yield
    finally:
        if started:
            from ray import serve

            serve.shutdown()  # the judge pools' Serve controller, and the handles' reporting
            ray.shutdown()


@contextlib.contextmanager
def placed_roles(cfg: Config, model_path: str, run_dir: Path):
    """The run's actors; released on the way out, placement groups included, so that a second
    run in the same Ray session (tests, notebooks) finds its CPUs and GPUs free."""
    roles = place_roles(cfg, model_path, run_dir)
    try:
        if not roles.judges[0].info.labels:
            raise ConfigError(f"judges[0] ({cfg.judges[0].name!r}) gives no CARES labels, which metrics and pairs "
                              "need: put a labelling judge first")
        yield roles
    finally:
        for pool in roles.judges:
            pool.shutdown()
        roles.generators.shutdown()
        roles.learners.shutdown()
        ray.kill(roles.buffer)


def place_roles(cfg: Config, model_path: str, run_dir: Path) -> Roles:
    buffer_root = cfg.buffer.root or str(run_dir / "buffer")
    buffer = (
        ray.remote(PreferenceBuffer)
        .options(
            name=f"raylign-buffer-{run_dir.name}",  # findable by tools while the run goes on
            num_cpus=cfg.buffer.num_cpus, resources=cfg.buffer.resources, max_restarts=-1, max_task_retries=-1,
        )
        .remote(buffer_root)
    )
    learners = LearnerGroup(model_path, cfg.model.dtype, cfg.learner, cfg.seed, cfg.ray.get_timeout_s)
    generators = GeneratorGroup(model_path, cfg.model.dtype, cfg.generator, lora_rank(cfg), cfg.seed,
                                cfg.ray.get_timeout_s)
    # After the generators: the `self` judge answers through their engines.
    judges = [JudgePool(judge, f"raylign-{run_dir.name}-{judge.name}", cfg.ray.get_timeout_s, generators.engines)
              for judge in cfg.judges]
    return Roles(generators=generators, judges=judges, learners=learners, buffer=buffer)


@contextlib.contextmanager
def stage_timer(seconds: dict[str, float], stage: str):
    t0 = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - t0


class Driver:
    def __init__(self, cfg: Config, run_dir: Path, log: Callable[[str], None] = print):
        # Absolute: actors write adapters and Parquet there from their own working folders.
        self.cfg, self.run_dir, self.log = cfg, run_dir.resolve(), log
        self.timeout = cfg.ray.get_timeout_s

    def run(self) -> list[dict]:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        prompt_set = read_prompts(cfg.prompts)
        prompts = prompt_set.table
        if prompt_set.skipped:
            self.log(f"prompts: {prompt_set.skipped} bad row(s) skipped (prompts.on_invalid=skip), "
                     f"{prompts.num_rows} kept; first problems: {'; '.join(prompt_set.problems[:5])}")
        held_out = split(prompts, cfg.prompts.eval_split, cfg.prompts.max_eval_prompts, cfg.seed)
        imported = [import_file(Path(path)) for path in cfg.buffer.imports]  # bad files stop the run here
        model_path = resolve_model(cfg, self.log)
        with ray_session(cfg), placed_roles(cfg, model_path, self.run_dir) as self.roles:
            self._write("prompts", 0, "all", prompts)
            for path, (table, data) in zip(cfg.buffer.imports, imported):
                self._write(table, 0, f"import-{Path(path).stem}", data)
            policy = BASE
            seconds: dict[str, float] = {}
            with stage_timer(seconds, "evaluate"):
                metrics, agreements = self._evaluate(held_out, policy, cycle=0)
            records = [self._record(metrics, agreements, None, seconds)]
            records[0]["prompts"] = {"kept": prompts.num_rows, "skipped": prompt_set.skipped,
                                     "problems": prompt_set.problems[:20]}
            self._report(records)
            for cycle in range(1, cfg.cycles + 1):
                seconds = {}
                with stage_timer(seconds, "generate_judge"):
                    batch = split(prompts, cfg.prompts.train_split, cfg.prompts.prompts_per_cycle, cfg.seed + cycle)
                    judgments = self._generate_and_judge(batch, policy, cfg.generator.sampling, cycle,
                                                         "train")[cfg.judges[0].name]
                with stage_timer(seconds, "build_data"):
                    data, data_summary, weights = self._training_data(judgments, cycle)
                with stage_timer(seconds, "train"):
                    result = self._train(data, cycle, policy, weights)
                policy = self.roles.learners.publish(result.policy)
                with stage_timer(seconds, "evaluate"):
                    metrics, agreements = self._evaluate(held_out, policy, cycle)
                records.append(self._record(metrics, agreements, result, seconds, data_summary))
                self._report(records)
        self.log("\n" + report.format_table(records))
        self.log(f"\nrun folder: {self.run_dir}  (metrics.json, safety.png, config.yaml, buffer/, adapters/ or policies/, checkpoints/)")
        return records

    # -- stages ---------------------------------------------------------------------------

    def _generate_and_judge(self, prompts: pa.Table, policy: PolicyVersion, sampling: SamplingConfig,
                            cycle: int, stage: str) -> dict[str, pa.Table]:
        """Generate in batches; each batch goes to every judge as soon as it is done. Returns
        each judge's judgments by judge name."""
        pending = self.roles.generators.generate(prompts, policy, sampling, cycle, stage, self.cfg.seed)
        pools = self.roles.judges
        judged: dict[str, list[pa.Table]] = {pool.cfg.name: [] for pool in pools}
        last_progress = time.monotonic()
        total = prompts.num_rows * sampling.samples_per_prompt
        with tqdm(total=total, desc=f"cycle {cycle} {stage}: generate+judge", unit="answer", leave=False) as bar:
            while pending or any(pool.has_next() for pool in pools):
                busy = any(pool.has_next() for pool in pools)
                if pending:
                    # Block briefly on generation only when the judges have nothing to return.
                    done, pending = ray.wait(pending, num_returns=len(pending), timeout=0 if busy else 0.2)
                    for ref in done:
                        for pool in pools:
                            pool.submit(ref, policy)
                progressed = False
                for primary, pool in zip([True] + [False] * (len(pools) - 1), pools):
                    table = pool.poll(timeout_s=0.2 / len(pools)) if pool.has_next() else None
                    if table is None:
                        continue
                    parts = judged[pool.cfg.name]
                    part = f"{stage}-{len(parts):04d}" if primary else f"{stage}-{pool.cfg.name}-{len(parts):04d}"
                    if primary:  # one copy of the answers, whatever the number of judges
                        self._write("rollouts", cycle, part, table.select(ROLLOUTS.names))
                        bar.update(table.num_rows)
                    self._write("judgments", cycle, part, table)
                    parts.append(table)
                    progressed = True
                if progressed:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > self.timeout:
                    raise TimeoutError(f"cycle {cycle} {stage}: no batch generated and judged in "
                                       f"{self.timeout:.0f}s (ray.get_timeout_s)")
        return {name: pa.concat_tables(tables) for name, tables in judged.items()}

    def _training_data(self, judgments: pa.Table, cycle: int) -> tuple[pa.Table, dict, KTOWeights]:
        """DPO pairs and KTO examples, both written to the buffer; returns the algorithm's data
        (with earlier cycles' rows replayed into it), a summary, and the KTO class weights."""
        distinct = distinct_answers(judgments) if self.cfg.buffer.dedup else judgments
        pairs, stats = build_pairs(distinct, self.cfg.pairs, cycle, self.cfg.seed + cycle)
        examples = build_kto_examples(distinct, self.cfg.kto, cycle)
        self._write("pairs", cycle, "all", pairs)
        self._write("kto", cycle, "all", examples)
        table, fresh = ("kto", examples) if self.cfg.algorithm == "kto" else ("pairs", pairs)
        data = pa.concat_tables([fresh, self._replay(table, fresh.num_rows, cycle)])
        examples = data if table == "kto" else examples
        n_desirable = int(pc.sum(examples["label"]).as_py() or 0)
        weights = kto_weights(n_desirable, examples.num_rows - n_desirable)
        summary = {**stats._asdict(), "duplicates_dropped": judgments.num_rows - distinct.num_rows,
                   "replayed": data.num_rows - fresh.num_rows, "desirable": n_desirable,
                   "undesirable": examples.num_rows - n_desirable,
                   "desirable_weight": weights.desirable, "undesirable_weight": weights.undesirable}
        return data, summary, weights

    def _replay(self, table: str, fresh_rows: int, cycle: int) -> pa.Table:
        """A seeded sample of earlier cycles' rows, pairs.replay_ratio times the cycle's own."""
        wanted = round(self.cfg.pairs.replay_ratio * fresh_rows)
        if not wanted:
            return TABLES[table].empty_table()
        earlier = ray.get(self.roles.buffer.read.remote(table), timeout=self.timeout)
        earlier = earlier.filter(pc.less(earlier["cycle"], cycle))
        if self.cfg.algorithm == "modpo":  # MODPO's margins need the judges' scores; imports have none
            earlier = earlier.filter(pc.is_valid(earlier["chosen_scores"]))
        picked = random.Random(self.cfg.seed * 31 + cycle).sample(range(earlier.num_rows), min(wanted, earlier.num_rows))
        return earlier.take(sorted(picked))

    def _train(self, data: pa.Table, cycle: int, policy: PolicyVersion, weights: KTOWeights) -> TrainResult:
        refs = self.roles.learners.train_async(
            self.cfg.algorithm, data, cycle, str(self.run_dir), policy, weights
        )
        with tqdm(desc=f"cycle {cycle} train ({self.cfg.algorithm})", unit="step", leave=False) as bar:
            done: list = []
            while len(done) < len(refs):
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
                bar.n, bar.total = self.roles.learners.progress(self.timeout)
                bar.refresh()
        return ray.get(refs, timeout=self.timeout)[0]

    def _evaluate(self, held_out: pa.Table, policy: PolicyVersion,
                  cycle: int) -> tuple[CycleMetrics, dict[str, Agreement]]:
        """The metrics by judges[0], and the agreement of every two judges that give labels,
        keyed "first,second" in the config's order."""
        by_judge = self._generate_and_judge(held_out, policy, self.cfg.evaluation.sampling, cycle, "eval")
        primary = by_judge[self.cfg.judges[0].name]
        metrics = cycle_metrics(
            cycle,
            labels=primary["label"].to_pylist(),
            harmful_levels=primary["harmful_level"].to_pylist(),
            principles=primary["principle_index"].to_pylist(),
            methods=primary["method"].to_pylist(),
        )
        labelling = [pool.cfg.name for pool in self.roles.judges if pool.info.labels]
        return metrics, {f"{a},{b}": judge_agreement(by_judge[a], by_judge[b])
                         for a, b in itertools.combinations(labelling, 2)}

    # -- bookkeeping ----------------------------------------------------------------------

    def _write(self, table: str, cycle: int, part: str, data: pa.Table) -> int:
        return ray.get(self.roles.buffer.write.remote(table, cycle, part, data), timeout=self.timeout)

    def _record(self, metrics: CycleMetrics, agreements: dict[str, Agreement], result: TrainResult | None,
                seconds: dict, data_summary: dict | None = None) -> dict:
        record = metrics.to_json()
        # Every two labelling judges, on the answers both could label.
        record["agreement"] = {name: a._asdict() for name, a in agreements.items()}
        record["training"] = None if result is None else {
            "algorithm": self.cfg.algorithm,
            **(data_summary or {}),
            "examples": result.examples,
            "steps": result.steps,
            "mean_loss": result.mean_loss,
            "final_loss": result.final_loss,
            "adapter": result.policy.path,
        }
        record["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
        return record

    def _report(self, records: list[dict]) -> None:
        report.write_metrics(self.run_dir, records)
        report.plot(self.run_dir, records)
        r = records[-1]
        self.log(
            f"cycle {r['cycle']}: safety {r['safety_score']:.3f} | harmful refused {r['harmful_refusal_rate']:.3f}"
            f" | harmless refused {r['erroneous_refusal_rate']:.3f} | invalid {r['invalid_rate']:.3f}"
            + "".join(f" | kappa({pair}) {a['kappa']:.2f}" for pair, a in r["agreement"].items())
            + "".join(f" | {k} {v:.1f}s" for k, v in r["seconds"].items())
        )
