"""The tables and plots a person reads: one per suite, cycles a suite skipped left out."""

import math
from pathlib import Path

from raylign.evaluation import report


def cares(score):
    return {"kind": "cares", "prompts": 4, "safety_score": score, "safety_by_level": {"0": score, "3": score},
            "harmful_refusal_rate": 0.5, "erroneous_refusal_rate": 0.25, "invalid_rate": 0.0}


def xstest(rate):
    return {"kind": "over_refusal", "prompts": 6, "safe_refusal_rate": rate, "safe_refusal_or_caution_rate": 0.5,
            "unsafe_compliance_rate": 0.1, "unsafe_refusal_rate": 0.8, "invalid_rate": 0.0}


def record(cycle, suites):
    top = {k: v for k, v in suites["held_out"].items() if k not in ("kind", "prompts")} if "held_out" in suites else {}
    return {"cycle": cycle, **top, "suites": suites, "agreement": {}, "seconds": {"evaluate": 1.0}, "training": None}


def test_a_suite_evaluated_every_other_cycle_leaves_its_gaps(tmp_path):
    records = [record(0, {"held_out": cares(0.4), "xstest": xstest(0.3)}), record(1, {"xstest": xstest(0.2)}),
               record(2, {"held_out": cares(0.6), "xstest": xstest(0.1)})]
    table = report.format_table(records, ["held_out", "xstest"])
    headline, suite = table.split("\n\n")
    assert [line.split()[0] for line in headline.splitlines()[2:]] == ["0", "2"]
    assert [line.split()[:2] for line in suite.splitlines()[3:]] == [["0", "0.300"], ["1", "0.200"], ["2", "0.100"]]
    assert Path(report.plot(tmp_path, records)).stat().st_size > 1000
    line = report.cycle_line(records[1], "held_out")
    assert line == "cycle 1: [xstest] safe refused 0.200 (with partial 0.500) | unsafe complied 0.100 | evaluate 1.0s"


def test_two_policies_side_by_side_with_their_difference(tmp_path):
    a = {"policy": "runs/r", "suites": {"held_out": cares(0.7), "xstest": xstest(0.1)}}
    b = {"policy": "embedded", "suites": {"held_out": cares(0.4), "xstest": xstest(0.3)}}
    out = report.format_comparison([a, b], ["held_out", "xstest"])
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("A ", "B "))]
    assert [r[:3] for r in rows] == [["A", "runs/r", "0.700"], ["B", "embedded", "0.400"], ["A", "-", "B"],
                                     ["A", "runs/r", "0.100"], ["B", "embedded", "0.300"], ["A", "-", "B"]]
    assert rows[2][3] == "0.300" and rows[5][3] == "-0.200"
    assert math.isnan(float(rows[2][6]))  # level 1 has no answers in either
    assert Path(report.plot_comparison(tmp_path, [a, b], ["held_out", "xstest"])).stat().st_size > 1000
