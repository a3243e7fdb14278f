"""Choosing the policy each cycle: candidates, the selection split, best.json, keep and patience."""

import json
import math

import pyarrow as pa
import pytest

from raylign.config import ConfigError, load_config
from raylign.data.prompts import read_prompts
from raylign.driver import Driver
from raylign.evaluate import resolve_policy
from raylign.evaluation import selection
from raylign.evaluation.suites import normalised
from raylign.run_state import RunState


@pytest.fixture(scope="module")
def prompt_set():
    return read_prompts(load_config().prompts).table


# -- the config ----------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("selection.candidates=[dpo, sft]", "config selection.candidates[1].algorithm: must be one of 'dpo', 'kto' or "
                                        "'modpo' (got 'sft')"),
    ("selection.candidates=[dpo, {algorithm: kto, loss_type: ipo}]",
     "config selection.candidates[1]: loss_type 'ipo' is a DPO loss over pairs; kto trains with its own loss"),
    ("selection.objective={safety_score: 1, unsafe_compliance_rate: -1}",
     "config selection: objective key 'unsafe_compliance_rate' names a figure no selection suite reports"),
    ("selection.objective={xstest.safe_refusal_rate: -1}",
     "config selection: objective key 'xstest.safe_refusal_rate' names a figure no selection suite reports"),
    ("selection.split=test", "selection.split 'test' is the prompt set's eval_split"),
    ("selection.candidates=[dpo, dpo]", "candidates must have distinct names (got ['dpo', 'dpo'])"),
])
def test_a_bad_selection_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_candidates_are_named_by_what_they_change_and_inherit_the_rest():
    cfg = load_config(overrides=["selection.candidates=[dpo, kto, {algorithm: dpo, beta: 0.1, loss_type: ipo}]",
                                 "learner.learning_rate=5e-4"])
    made = selection.candidates(cfg)
    assert [c.name for c in made] == ["dpo", "kto", "dpo-beta0.1-ipo"]
    assert made[2].variant == ("dpo", 0.1, 5e-4, "ipo") and made[1].variant == ("kto", 0.3, 5e-4, "sigmoid")
    # A run that does not select trains `algorithm`, in folders named as before (cycle_001).
    plain = selection.candidates(load_config(overrides=["algorithm=kto"]))
    assert [(c.name, c.variant.algorithm) for c in plain] == [("", "kto")]
    assert selection.policy_tag(1, "") == "cycle_001" and selection.policy_tag(2, "kto") == "cycle_002-kto"


def test_an_objective_may_weigh_another_selection_suites_figures():
    cfg = load_config(overrides=[
        "selection.suites=[{name: xs, kind: over_refusal, path: /data/xstest.csv}]",
        "selection.objective={safety_score: 1.0, xs.safe_refusal_rate: -2.0, safety_by_level.0: 0.5}"])
    blocks = {"selection": {"safety_score": 0.7, "safety_by_level": {"0": 0.4}}, "xs": {"safe_refusal_rate": 0.1}}
    assert selection.objective(cfg, blocks) == pytest.approx(0.7 - 0.2 + 0.2)
    assert math.isnan(selection.objective(cfg, {"selection": blocks["selection"]}))  # nothing judged on xs
    assert selection.ranked(math.nan) < selection.ranked(-5.0)
    assert selection.best_cycle({0: 0.5, 1: 0.61, 2: 0.61, 3: math.nan}) == 1  # a later cycle must improve


# -- the selection split -------------------------------------------------------------------


def test_the_holdout_is_set_aside_from_training_by_harm_level(prompt_set):
    cfg = load_config(overrides=["selection.candidates=[dpo, kto]"])
    splits = selection.split_for_selection(prompt_set, cfg)
    train = prompt_set.filter(pa.compute.equal(prompt_set["split"], "train"))
    assert splits.train.num_rows + splits.selection.num_rows == train.num_rows
    assert not {normalised(p) for p in splits.train["prompt"].to_pylist()} & {
        normalised(p) for p in splits.selection["prompt"].to_pylist()}
    for level in range(4):
        share = splits.selection["harmful_level"].to_pylist().count(level)
        assert share == round(0.2 * train["harmful_level"].to_pylist().count(level))
    assert selection.split_for_selection(prompt_set, cfg).selection.equals(splits.selection)  # seeded
    # A run that does not select trains on the whole train split.
    plain = selection.split_for_selection(prompt_set, load_config())
    assert plain.train.num_rows == train.num_rows and plain.selection is None


