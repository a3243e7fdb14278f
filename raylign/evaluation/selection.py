"""Choosing the policy each cycle: candidates, the selection split, the objective, the best cycle.

A run that selects (`selection.active`) sets a selection split aside: a named split of the
prompt set, or a seeded share of the train split (by harm level) that is then never trained
on. Each cycle every candidate (an algorithm, with its own beta, learning rate or loss) trains
from the cycle's starting policy on the same buffer rows and is evaluated on the selection
suites; the objective, a weighted sum of their figures, picks the winner, and over the cycles
the best policy of the run. Choosing on prompts that are neither trained on nor reported keeps
the reported held-out figures honest.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from raylign.config import SELECTION_SUITE, Config, ConfigError
from raylign.data.schemas import TrainVariant
from raylign.evaluation.suites import figure, leaks, normalised, trained_texts


BEST_FILE = "best.json"
"""The run's best cycle by the objective and where its policy is (written by the driver)."""


class Candidate(NamedTuple):
    name: str
    """Names its stages (`train.NAME`), folders (`cycle_001-NAME`) and record entry; empty for a
    run that does not select, whose folders stay `cycle_001`."""
    variant: TrainVariant


def candidates(cfg: Config) -> list[Candidate]:
    """What each cycle trains: the configured candidates, or `algorithm` alone."""
    learner = cfg.learner
    if not cfg.selection.candidates:
        name = cfg.algorithm if cfg.selection.active else ""
        return [Candidate(name, TrainVariant(cfg.algorithm, learner.beta, learner.learning_rate, learner.loss_type))]
    return [Candidate(c.label, TrainVariant(
        c.algorithm, c.beta if c.beta is not None else learner.beta,
        c.learning_rate if c.learning_rate is not None else learner.learning_rate,
        c.loss_type or learner.loss_type)) for c in cfg.selection.candidates]


def policy_tag(cycle: int, candidate: str) -> str:
    """The folder name of a cycle's policy: `cycle_001`, or `cycle_001-kto` for a candidate."""
    return f"cycle_{cycle:03d}" + (f"-{candidate}" if candidate else "")


class Splits(NamedTuple):
    train: pa.Table
    """The train split's rows that are trained on."""
    selection: pa.Table | None
    """The selection suite's prompts; None when the run does not select."""


def split_for_selection(prompt_set: pa.Table, cfg: Config) -> Splits:
    """The training prompts and the selection prompts. The selection prompts are `selection.split`
    or a seeded `holdout` share of each harm level of the train split, less any whose text is a
    training or reported held-out prompt's; a selection split left with no rows is an error."""
    train = prompt_set.filter(pc.equal(prompt_set["split"], cfg.prompts.train_split))
    selection_cfg = cfg.selection
    if not selection_cfg.active:
        return Splits(train, None)
    if selection_cfg.split is not None:
        chosen = prompt_set.filter(pc.equal(prompt_set["split"], selection_cfg.split))
        if chosen.num_rows == 0:
            found = sorted(set(prompt_set["split"].to_pylist()))
            raise ConfigError(f"selection.split {selection_cfg.split!r} has no rows in the prompt set; splits "
                              f"found: {found}")
    else:
        rng = random.Random(cfg.seed * 7 + 1)
        levels = train["harmful_level"].to_pylist()
        held = set()
        for level in sorted(set(levels), key=lambda v: (v is None, v)):
            rows = [i for i, v in enumerate(levels) if v == level]
            held.update(rng.sample(rows, round(selection_cfg.holdout * len(rows))))
        mask = pa.array([i in held for i in range(train.num_rows)])
        chosen, train = train.filter(mask), train.filter(pc.invert(mask))
    seen = {normalised(p) for p in train["prompt"].to_pylist()} | trained_texts(prompt_set, cfg.prompts.eval_split)
    chosen = chosen.filter(pa.array([not leak for leak in leaks(chosen, seen)], pa.bool_()))
    if chosen.num_rows == 0:
        raise ConfigError("the selection split has no rows (selection.split or selection.holdout): the candidates "
                          "would be chosen on nothing")
    if selection_cfg.max_prompts is not None and selection_cfg.max_prompts < chosen.num_rows:
        picked = sorted(random.Random(cfg.seed).sample(range(chosen.num_rows), selection_cfg.max_prompts))
        chosen = chosen.take(picked)
    return Splits(train, chosen)


def objective(cfg: Config, blocks: dict[str, dict]) -> float:
    """The objective of one policy from its selection suites' blocks ({suite name: block}):
    higher is better; NaN when a figure it weighs is missing (no answer was judged)."""
    total = 0.0
    for suite, metric, weight in cfg.selection.objective_terms():
        value = figure(blocks.get(suite, {}), metric)
        if not isinstance(value, (int, float)):
            return math.nan
        total += weight * value
    return total


def ranked(value: float | None) -> float:
    """An objective value for comparing: NaN (nothing judged) ranks below every number."""
    return -math.inf if value is None or math.isnan(value) else value


def best_cycle(values: dict[int, float]) -> int:
    """The cycle with the highest objective; the earliest of equals (a later cycle must improve)."""
    return max(sorted(values), key=lambda c: ranked(values[c]))


def headline_objective(cfg: Config, record: dict, suite: str | None) -> float:
    """For a run that does not select: the objective read off a reported cares suite's block,
    so that best.json still points somewhere (and says it was measured on a reported suite)."""
    if suite is None or suite not in record.get("suites", {}):
        return math.nan
    return objective(cfg, {SELECTION_SUITE: record["suites"][suite]})

