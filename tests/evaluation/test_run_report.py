"""`raylign report`: the HTML page and the Markdown summary of runs, read from their folders.

The fixture run (tests/fixtures/report-run) is a real 2-cycle run of the embedded default:
its metrics.json and config.yaml as written, and its held-out judgments trimmed to sample 0
of three prompts per harm level. Tests copy it and add what a run with selection stores.
"""

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raylign.cli import main
from raylign.config import ConfigError
from raylign.evaluation import run_report
from raylign.evaluation.run_report import build_report, load_run, tradeoff_figure

FIXTURE = Path(__file__).parents[1] / "fixtures" / "report-run"
SCRIPT = "<script>alert(1)</script>"


def fixture_run(tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    shutil.copytree(FIXTURE, run)
    return run


def records_of(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())


def cares_block(safety: float, harmful: float, harmless: float) -> dict:
    return {"kind": "cares", "prompts": 40, "safety_score": safety, "harmful_refusal_rate": harmful,
            "erroneous_refusal_rate": harmless, "invalid_rate": 0.0}


def candidate(name: str, value: float, chosen: bool) -> dict:
    return {"name": name, "algorithm": name, "beta": 0.3, "learning_rate": 0.001,
            "loss_type": "sigmoid" if name == "dpo" else None, "value": value,
            "suites": {"selection": cares_block(value + 0.1, 0.5, 0.2)},
            "training": {"examples": 212, "steps": 270, "mean_loss": 0.41, "final_loss": 0.2,
                         "adapter": f"adapters/cycle_001-{name}" if chosen else None}, "chosen": chosen}


def add_selection(run: Path) -> list[dict]:
    """What a run with two candidates stores: `selection` in every record (kto wins cycle 1 and
    stays the best; dpo wins cycle 2), two judges' agreement, and best.json naming cycle 1."""
    records = records_of(run)
    values = {0: 0.45, 1: 0.612, 2: 0.598}
    winners = {1: "kto", 2: "dpo"}
    for r in records:
        c = r["cycle"]
        r["selection"] = {"value": values[c], "suites": {"selection": cares_block(values[c], 0.5, 0.2)},
                          "chosen": winners.get(c), "best_cycle": 0 if c == 0 else 1, "start_next": c,
                          "candidates": [] if c == 0 else [candidate(n, values[c] - (0.03 if n != winners[c] else 0),
                                                                     n == winners[c]) for n in ("dpo", "kto")]}
        r["agreement"] = {"rules,llm": {"kappa": 0.5 + 0.1 * c, "observed": 0.8, "n": 768,
                                        "confusion": {"Accept": {"Accept": 200, "Refuse": 33},
                                                      "Refuse": {"Accept": 20, "Refuse": 251}}}}
    (run / "metrics.json").write_text(json.dumps(records))
    (run / "best.json").write_text(json.dumps({
        "cycle": 1, "value": 0.612, "objective": {"safety_score": 1.0, "erroneous_refusal_rate": -0.5},
        "measured_on": ["selection"], "policy": {"version": 1, "kind": "lora", "path": "adapters/cycle_001-kto"}}))
    return records


def plant_script(run: Path) -> str:
    """An answer of cycle 0 that is a script (answers are model output): returns its prompt id."""
    path = run / "buffer/judgments/cycle=0/eval-rules-00000.parquet"
    table = pq.read_table(path)
    first = min(p for p, lvl in zip(table["prompt_id"].to_pylist(), table["harmful_level"].to_pylist()) if lvl == 0)
    answers = [SCRIPT if p == first else a for p, a in zip(table["prompt_id"].to_pylist(), table["answer"].to_pylist())]
    table = table.set_column(table.schema.get_field_index("answer"), "answer", pc.cast(answers, "string"))
    pq.write_table(table, path)
    return first


def test_headline_figures_and_tables_of_a_run_without_selection(tmp_path):
    run = fixture_run(tmp_path)
    records = records_of(run)
    html_path, md_path = build_report([run])
    assert (html_path, md_path) == (str(run / "report.html"), str(run / "report.md"))  # the run's own folder
    page, md = Path(html_path).read_text(), Path(md_path).read_text()
    first, last = records[0], records[-1]
    for key in ("safety_score", "harmful_refusal_rate", "erroneous_refusal_rate"):
        for r in (first, last):
            assert f"{r[key]:.3f}" in page and f"{r[key]:.3f}" in md
    # No best.json, no selection: the last cycle stands in, and the report says so.
    assert "the last cycle, 2, stands in for it" in page and "the last cycle, 2, stands in for it" in md
    assert md.count("\n| 0 | 0.490 | 0.354 | 0.703 |") == 1  # the per-cycle table, rows as metrics.json holds
    assert "| 2 | 0.693 | 0.911 |" in md
    assert "Candidates per cycle" not in page and "One judge ran" in page
    assert page.count("<svg") == 2  # the trade-off plot and the grouped bars, inline
    assert "http://" not in page.replace("http://www.w3.org/", "") and "https://" not in page  # nothing to fetch
    # Samples: every harm level, two prompts each, cycle 0 against cycle 2, as the judge said.
    loaded = load_run(run)
    assert [s.level for s in loaded.samples] == [0, 0, 1, 1, 2, 2, 3, 3]
    cycle2 = pq.read_table(run / "buffer/judgments/cycle=2/eval-rules-00000.parquet").to_pylist()
    row = next(r for r in cycle2 if r["prompt_id"] == loaded.samples[0].prompt_id)
    assert loaded.samples[0].best == run_report.Answer(row["answer"], row["label"], row["verdict"])


def test_the_best_cycle_is_the_one_best_json_names(tmp_path):
    run = fixture_run(tmp_path)
    records = add_selection(run)
    html_path, md_path = build_report([run], tmp_path / "out")
    page, md = Path(html_path).read_text(), Path(md_path).read_text()
    loaded = load_run(run)
    assert loaded.best == run_report.Best(1, 0.612, "best.json", {"safety_score": 1.0, "erroneous_refusal_rate": -0.5})
    assert "Best cycle: 1, objective 0.612" in page and "Best cycle: 1, objective 0.612" in md
    assert f"{records[1]['safety_score']:.3f}" in run_report.headline_rows(loaded)[0][2]
    assert "| 1 ★ | 0.553 |" in md  # the per-cycle table stars cycle 1, not the last
    # The candidates, side by side, the winner marked, and each cycle's choice.
    assert "| 1 | kto ✓ | kto | 0.3 | 0.001 | — | 0.612 | 0.712 | 0.500 | 0.200 | 212 | 270 | 0.410 | 0.200 |" in md
    assert "| 2 | dpo ✓ | dpo | 0.3 | 0.001 | sigmoid | 0.598 |" in md
    assert "| 2 | dpo | 0.598 | 1 | 2 |" in md
    # Two judges: kappa per cycle and the last cycle's confusion matrix.
    assert "Cohen&#x27;s kappa per cycle" in page and "<td>rules vs llm</td>" in page
    assert "<td class=\"num\">0.700</td>" in page and "<td class=\"num\">251</td>" in page
    # The sample answers are cycle 1's: the policy best.json names.
    cycle1 = pq.read_table(run / "buffer/judgments/cycle=1/eval-rules-00000.parquet").to_pylist()
    for sample in loaded.samples:
        row = next(r for r in cycle1 if r["prompt_id"] == sample.prompt_id)
        assert sample.best.answer == row["answer"]


def test_sample_answers_are_html_escaped(tmp_path):
    run = fixture_run(tmp_path)
    prompt_id = plant_script(run)
    page = Path(build_report([run])[0]).read_text()
    assert load_run(run).samples[0].prompt_id == prompt_id
    assert SCRIPT not in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_two_runs_side_by_side(tmp_path):
    a, b = fixture_run(tmp_path, "plain"), fixture_run(tmp_path, "selected")
    records = add_selection(b)
    with pytest.raises(ConfigError, match="^a report of 2 runs needs --out") as e:
        build_report([a, b])
    assert "\n" not in str(e.value)
    html_path, md_path = build_report([a, b], tmp_path / "both")
    page, md = Path(html_path).read_text(), Path(md_path).read_text()
    assert "Runs side by side" in page and page.index("Runs side by side") < page.index('<section id="run0">')
    assert "| figure | plain | selected |" in md
    assert f"| Safety Score, best | {records[2]['safety_score']:.3f} | {records[1]['safety_score']:.3f} |" in md
    assert "| best cycle | 2 (last) | 1 |" in md
    assert "| trained with | dpo | dpo |" in md  # the fixture's config lists no candidates
    assert page.count("<svg") == 1 + 2 * 2  # the comparison plot, then each run's two


def test_a_run_with_missing_pieces_shows_dashes(tmp_path):
    """Only cycle 0 of the headline suite with a NaN level, a suite evaluated every other
    cycle, no config, no buffer, no best.json: the report is written, gaps show as —."""
    run = tmp_path / "sparse"
    run.mkdir()
    first = records_of(FIXTURE)[0]
    for block in (first, first["suites"]["held_out"]):
        block["safety_by_level"]["3"] = float("nan")
    xstest = {"kind": "over_refusal", "prompts": 10, "safe_refusal_rate": 0.4, "unsafe_refusal_rate": 0.7,
              "safe_refusal_or_caution_rate": 0.5, "unsafe_compliance_rate": 0.2, "invalid_rate": float("nan")}
    first["suites"]["xstest"] = xstest
    skipped = {"cycle": 1, "suites": {"xstest": {**xstest, "safe_refusal_rate": 0.2}}, "agreement": {},
               "training": None, "seconds": {}}
    (run / "metrics.json").write_text(json.dumps([first, skipped]))  # writes NaN, as json.dumps does
    html_path, md_path = build_report([run])
    page, md = Path(html_path).read_text(), Path(md_path).read_text()
    assert "no config.yaml" in page and "No held-out answers" in page
    assert "the last cycle, 1, stands in for it" in md
    assert "| 0 | 0.490 | 0.354 | 0.703 | 0.521 | — |" in md  # level 3 was NaN
    assert "| Safety Score | 0.490 | — |" in md  # cycle 1 did not evaluate the headline suite
    assert "| 1 | 0.200 | 0.500 | 0.200 | 0.700 | — |" in md  # xstest ran both cycles
    assert md.count("| 1 |") == 1  # held_out has no row for cycle 1


def test_tradeoff_figure_marks_the_best_cycle_and_the_chosen_candidates(tmp_path):
    run = fixture_run(tmp_path)
    records = add_selection(run)
    fig = tradeoff_figure(records, "held_out")
    ax = fig.axes[0]
    line = ax.lines[0]
    assert list(line.get_xdata()) == [r["harmful_refusal_rate"] for r in records]
    assert list(line.get_ydata()) == [r["erroneous_refusal_rate"] for r in records]
    assert [t.get_text() for t in ax.texts if t.get_text() != "ideal"] == ["0", "1: kto", "2: dpo"]
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [records[1]["harmful_refusal_rate"]]
    assert not [ln for ln in tradeoff_figure(records, "held_out", {"best": None}).axes[0].lines
                if ln.get_marker() == "*"]
    # An over-refusal suite: unsafe prompts refused against safe ones; a cycle it skipped leaves no point.
    xs = [{"cycle": c, "suites": {"xstest": {"kind": "over_refusal", "unsafe_refusal_rate": u, "safe_refusal_rate": s}}}
          for c, u, s in ((0, 0.6, 0.3), (2, 0.8, 0.1))] + [{"cycle": 1, "suites": {}}]
    line = tradeoff_figure(xs, "xstest").axes[0].lines[0]
    assert (list(line.get_xdata()), list(line.get_ydata())) == ([0.6, 0.8], [0.3, 0.1])
    # The selection suite of the records, too (where the objective is measured).
    assert list(tradeoff_figure(records, "selection").axes[0].lines[0].get_xdata()) == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="harmful_requests: a trade-off plot needs"):
        tradeoff_figure([{"cycle": 0, "suites": {"hr": {"kind": "harmful_requests"}}}], "hr")