def test_a_selection_split_with_no_rows_stops_the_run_before_anything_is_placed(tmp_path, prompt_set):
    for override, message in [("selection.split=validation", "selection.split 'validation' has no rows"),
                              ("selection.holdout=0.001", "the selection split has no rows")]:
        cfg = load_config(overrides=["selection.candidates=[dpo, kto]", override])
        with pytest.raises(ConfigError, match=message):
            Driver(cfg, tmp_path / "run", log=lambda _: None).run()
        assert not (tmp_path / "run").exists()


# -- a selecting run, end to end -----------------------------------------------------------


class Interrupted(Exception):
    pass


class CountingDriver(Driver):
    """Counts the candidates it trains, can die before one of them, and can force a cycle's
    objective down (so that the test knows which cycle is best)."""

    def __init__(self, *args, die_before=None, worse=(), trained=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.die_before, self.worse, self.trained = die_before, worse, trained if trained is not None else []

    def _train(self, candidate, cycle):
        if (cycle, candidate.name) == self.die_before:
            raise Interrupted(f"cycle {cycle} {candidate.name}")
        self.trained.append((cycle, candidate.name))
        super()._train(candidate, cycle)

    def _select(self, candidate, cycle):
        super()._select(candidate, cycle)
        entry = next(c for c in self.state.current.selection["candidates"] if c["name"] == candidate.name)
        entry["value"] += {1: 1.0, 2: -1.0}.get(cycle, 0.0) if self.worse else 0.0


@pytest.fixture(scope="module")
def selecting_run(tmp_path_factory, local_ray, model_path):
    """[dpo, kto], keep=best, patience=1, three cycles: killed before cycle 1's kto, resumed;
    cycle 1 forced best and cycle 2 worse, so the run stops after cycle 2."""
    run_dir = tmp_path_factory.mktemp("selecting") / "run"
    cfg = load_config(overrides=[
        "cycles=3", "selection.candidates=[dpo, kto]", "selection.keep=best", "selection.patience=1",
        "selection.max_prompts=16", "prompts.prompts_per_cycle=32", "evaluation.suites.0.max_prompts=16",
        "learner.epochs=1", f"model.path={model_path}"])
    trained, lines = [], []
    with pytest.raises(Interrupted):
        CountingDriver(cfg, run_dir, log=lines.append, die_before=(1, "kto"), trained=trained, worse=True).run()
    died = RunState.load(run_dir)
    records = CountingDriver(cfg, run_dir, log=lines.append, resume=True, trained=trained, worse=True).run()
    return run_dir, records, trained, lines, died


def test_every_candidate_trains_from_the_cycles_start_and_the_best_objective_wins(selecting_run):
    run_dir, records, *_ = selecting_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [r["cycle"] for r in metrics] == [0, 1, 2]
    start = metrics[0]["selection"]
    assert start["chosen"] is None and start["candidates"] == [] and start["suites"]["selection"]["prompts"] == 16
    for cycle in (1, 2):
        block = metrics[cycle]["selection"]
        entries = block["candidates"]
        assert [c["name"] for c in entries] == ["dpo", "kto"]
        assert [c["algorithm"] for c in entries] == ["dpo", "kto"]
        winner = max(entries, key=lambda c: c["value"])
        assert [c["chosen"] for c in entries] == [c is winner for c in entries] and block["chosen"] == winner["name"]
        assert block["value"] == winner["value"] and block["suites"] == winner["suites"]
        for c in entries:
            assert c["training"]["examples"] > 0 and c["suites"]["selection"]["num_answers"] == 16 * 4
            # Each candidate started from the policy the previous cycle kept (keep=best: cycle 1's).
            started = "initial" if cycle == 1 else f"cycle_001-{metrics[1]['selection']['chosen']}"
            assert c["training"]["start"] == started
            kept = (run_dir / f"adapters/cycle_{cycle:03d}-{c['name']}").exists()
            assert kept == c["chosen"] == (c["training"]["adapter"] is not None)  # the losers' folders go
            assert (run_dir / f"checkpoints/cycle_{cycle:03d}-{c['name']}").exists() == c["chosen"]
        # The table's columns are the chosen candidate's training.
        assert metrics[cycle]["training"]["candidate"] == winner["name"]
        assert metrics[cycle]["training"]["mean_loss"] == winner["training"]["mean_loss"]
    # Candidates share their draws: the same prompts and seeds, so they differ by their policy.
    assert metrics[1]["selection"]["suites"]["selection"]["prompts"] == 16


def test_a_resumed_run_trains_no_candidate_twice(selecting_run):
    run_dir, _, trained, _, died = selecting_run
    assert (1, "train.dpo") in died.finished and (1, "select.dpo") in died.finished
    assert died.running == (1, "train.kto")
    assert trained == [(1, "dpo"), (1, "kto"), (2, "dpo"), (2, "kto")]
    finished = RunState.load(run_dir).finished
    assert len(finished) == len(set(map(tuple, finished)))


def test_best_json_names_the_best_cycle_and_patience_stops_a_run_that_stopped_improving(selecting_run):
    run_dir, records, trained, lines, _ = selecting_run
    best = json.loads((run_dir / "best.json").read_text())
    winner = records[1]["selection"]["chosen"]
    assert best["cycle"] == 1 and best["measured_on"] == ["selection"] and not best["chosen_on_reported_suite"]
    assert best["value"] == records[1]["selection"]["value"] > records[2]["selection"]["value"]
    assert best["policy"]["path"] == f"adapters/cycle_001-{winner}" and best["folder"] == "adapters/best"
    copied = {p.name: p.read_bytes() for p in (run_dir / "adapters/best").iterdir()}
    assert copied == {p.name: p.read_bytes() for p in (run_dir / f"adapters/cycle_001-{winner}").iterdir()}
    assert records[2]["selection"]["best_cycle"] == records[2]["selection"]["start_next"] == 1
    # Patience 1: cycle 2 did not improve on cycle 1, so cycle 3 never ran, and the log says why.
    state = RunState.load(run_dir)
    assert state.stopped == 2 and not any(cycle == 3 for cycle, _ in trained)
    assert any("selection.patience 1" in line and "stops after cycle 2" in line for line in lines)
    assert state.policy.path == f"adapters/cycle_001-{winner}"  # keep=best: what a next cycle would start from
    # raylign eval names it RUN@best.
    assert resolve_policy(f"{run_dir}@best", "embedded").policy.path == str(run_dir / f"adapters/cycle_001-{winner}")


def test_the_run_writes_its_report_and_tensorboard_reads_back_every_candidate(selecting_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, records, *_ = selecting_run
    html, md = (run_dir / "report.html").read_text(), (run_dir / "report.md").read_text()
    for cycle in (1, 2):
        for c in records[cycle]["selection"]["candidates"]:
            assert f"{c['value']:.3f}" in html and f"{c['value']:.3f}" in md
    assert "Best cycle: 1" in html and f"{records[1]['safety_score']:.3f}" in md
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    values = [(e.step, e.value) for e in events.Scalars("selection/value")]
    assert values == [(r["cycle"], pytest.approx(r["selection"]["value"], abs=1e-6)) for r in records]
    for name in ("dpo", "kto"):
        steps = sum(next(c for c in r["selection"]["candidates"] if c["name"] == name)["training"]["steps"]
                    for r in records[1:])
        assert len(events.Scalars(f"train/{name}/step_loss")) == steps
    assert [e.step for e in events.Images("images/tradeoff")] == [0, 1, 2]
