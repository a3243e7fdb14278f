"""`raylign eval`: one policy, or two side by side, on the evaluation suites, without training.

A policy is named by one string (`resolve_policy`):
- `embedded`, a model folder or a hub id: that model as it is;
- a LoRA adapter folder (it holds adapter_config.json): the adapter on `model.path`;
- a run folder: its policy after its last trained cycle, after cycle N with `RUN@N` (`RUN@0`
  is the model it started from), or its best cycle's with `RUN@best` (best.json), on the
  run's own base model.
The evaluation is a run folder of its own (config.yaml, state.json, buffer/, metrics.json with
one record per policy, eval.png), made by the driver's own stages: the prompts and suites are
loaded once, then each policy's engines are placed (no learners) and every suite is generated
and judged as a run's evaluate stage does, with the same seeds. So a run's policy, evaluated
with the run's prompts, samples per prompt, batch size and seed, gets the figures the run
recorded for it. Without a CONFIG, a run folder given as the first policy lends its own
config.yaml (suites, judges, sampling, seed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

from raylign.config import EMBEDDED_MODELS, Config, ConfigError, parse_config
from raylign.data.schemas import BASE, PolicyVersion
from raylign.driver import Driver, placed_roles, ray_session, resolve_model
from raylign.evaluation import report
from raylign.evaluation.selection import BEST_FILE
from raylign.evaluation.suites import Suite, primary
from raylign.run_state import STATE_FILE, RunState
from raylign.storage import RunStorage


class PolicySpec(NamedTuple):
    label: str
    """What the user wrote: it names the policy in the table and in metrics.json."""
    model_path: str
    """The model the engines load: `embedded`, a folder or a hub id."""
    policy: PolicyVersion
    """BASE, or a LoRA adapter read from its folder."""
    lora_rank: int | None


def _adapter_rank(folder: RunStorage, rel: str = "") -> int:
    return int(json.loads(folder.read_text(f"{rel}/adapter_config.json" if rel else "adapter_config.json"))["r"])


def resolve_policy(spec: str, base_model: str) -> PolicySpec:
    """What `spec` names (see the module docstring); `base_model` carries adapters. Run
    folders and adapters may be storage URIs; the engines download what they load."""
    run_part, _, cycle_part = spec.rpartition("@") if "@" in spec else (spec, "", "")
    folder = RunStorage(run_part)
    if folder.exists(STATE_FILE):
        return _run_policy(spec, folder, cycle_part)
    if cycle_part:
        raise ConfigError(f"policy {spec!r}: {run_part} is not a run folder (no {STATE_FILE}), so it has no cycles")
    if folder.exists("adapter_config.json"):
        return PolicySpec(spec, base_model, PolicyVersion(1, "lora", folder.uri()), _adapter_rank(folder))
    return PolicySpec(spec, spec, BASE, None)


def _run_policy(spec: str, run: RunStorage, cycle_part: str) -> PolicySpec:
    state = RunState.load(run)
    run_cfg = parse_config(run.read_text("config.yaml"), run.uri("config.yaml"))
    # The policy each evaluated cycle kept (a selecting run: its chosen candidate), by the run's storage.
    kept = {r["cycle"]: r["training"]["adapter"] for r in state.records if (r.get("training") or {}).get("adapter")}
    if cycle_part == "best":
        if not run.exists(BEST_FILE):
            raise ConfigError(f"policy {spec!r}: {run} has no {BEST_FILE} (a run before selection existed)")
        cycle = json.loads(run.read_text(BEST_FILE))["cycle"]
    elif cycle_part and not cycle_part.isdigit():
        raise ConfigError(f"policy {spec!r}: after @ comes a cycle number or `best`")
    else:
        cycle = int(cycle_part) if cycle_part else max(kept, default=0)
    if cycle and cycle not in kept:
        raise ConfigError(f"policy {spec!r}: {run} has no trained cycle {cycle} (trained: {sorted(kept) or 'none'})")
    if cycle == 0:  # on engines set up as the run's were (LoRA enabled), so the draws match its cycle 0
        rank = run_cfg.learner.lora.r if run_cfg.learner.finetune == "lora" else None
        return PolicySpec(spec, run_cfg.model.path, BASE, rank)
    if run_cfg.learner.finetune == "full":  # transformers loads a model folder, so a local copy of it
        return PolicySpec(spec, str(run.local(kept[cycle])), BASE, None)
    return PolicySpec(spec, run_cfg.model.path, PolicyVersion(cycle, "lora", run.uri(kept[cycle])),
                      _adapter_rank(run, kept[cycle]))


class Evaluator(Driver):
    """The driver's load and evaluate stages, once per policy: record i is policy i."""

    trains = False

    def __init__(self, cfg: Config, run_dir: str | Path, policies: list[PolicySpec],
                 log: Callable[[str], None] = print):
        super().__init__(cfg, run_dir, log)
        self.policies = policies
        self._current: PolicySpec = policies[0]

    def run(self) -> list[dict]:
        self.state = self._new_state()
        with self._no_folder_left_if_nothing_finished(), ray_session(self.cfg):
            for i, spec in enumerate(self.policies):
                self._current = spec
                cfg = self.cfg.model_copy(update={"model": self.cfg.model.model_copy(update={"path": spec.model_path})})
                model_path = resolve_model(cfg, self.log)
                with placed_roles(cfg, model_path, self.storage, train=False, rank=spec.lora_rank) as roles:
                    self.roles = roles
                    if i == 0:
                        self._stage(0, "load", self._load)
                    self._stage(i, "evaluate", self._evaluate)
        names = self._suite_names()
        table = (report.format_comparison(self.state.records, names) if len(self.state.records) == 2
                 else report.format_table(self.state.records, names, by="policy"))
        self.log("\n" + table)
        report.plot_comparison(self.storage, self.state.records, names)
        self.log(f"\neval folder: {self.run_dir}  (metrics.json, eval.png, config.yaml, buffer/)")
        return self.state.records

    def _models(self) -> list[tuple[str, str, str]]:
        """The policies' models, in place of model.path (which carries adapters only), and the judges'."""
        policies = [(spec.model_path, f"policy {spec.label!r}", "causal_lm") for spec in self.policies
                    if spec.model_path not in EMBEDDED_MODELS]
        return policies + [m for m in super()._models() if m[1] != "model.path"]

    def _policy(self) -> PolicyVersion:
        return self._current.policy

    def _due(self, suite: Suite, cycle: int) -> bool:
        return True

    def _record(self, cycle: int) -> dict:
        return {"policy": self._current.label, **super()._record(cycle)}

    def _report(self, records: list[dict]) -> None:
        report.write_metrics(self.storage, records)
        self.log(f"{records[-1]['policy']}: " + report.cycle_line(records[-1], primary(self.cfg)).split(": ", 1)[1])


def evaluate(cfg: Config, policies: list[str], out: str | Path, log: Callable[[str], None] = print) -> list[dict]:
    """Evaluate each policy (a spec string) on cfg's suites; the records, one per policy."""
    specs = [resolve_policy(p, cfg.model.path) for p in policies]
    # The eval folder keeps its own buffer: a run's config may point buffer.root at the run's,
    # whose stored answers must not stand in for the policies evaluated here.
    cfg = cfg.model_copy(update={"buffer": cfg.buffer.model_copy(update={"root": None, "imports": []})})
    return Evaluator(cfg, out, specs, log).run()

