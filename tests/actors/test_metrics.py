"""A run's Ray metrics (actors/metrics.py) as Prometheus scrapes them, and its JSON log.

One tiny run through `raylign run --log-format json`, in a Ray session of this module's own
that exports metrics (a free port, reported every second): its stdout must be JSON events
only, with every stage in order and each cycle's figures as metrics.json has them; and what
Ray's metrics endpoint reports must add up to what the buffer holds."""

import json
import re
import socket
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raylign.cli import main

STAGES = [(0, "load"), (0, "evaluate"), (1, "generate_judge"), (1, "build_data"), (1, "train"), (1, "evaluate")]
TABLES = ("prompts", "rollouts", "judgments", "pairs", "kto")
SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def metrics_port():
    """Ray with its metrics endpoint on a free port, reporting every second (10 s by default)."""
    import ray
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # address="local": a session of its own, even where a `ray start` cluster runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 1000})
    yield port
    serve.shutdown()
    ray.shutdown()


def scrape(port: int, run: str) -> dict[str, dict[frozenset, float]]:
    """raylign's series of `run`: {name: {labels (run and Ray's own left out): value}},
    summed over the processes that recorded them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, dict[frozenset, float]] = defaultdict(lambda: defaultdict(float))
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or not match[1].startswith("ray_raylign_"):
            continue
        labels = dict(LABEL.findall(match[2] or ""))
        if labels.get("run") != run:
            continue
        ours = frozenset((k, v) for k, v in labels.items() if k in ("stage", "judge", "table", "le"))
        out[match[1].removeprefix("ray_")][ours] += float(match[3])
    return out


def total(series: dict[str, dict[frozenset, float]], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for k, v in series.get(name, {}).items() if want <= k)


def files(run: Path, table: str) -> list[Path]:
    return sorted((run / "buffer" / table).glob("cycle=*/*.parquet"))


def test_a_json_logged_run_reports_its_figures_as_events_and_ray_metrics(tmp_path, metrics_port, model_path, capfd):
    run = tmp_path / "telemetry"
    code = main(["run", "--log-format", "json", "--set", "cycles=1", "--set", "prompts.prompts_per_cycle=16",
                 "--set", "evaluation.suites.0.max_prompts=16", "--set", "learner.epochs=1",
                 "--set", "generator.batch_size=8", "--set", f"model.path={model_path}", "--out", str(run)])
    out = capfd.readouterr().out
    assert code == 0

    # The log: nothing but JSON objects on stdout, each stage started and ended in order.
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["run"] for e in events} == {str(run)}
    assert events[0]["event"] == "run_start" and events[0]["cycles"] == 1 and events[0]["resume"] is False
    stages = [(e["event"], e["cycle"], e["stage"]) for e in events if e["event"].startswith("stage_")]
    assert stages == [(f"stage_{edge}", c, s) for c, s in STAGES for edge in ("start", "end")]
    assert all(e["seconds"] >= 0 for e in events if e["event"] == "stage_end")
    records = json.loads((run / "metrics.json").read_text())
    cycles = [e for e in events if e["event"] == "cycle"]
    assert [e["cycle"] for e in cycles] == [0, 1]
    for event, record in zip(cycles, records):
        for key in ("safety_score", "harmful_refusal_rate", "erroneous_refusal_rate", "invalid_rate"):
            assert event[key] == record[key]
        assert event["pairs"] == (record["training"] or {}).get("pairs")
        assert event["loss"] == (record["training"] or {}).get("mean_loss")
    assert events[-1]["event"] == "run_end" and events[-1]["error"] is None
    assert events[-1]["metrics"] == str(run / "metrics.json")

    # A resume of the finished run says so, and ends at once.
    assert main(["run", "--resume", str(run), "--log-format", "json"]) == 0
    resumed = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [e["event"] for e in resumed] == ["run_start", "resume", "run_end"]
    assert resumed[0]["resume"] is True and resumed[2]["error"] is None
    assert (resumed[1]["finished"], resumed[1]["next_cycle"], resumed[1]["next_stage"]) == (len(STAGES), None, None)

    # The metrics: what the buffer holds, as the driver, the buffer and the learner counted it.
    rows = {t: sum(pq.ParquetFile(f).metadata.num_rows for f in files(run, t)) for t in TABLES}
    judgments = [row for f in files(run, "judgments") for row in pq.read_table(f).to_pylist()]
    unjudged = sum(r["label"] == "Unjudged" for r in judgments)
    expected = [  # (metric, labels, value)
        *[("buffer_rows_written_total", {"table": t}, rows[t]) for t in TABLES],
        *[("buffer_bytes_written_total", {"table": t}, sum(f.stat().st_size for f in files(run, t))) for t in TABLES],
        ("answers_generated_total", {}, rows["rollouts"]),
        ("answers_judged_total", {"judge": "rules"}, len(judgments)),
        ("unjudged_answers_total", {"judge": "rules"}, unjudged),
        ("judge_latency_seconds_count", {"judge": "rules"}, len(judgments) - unjudged),
        ("train_steps_total", {}, records[1]["training"]["steps"]),
        ("train_step_seconds_count", {}, records[1]["training"]["steps"]),
        ("stage_seconds_count", {"stage": "evaluate"}, 2),
        ("stage_seconds_count", {"stage": "train"}, 1),
        ("cycle", {}, 1),
        *[(key, {}, records[1][key]) for key in ("safety_score", "harmful_refusal_rate", "erroneous_refusal_rate",
                                                 "invalid_rate")],
    ]

    def reported() -> dict[str, float]:
        series = scrape(metrics_port, run.name)
        return {f"{name}{labels or ''}": total(series, f"raylign_{name}", **labels) for name, labels, _ in expected}

    want = pytest.approx({f"{name}{labels or ''}": value for name, labels, value in expected})
    deadline = time.monotonic() + 30  # Ray reports every second here; the agent exports what it got
    while (got := reported()) != want and time.monotonic() < deadline:
        time.sleep(1)
    assert got == want
    assert rows["judgments"] == rows["rollouts"] > 0 and rows["pairs"] > 0
