"""Conversation logs read as prompts (raylign/data/logs.py): formats, context, deduplication,
bad lines, what was read before, without Ray."""

import json

import pytest

from raylign.config import LogsConfig
from raylign.data import logs
from raylign.data.redaction import Redactor


@pytest.fixture(scope="module")
def redactor():
    return Redactor(LogsConfig(path=".").redaction)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def turns(*texts):
    return [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]


def test_both_logged_formats_and_text_parts_give_the_same_turns():
    plain = {"messages": [{"role": "system", "content": "Be kind."}, *turns("Is 5.9 potassium high?", "Yes.")]}
    parts = [{"type": "text", "text": "Is 5.9 potassium high?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    logged = {"request": {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": parts}]},
              "response": {"choices": [{"message": {"role": "assistant", "content": "Yes."}}]}}
    assert logs.conversation_turns(plain) == logs.conversation_turns(logged) == turns("Is 5.9 potassium high?", "Yes.")


@pytest.mark.parametrize("record, problem", [
    ([1, 2], "not a JSON object"),
    ({"messages": "hi"}, "no messages list"),
    ({"messages": [{"role": "narrator", "content": "x"}]}, "turn 0: role must be one of"),
    ({"messages": [{"role": "user", "content": 7}]}, "turn 0: content must be text"),
    ({"messages": [{"role": "assistant", "content": "Hello"}]}, "no user turn"),
])
def test_a_malformed_conversation_names_its_problem(record, problem):
    with pytest.raises(ValueError, match=problem):
        logs.conversation_turns(record)


def test_each_user_turn_is_a_prompt_with_earlier_turns_as_context_within_the_limits():
    cfg = LogsConfig(path=".", max_context_turns=2, max_context_chars=60)
    chats, oversized = logs.prompt_chats(turns("First question?", "First answer.", "Second?", "Reply two.",
                                               "Third?", "Reply three.", "x" * 61), cfg)
    assert [c[-1]["content"] for c in chats] == ["First question?", "Second?", "Third?"]
    assert chats[0] == turns("First question?")
    assert chats[2] == turns("Second?", "Reply two.", "Third?")  # two turns of context at most
    assert oversized == 1
    tight = LogsConfig(path=".", max_context_chars=25)
    chats, _ = logs.prompt_chats(turns("A long first question?", "An answer.", "Next?"), tight)
    assert chats[1] == turns("Next?")  # the oldest turns go first, and a chat opens with the user


def test_collect_redacts_deduplicates_and_reads_each_line_once(tmp_path, redactor):
    folder = tmp_path / "logs"
    (folder / "nested").mkdir(parents=True)
    first = {"messages": turns("Email me at ana.ruiz@example.org about my statins.")}
    write(folder / "a.jsonl", [first, first, "{broken", {"messages": turns("How are vaccines tested?")}])
    write(folder / "nested" / "b.jsonl", [{"messages": turns("how are  VACCINES tested?")}])  # the same prompt
    (folder / "notes.txt").write_text("not a log\n")
    cfg = LogsConfig(path=str(folder))
    known: set[str] = set()
    batch = logs.collect(cfg, 1, set(), known, redactor)
    assert batch.prompts["prompt"].to_pylist() == ["Email me at [EMAIL] about my statins.", "How are vaccines tested?"]
    assert batch.prompts["harmful_level"].null_count == 2 and set(batch.prompts["split"].to_pylist()) == {"logs"}
    rows = batch.conversations.to_pylist()
    assert [(r["source"], r["line"], r["status"]) for r in rows] == [
        ("a.jsonl", 1, "taken"), ("a.jsonl", 2, "duplicate"), ("a.jsonl", 3, "bad"), ("a.jsonl", 4, "taken"),
        ("nested/b.jsonl", 1, "taken")]
    assert rows[2]["problem"].startswith("not JSON") and "broken" not in rows[2]["problem"]
    assert batch.summary["redactions"] == {"EMAIL": 1} and batch.summary["duplicate_prompts"] == 1
    assert batch.summary["problems"] == [f"a.jsonl:3: {rows[2]['problem']}"]

    # The next cycle reads only what was added since.
    seen = set(batch.conversations["digest"].to_pylist())
    write(folder / "c.jsonl", [{"messages": turns("Can I take ibuprofen with lisinopril?")}])
    later = logs.collect(cfg, 2, seen, known, redactor)
    assert later.prompts["prompt"].to_pylist() == ["Can I take ibuprofen with lisinopril?"]
    assert later.conversations["source"].to_pylist() == ["c.jsonl"]


def test_max_conversations_leaves_the_rest_for_later_cycles(tmp_path, redactor):
    path = tmp_path / "one.jsonl"
    write(path, [{"messages": turns(f"Question {i} about my blood pressure?")} for i in range(5)])
    cfg = LogsConfig(path=str(path), max_conversations=2)
    batch = logs.collect(cfg, 1, set(), set(), redactor)
    assert batch.conversations["line"].to_pylist() == [1, 2]
    again = logs.collect(cfg, 2, set(batch.conversations["digest"].to_pylist()), set(), redactor)
    assert again.conversations["line"].to_pylist() == [3, 4]


def test_a_conversation_that_cannot_be_redacted_is_counted_and_not_kept(tmp_path):
    class Failing:
        def redact(self, text, names=()):
            raise RuntimeError("analyzer down")

    path = tmp_path / "one.jsonl"
    write(path, [{"messages": turns("My number is 555-0100.")}])
    batch = logs.collect(LogsConfig(path=str(path)), 1, set(), set(), Failing())
    assert batch.prompts.num_rows == 0 and batch.summary["unredacted"] == 1
    assert batch.conversations["status"].to_pylist() == ["unredacted"]


def test_a_missing_log_path_is_one_clear_error(tmp_path):
    with pytest.raises(logs.LogError, match="does not exist"):
        logs.log_files(str(tmp_path / "nowhere"))
