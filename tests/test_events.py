"""The run log (raylign/events.py): text lines as before, or one JSON object per event.

The JSON log of a real run (through `raylign run --log-format json`) is checked with the
run's Ray metrics in tests/actors/test_metrics.py: one run feeds both."""

import json
import math

import pytest

from raylign.events import RunLog, cycle_figures

RECORD = {"cycle": 2, "safety_score": 0.5, "harmful_refusal_rate": 0.25, "erroneous_refusal_rate": 0.125,
          "invalid_rate": 0.0, "suites": {}, "training": {"pairs": 7, "mean_loss": 0.69, "steps": 2}}


def json_log() -> tuple[RunLog, list[str]]:
    lines = []
    return RunLog("json", "s3://bucket/runs/r1", write=lines.append), lines


def fields(event: dict) -> dict:
    """An event's own fields, without the ones every event has."""
    return {k: v for k, v in event.items() if k not in ("time", "event", "run")}


def test_json_events_are_one_object_a_line_with_time_event_and_run():
    log, lines = json_log()
    log.run_start(3, resume=True)
    log.resume(5, (1, "train"))
    log.stage_start(1, "train")
    log.stage_end(1, "train", 2.5)
    log.cycle(RECORD, "cycle 2: (text only)")
    log.retry(1, "train", "learner", 2)
    log("a free-text line")
    log.show("the table: text only")
    log.run_end("s3://bucket/runs/r1/metrics.json")
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["run_start", "resume", "stage_start", "stage_end", "cycle", "retry",
                                            "message", "run_end"]
    for e in events:
        assert e["run"] == "s3://bucket/runs/r1" and e["time"].endswith("Z") and "T" in e["time"]
    assert fields(events[0]) == {"cycles": 3, "resume": True}
    assert fields(events[1]) == {"finished": 5, "next_cycle": 1, "next_stage": "train"}
    assert fields(events[2]) == {"cycle": 1, "stage": "train"}
    assert fields(events[3]) == {"cycle": 1, "stage": "train", "seconds": 2.5}
    assert fields(events[5]) == {"cycle": 1, "stage": "train", "role": "learner", "retries": 2}
    assert fields(events[4]) == cycle_figures(RECORD) == {
        "cycle": 2, "safety_score": 0.5, "harmful_refusal_rate": 0.25, "erroneous_refusal_rate": 0.125,
        "invalid_rate": 0.0, "pairs": 7, "loss": 0.69}
    assert events[6]["text"] == "a free-text line"
    assert events[7]["metrics"] == "s3://bucket/runs/r1/metrics.json" and events[7]["error"] is None


def test_cycle_0_and_a_nan_loss_are_nulls_not_invalid_json():
    log, lines = json_log()
    log.cycle({"cycle": 0, "safety_score": 0.4, "training": None})
    log.cycle({**RECORD, "training": {"pairs": 0, "mean_loss": math.nan}})
    log.resume(7, None)  # nothing left to run
    first, second, resume = (json.loads(line) for line in lines)  # strict JSON: NaN would not parse here
    assert first["pairs"] is None and first["loss"] is None and first["invalid_rate"] is None
    assert second["pairs"] == 0 and second["loss"] is None
    assert resume["next_cycle"] is None and resume["next_stage"] is None
    assert all("NaN" not in line for line in lines)


def test_a_failed_run_ends_with_its_error_on_one_line():
    log, lines = json_log()
    log.run_end(None, RuntimeError("cycle 1 training: learner rank(s) [0] died\nmore detail"))
    end = json.loads(lines[0])
    assert end["event"] == "run_end" and end["metrics"] is None
    assert end["error"] == "RuntimeError: cycle 1 training: learner rank(s) [0] died"


def test_text_format_prints_what_it_printed_before_and_nothing_for_json_only_events():
    lines = []
    log = RunLog.of(lines.append, "runs/r1")  # what the driver makes of `log=print` or a test's callable
    assert log.bars
    log.run_start(1, resume=False)
    log.stage_start(0, "load")
    log.stage_end(0, "load", 0.1)
    log.resume(3, (1, "train"), "resuming runs/r1: 3 stage(s) finished; continuing at cycle 1 train")
    log.cycle(RECORD, "cycle 2: safety 0.500 ...")
    log.retry(1, "train", "learner", 1, "cycle 1 train: a learner rank died; trained again from the checkpoint "
                                         "(1 retry(s))")
    log("prompts: 2 bad row(s) skipped")
    log.show("\nthe table")
    log.run_end("runs/r1/metrics.json")
    assert lines == ["resuming runs/r1: 3 stage(s) finished; continuing at cycle 1 train", "cycle 2: safety 0.500 ...",
                     "cycle 1 train: a learner rank died; trained again from the checkpoint (1 retry(s))",
                     "prompts: 2 bad row(s) skipped", "\nthe table"]


def test_json_owns_stdout_while_the_run_goes(capsys):
    """Ray's driver prints notices about its tasks to stdout: in json mode they go to stderr, so
    that every stdout line parses."""
    log = RunLog("json", "runs/r1")
    assert not log.bars
    with log.owning_stdout():
        print("(raylet) Task ServeController.listen_for_change failed")
        log.stage_start(0, "load")
    out, err = capsys.readouterr()
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["stage_start"]
    assert "(raylet)" in err
    with RunLog("text").owning_stdout():
        print("a text line")
    assert capsys.readouterr().out == "a text line\n"


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match=r"log format must be one of text, json \(got 'yaml'\)"):
        RunLog("yaml")
