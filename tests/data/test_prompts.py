import json

import pytest

from raylign.config import PromptsConfig
from raylign.data.prompts import PromptSetError, load_prompts, read_prompts, split


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def row(i, **kw):
    base = {"id": f"u{i}", "prompt": f"question {i}?", "harmful_level": i % 4, "principle_index": 0,
            "method": "direct", "split": "train" if i % 3 else "test"}
    return {**base, **kw}


def test_embedded_prompt_set_loads():
    table = load_prompts(PromptsConfig())
    assert table.num_rows >= 400
    assert set(table["split"].to_pylist()) == {"train", "test"}
    assert set(table["harmful_level"].to_pylist()) == {0, 1, 2, 3}


def test_user_jsonl_loads_and_splits(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [row(i) for i in range(12)])
    table = load_prompts(PromptsConfig(path=path))
    assert table.num_rows == 12
    assert split(table, "test", None, 0).num_rows == 4
    sample = split(table, "train", 3, seed=1)
    assert sample.num_rows == 3 and sample.equals(split(table, "train", 3, seed=1))


def test_every_problem_is_reported_by_row(tmp_path):
    rows = [row(0), row(1, prompt="  "), row(2, prompt="x" * 50), row(3, id="u0"), row(4, harmful_level=7)]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(PromptSetError) as e:
        load_prompts(PromptsConfig(path=path, max_prompt_chars=40))
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "row 1 (id 'u1'): prompt is empty" in msg
    assert "row 2 (id 'u2'): prompt has 50 characters > prompts.max_prompt_chars 40" in msg
    assert "row 3 (id 'u0'): duplicate id" in msg
    assert "row 4 (id 'u4'): harmful_level must be 0-3" in msg


def test_missing_field_missing_file_and_format(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "q"}])
    with pytest.raises(PromptSetError, match=r"missing required field\(s\) \['harmful_level'\] for kind cares.*"
                                             r"map them with prompts.fields.harmful_level=<column>"):
        load_prompts(PromptsConfig(path=path))
    with pytest.raises(PromptSetError, match="does not exist"):
        load_prompts(PromptsConfig(path=str(tmp_path / "none.jsonl")))
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(PromptSetError, match="unsupported format '.txt'"):
        load_prompts(PromptsConfig(path=str(tmp_path / "p.txt")))


def test_unknown_split_names_the_ones_found(tmp_path):
    table = load_prompts(PromptsConfig(path=write_jsonl(tmp_path / "p.jsonl", [row(i) for i in range(3)])))
    with pytest.raises(PromptSetError, match=r"no rows with split 'heldout'; splits found: \['test', 'train'\]"):
        split(table, "heldout", None, 0)


def test_skip_mode_leaves_bad_rows_out_and_counts_them(tmp_path):
    rows = [row(0), row(1, prompt="  "), row(2, harmful_level="2"), row(3, id="u0"), row(4)]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "[1, 2]\nnot json\n\n")
    loaded = read_prompts(PromptsConfig(path=str(path), on_invalid="skip"))
    assert loaded.table["id"].to_pylist() == ["u0", "u4"]
    assert loaded.skipped == 5  # three bad rows and two unreadable lines; the blank one is no row
    assert loaded.problems == [
        "line 6: not a JSON object", "line 7: not JSON (Expecting value: line 1 column 1 (char 0))",
        "row 1 (id 'u1'): prompt is empty", "row 2 (id 'u2'): harmful_level must be 0-3 for safety scoring (got '2')",
        "row 3 (id 'u0'): duplicate id",
    ]
    with pytest.raises(PromptSetError, match=r"5 problem\(s\): line 6: .*or set prompts.on_invalid=skip"):
        read_prompts(PromptsConfig(path=str(path)))
