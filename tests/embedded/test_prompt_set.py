"""The bundled prompt set: the shipped file, counts, balance, and a held-out split never seen."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from raylign.embedded.prompt_set import (
    DATA_FILE,
    FIELDS,
    HARM_LEVELS,
    METHODS,
    PRINCIPLES,
    build_prompt_set,
    held_out_fillers,
    held_out_template,
    load_prompt_set,
    train_fillers,
)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return build_prompt_set()


def _split(rows, split):
    return [row for row in rows if row["split"] == split]


def _spelled(filler: str) -> str:
    return " ".join("-".join(word) for word in filler.split())


def test_shipped_file_is_the_generator_output(rows):
    shipped = load_prompt_set()
    assert shipped == rows, f"{DATA_FILE} is stale: run python -m raylign.embedded.prompt_set"
    first_line = DATA_FILE.read_text(encoding="utf-8").splitlines()[0]
    assert list(json.loads(first_line)) == list(FIELDS)


def test_generator_is_deterministic(rows):
    assert build_prompt_set(0) == rows
    assert build_prompt_set(1) != rows


def test_schema(rows):
    assert len(PRINCIPLES) == 8 and METHODS == ("direct", "indirect", "obfuscate", "role_play")
    for row in rows:
        assert list(row) == list(FIELDS)
        assert isinstance(row["prompt"], str) and row["prompt"].strip()
        assert row["harmful_level"] in HARM_LEVELS
        assert row["principle_index"] in range(8)
        assert row["method"] in METHODS
        assert row["split"] in ("train", "test")
    assert len({row["id"] for row in rows}) == len(rows)
    assert len({row["prompt"] for row in rows}) == len(rows)


def test_counts_and_balance(rows):
    assert len(rows) == 640
    test = _split(rows, "test")
    assert len(test) / len(rows) == pytest.approx(0.30)
    for split, per_cell in (("train", 14), ("test", 6)):
        cells = Counter((r["principle_index"], r["harmful_level"]) for r in _split(rows, split))
        assert set(cells) == {(p, level) for p in range(8) for level in HARM_LEVELS}
        assert set(cells.values()) == {per_cell}
        methods = Counter(r["method"] for r in _split(rows, split))
        assert set(methods) == set(METHODS)
        assert len(set(methods.values())) == 1, methods  # equal counts


def test_prompts_are_short(rows):
    assert max(len(row["prompt"].split()) for row in rows) <= 30


def test_no_prompt_in_both_splits(rows):
    train_texts = {row["prompt"].lower() for row in _split(rows, "train")}
    assert not train_texts & {row["prompt"].lower() for row in _split(rows, "test")}


def test_held_out_fillers_never_appear_in_train(rows):
    train_text = "\n".join(row["prompt"].lower() for row in _split(rows, "train"))
    for principle in range(8):
        assert not set(held_out_fillers(principle)) & set(train_fillers(principle))
        for filler in held_out_fillers(principle):
            assert filler.lower() not in train_text, filler
            assert _spelled(filler).lower() not in train_text, filler
    # ... and every held-out prompt is built from one of them.
    for row in _split(rows, "test"):
        fillers = held_out_fillers(row["principle_index"])
        assert any(f in row["prompt"] or _spelled(f) in row["prompt"] for f in fillers), row


def _template_pattern(template: str) -> re.Pattern:
    before, after = (re.escape(part[1:] if i == 0 else part) for i, part in
                     enumerate(template.split("{x}")))
    # The method may lower-case the first letter, so the first letter is left out.
    return re.compile(before + ".+?" + after)


def test_held_out_templates_never_appear_in_train(rows):
    for principle in range(8):
        for level in HARM_LEVELS:
            pattern = _template_pattern(held_out_template(principle, level))
            train_hits = [r["prompt"] for r in _split(rows, "train") if pattern.search(r["prompt"])]
            assert not train_hits, (principle, level, train_hits)
            cell = [r for r in _split(rows, "test")
                    if r["principle_index"] == principle and r["harmful_level"] == level]
            assert sum(bool(pattern.search(r["prompt"])) for r in cell) == 2