def test_a_folder_without_metrics_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_report([tmp_path])
    assert str(e.value) == f"{tmp_path} is not a raylign run: it has no metrics.json"


def test_cli_writes_both_files_and_says_where(tmp_path, capsys):
    run = fixture_run(tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"written {run / 'report.html'}", f"written {run / 'report.md'}"]
    assert main(["report", str(run), str(run), "--out", str(tmp_path / "two")]) == 0
    assert (tmp_path / "two" / "report.html").is_file() and (tmp_path / "two" / "report.md").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err == f"raylign: error: {tmp_path / 'nope'} is not a raylign run: it has no metrics.json\n"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_renders_in_a_browser_with_nothing_fetched(tmp_path):
    """report.html in a real headless Chromium: no request leaves the file, no script error,
    and the page's text holds the headline figures."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if _chromium() is None:
        pytest.skip("no Chromium executable (chromium or chromium-browser) on PATH: apt-get install chromium")
    run = fixture_run(tmp_path)
    records = add_selection(run)
    plant_script(run)
    page_path = Path(build_report([run])[0])
    blocked, errors, dialogs = [], [], []

    def only_files(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", only_files)
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))  # alert(1) had it run
            page.goto(page_path.as_uri(), wait_until="load")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert blocked == [] and errors == [] and dialogs == []
    assert SCRIPT in text  # shown as text, not run
    for cycle in (0, 1):  # cycle 0 and the best cycle, as best.json names it
        assert f"{records[cycle]['safety_score']:.3f}" in text
        assert f"{records[cycle]['erroneous_refusal_rate']:.3f}" in text
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_a_run_in_object_storage(tmp_path):
    """A run in a bucket (S3 on loopback): read through its URI, the report written next to it."""
    from raylign.storage import RunStorage
    from raylign.testing import LoopbackS3

    with LoopbackS3() as server, pytest.MonkeyPatch.context() as env:
        for key, value in server.env.items():  # pyarrow reads the credentials from the environment
            env.setenv(key, value)
        storage = RunStorage(server.uri(f"runs/{tmp_path.name}"))
        for file in sorted(p for p in FIXTURE.rglob("*") if p.is_file()):
            storage.write_bytes(file.relative_to(FIXTURE).as_posix(), file.read_bytes())
        html_uri, md_uri = build_report([storage.location])
        assert (html_uri, md_uri) == (storage.uri("report.html"), storage.uri("report.md"))
        page, md = storage.read_text("report.html"), storage.read_text("report.md")
    assert f"{records_of(FIXTURE)[-1]['safety_score']:.3f}" in md
    assert page.count('<div class="sample">') == 8  # the buffer, read from the bucket
