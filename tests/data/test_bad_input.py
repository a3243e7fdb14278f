"""Property-based: random malformed prompt files and configs give a clear one-line error or a
counted skip, never a traceback from deep inside."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raylign.config import ConfigError, PromptsConfig, load_config
from raylign.data.prompts import PromptSetError, read_prompts
from raylign.data.schemas import PROMPTS

FIELDS = ["id", "prompt", "harmful_level", "principle_index", "method", "split"]
MAX_CHARS = 50

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-300, 300), st.integers(), st.floats(), st.text(max_size=80),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
good_row = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=6), "prompt": st.text(min_size=1, max_size=70),
    "harmful_level": st.integers(0, 3), "principle_index": st.integers(0, 7),
    "method": st.sampled_from(["direct", "roleplay"]), "split": st.sampled_from(["train", "test"]),
})
bad_row = st.dictionaries(st.sampled_from(FIELDS + ["extra"]), anything, max_size=7)
# Mostly good rows with a field or two broken, plus rows of anything.
mixed_row = st.one_of(
    good_row,
    st.tuples(good_row, st.dictionaries(st.sampled_from(FIELDS), anything, min_size=1, max_size=2)).map(
        lambda t: {**t[0], **t[1]}),
    bad_row,
)
SETTINGS = settings(max_examples=int(__import__("os").environ.get("HYP_N", 60)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(path, rows: list[dict], garbage: list[str]) -> None:
    if path.suffix == ".jsonl":
        lines = [json.dumps(r) for r in rows] + garbage
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}) or ["id"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        try:
            pq.write_table(pa.Table.from_pylist(rows), path)
        except (pa.ArrowException, OverflowError):  # types Parquet cannot hold: as text, as a user's tool might
            pq.write_table(pa.Table.from_pylist([{k: None if v is None else str(v) for k, v in r.items()}
                                                 for r in rows]), path)


def is_valid(row: dict) -> bool:
    return (isinstance(row["prompt"], str) and 0 < len(row["prompt"]) <= MAX_CHARS and row["prompt"].strip() != ""
            and row["harmful_level"] in (0, 1, 2, 3) and isinstance(row["id"], str) and row["id"] != "")


@SETTINGS
@given(rows=st.lists(mixed_row, max_size=12), garbage=st.lists(st.text(max_size=20), max_size=3),
       mode=st.sampled_from(["error", "skip"]), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
def test_malformed_prompt_files_give_a_clear_error_or_a_counted_skip(tmp_path_factory, rows, garbage, mode, suffix):
    path = tmp_path_factory.mktemp("prompts") / f"p{suffix}"
    write(path, rows, garbage if suffix == ".jsonl" else [])
    try:
        loaded = read_prompts(PromptsConfig(path=str(path), on_invalid=mode, max_prompt_chars=MAX_CHARS))
    except PromptSetError as e:
        message = str(e)
        assert message.startswith(f"prompt file {path}") and "\n" not in message and len(message) < 3000
        if mode == "skip":  # only what no skip can fix stops a run that skips
            assert any(s in message for s in ("missing required field", "no usable prompt rows", "could not be read"))
        return
    table = loaded.table
    assert table.schema == PROMPTS and table.num_rows > 0
    assert all(is_valid(r) for r in table.to_pylist())
    assert len(set(table["id"].to_pylist())) == table.num_rows  # duplicates never both kept
    read = len(rows) + sum(1 for g in garbage for line in g.split("\n") if line.strip()) * (suffix == ".jsonl")
    if mode == "error":
        assert loaded.skipped == 0 and not loaded.problems
    assert table.num_rows + loaded.skipped <= read  # blank lines are not rows
    assert (loaded.skipped > 0) == bool(loaded.problems)


KEYS = ["cycles", "seed", "algorithm", "out", "learner.beta", "learner.world_size", "learner", "learner.lora.r",
        "generator.sampling.temperature", "generator.sampling", "generator.vllm.max_loras", "judges",
        "judges.0", "judges.0.kind", "judges.1.name", "judges.x.name", "judges.0.ensemble.members",
        "judges.0.min_replicas", "prompts.path", "prompts.on_invalid", "ray.num_cpus", "nonsense", "a..b", ""]
VALUES = st.one_of(
    st.sampled_from(["-1", "0", "2", "1e9", "null", "[rules, self]", "[]", "{a: 1}", "true", "''", "[1, 2]",
                     "{kind: ensemble}", "[{name: x, kind: llm}]", "self", "{", "]", "- a", ": :"]),
    st.text(max_size=15),
)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4), st.booleans())
def test_random_overrides_give_a_config_or_one_line_error(overrides, with_equals):
    assignments = [f"{k}={v}" if with_equals else f"{k}{v}" for k, v in overrides]
    try:
        load_config(overrides=assignments)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.dictionaries(st.sampled_from(KEYS[:12]), st.text(max_size=10) | st.integers(),
                                                       max_size=4).map(json.dumps)))
def test_random_config_files_give_a_config_or_one_line_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
