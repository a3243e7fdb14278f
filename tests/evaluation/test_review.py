"""Clinician review without Ray: a run folder made by hand, a sample exported (stratified, seeded,
blind or not, CSV and JSONL alike), filled in programmatically with good and bad rows, imported
(one error, or the good rows stored as judgments of `human`), imported again, and the human
labels put in place of the judge's; and the `raylign review` command."""

import csv
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raylign.actors.buffer import PreferenceBuffer
from raylign.cli import main
from raylign.config import Config, dump_config
from raylign.data.schemas import JUDGMENTS
from raylign.evaluation import review
from raylign.evaluation.scoring import ACCEPT, CAUTION, INVALID, REFUSE, objective_scores
from raylign.training.pairs import distinct_answers

LEVELS = (0, 1, 2, 3, None)
LABELS3 = (ACCEPT, CAUTION, REFUSE)
TRICKY = 'Take "one" tablet,\nthen rest. Café, naïve – ok'


def judgment(prompt_id: str, level, sample: int, label: str, answer: str, judge: str = "rules", stage: str = "train",
             messages=None) -> dict:
    scores = objective_scores(label, level)
    return {"cycle": 1, "stage": stage, "prompt_id": prompt_id, "sample_index": sample,
            "prompt": f"Question {prompt_id}?", "harmful_level": level, "principle_index": 1, "method": "direct",
            "messages": messages, "answer": answer, "num_tokens": 9, "finish_reason": "stop", "policy_version": 0,
            "judge": judge, "judge_version": f"{judge}@1", "label": label, "verdict": "rule",
            "safety_score": scores.get("safety"), "scores": scores, "latency_s": 0.01}


def cycle_judgments() -> pa.Table:
    """Two prompts per harm level (0-3 and unknown), four samples each: three answers, one with
    each label, and the fourth a repeat of the first; a level-0 prompt with six more Accepts,
    so one stratum is larger; one multi-turn prompt; answers with a formula-like start, commas,
    quotes, a line break and non-ASCII text. And rows that are not for review: another judge's,
    and the held-out stage's."""
    rows = []
    for i, level in enumerate(LEVELS * 2):
        pid = f"p{i}"
        chat = [{"role": "user", "content": "I take warfarin."}, {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "Can I take ibuprofen?"}] if i == 1 else None
        answers = [(f"- answer {i}.{s}" if i == 2 else f"answer {i}.{s}" if i != 3 else f"{TRICKY} {s}")
                   for s in range(3)]
        for s in range(4):
            label = LABELS3[(i + s % 3) % 3]
            rows.append(judgment(pid, level, s, label, answers[s % 3], messages=chat))
    rows += [judgment("big", 0, s, ACCEPT, f"fine answer {s}") for s in range(6)]
    rows += [judgment("p0", 0, 9, INVALID, "....")]
    rows += [judgment("p0", 0, s, REFUSE, f"answer 0.{s}", judge="llm") for s in range(3)]
    rows += [judgment("e0", 2, s, REFUSE, f"held-out answer {s}", stage="eval") for s in range(3)]
    return pa.Table.from_pylist(rows, schema=JUDGMENTS)


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "ward-7"
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_config(Config()))
    PreferenceBuffer(str(folder / "buffer")).write("judgments", 1, "train-rules-00000", cycle_judgments())
    return folder


def buffer_of(run) -> PreferenceBuffer:
    return PreferenceBuffer(str(run / "buffer"))


def rules_rows(run) -> dict[tuple, dict]:
    rows = buffer_of(run).read("judgments", 1).to_pylist()
    return {review.answer_key(review.review_id(tuple(r[k] for k in review.KEY))): r
            for r in rows if r["judge"] == "rules" and r["stage"] == "train"}


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows: list[dict]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


# -- export ---------------------------------------------------------------------------------


def test_shares_give_every_stratum_one_and_the_rest_in_proportion():
    import random

    counts = {"a": 10, "b": 5, "c": 1}
    # 1 each, then 5 over what is left (9, 4, 0): 3.46 and 1.54 -> 3 and 1, b's larger remainder 1 more.
    assert review._shares(counts, 8, random.Random(0)) == {"a": 4, "b": 3, "c": 1}
    assert review._shares(counts, 40, random.Random(0)) == counts
    few = review._shares(counts, 2, random.Random(0))
    assert sorted(few.values()) == [0, 1, 1]


def test_export_covers_every_stratum_with_distinct_answers(run):
    csv_path, jsonl_path = review.export_review(str(run), cycle=1, size=20, seed=5)
    assert csv_path == str(run / "review" / "cycle_001-train.csv")
    assert jsonl_path == str(run / "review" / "cycle_001-train.jsonl")
    rows = [json.loads(line) for line in open(jsonl_path, encoding="utf-8")]
    judged = rules_rows(run)
    assert len(rows) == 20
    # 16 strata: (level, label) for 5 levels x 3 labels, and (0, Invalid).
    strata = {(r["harmful_level"], r["label"]) for r in judged.values()}
    picked = [judged[review.answer_key(r["review_id"])] for r in rows]
    assert len(strata) == 16 and {(r["harmful_level"], r["label"]) for r in picked} == strata
    assert len({(r["prompt_id"], r["answer"]) for r in picked}) == 20  # distinct answers
    # A repeated answer is reviewed as the row pair building keeps of it (its first sample).
    table = pa.Table.from_pylist(list(judged.values()), schema=JUDGMENTS)
    kept = {tuple(r[k] for k in review.KEY) for r in distinct_answers(table).to_pylist()}
    assert {tuple(r[k] for k in review.KEY) for r in picked} <= kept
    assert all(r["stage"] == "train" and r["judge"] == "rules" for r in picked)
    # 4 left after one each, over 21 left in the strata: 1.33 to level 0's Accepts (7 left), 0.19 to
    # each stratum with 1 left; the floors give 1, the largest remainders the 3 others: 1 + 2 more.
    assert sum(1 for r in picked if (r["harmful_level"], r["label"]) == (0, ACCEPT)) == 3
    assert {r["run"] for r in rows} == {"ward-7"}
    unknown = next(r for r in rows if r["harm_level"] is None)
    assert unknown["review_id"].startswith("c001:train:p")


def test_export_is_seeded_and_blind_by_default(run, tmp_path):
    first = review.export_review(str(run), 1, size=12, seed=3, out=str(tmp_path / "a"))
    again = review.export_review(str(run), 1, size=12, seed=3, out=str(tmp_path / "b"))
    other = review.export_review(str(run), 1, size=12, seed=4, out=str(tmp_path / "c"))
    assert first[0] == str(tmp_path / "a" / "cycle_001-train.csv")
    read = lambda p: open(p, "rb").read()  # noqa: E731
    assert [read(p) for p in first] == [read(p) for p in again]
    assert read(first[0]) != read(other[0])
    blind = read_csv(first[0])[0]
    assert list(blind) == ["review_id", "run", "cycle", "stage", "harm_level", "conversation", "answer", "label",
                           "score_helpfulness", "score_empathy", "comment", "reviewer"]
    shown = review.export_review(str(run), 1, size=12, seed=3, blind=False, out=str(tmp_path / "d"))
    judged = rules_rows(run)
    for row in read_csv(shown[0]):
        assert row["judge_label"] == judged[review.answer_key(row["review_id"])]["label"]
    assert [r["review_id"] for r in read_csv(shown[0])] == [r["review_id"] for r in read_csv(first[0])]


def test_csv_and_jsonl_hold_the_same_rows_and_the_csv_opens_in_a_spreadsheet(run):
    csv_path, jsonl_path = review.export_review(str(run), 1, size=100)  # every distinct answer
    raw = open(csv_path, "rb").read()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # UTF-8 with a BOM, RFC 4180 line ends
    from_csv, from_jsonl = read_csv(csv_path), [json.loads(line) for line in open(jsonl_path, encoding="utf-8")]
    assert len(from_csv) == len(from_jsonl) == 37
    for c, j in zip(from_csv, from_jsonl):
        assert list(c) == list(j)
        for name, value in j.items():
            expected = "" if value is None else str(value)
            if isinstance(value, str) and value.startswith("-"):
                expected = "'" + value  # shown as text, not a formula
            assert c[name] == expected, name
    answers = {r["answer"] for r in from_jsonl}
    assert f"{TRICKY} 0" in answers and "- answer 2.0" in answers
    chat = next(r for r in from_jsonl if r["review_id"].startswith("c001:train:p1:"))
    assert chat["conversation"] == "User: I take warfarin.\n\nAssistant: Noted.\n\nUser: Can I take ibuprofen?"
    single = next(r for r in from_jsonl if r["review_id"].startswith("c001:train:p0:"))
    assert single["conversation"] == "Question p0?" and single["harm_level"] == 0


def test_export_of_a_cycle_without_answers_says_so(run):
    with pytest.raises(review.ReviewError, match="no answers of cycle 2, stage 'train' judged by 'rules'"):
        review.export_review(str(run), 2)


# -- import ---------------------------------------------------------------------------------


def filled(run) -> tuple[list[dict], dict, list[dict]]:
    """The exported rows filled in: every third agrees with the judge, every third disagrees
    (a lower-case label, an empathy score), every third is left empty; then six bad rows.
    verdicts: {answer key: (the judge's label, the reviewer's, whether it has an empathy score)}."""
    rows = read_csv(review.export_review(str(run), 1, size=18, seed=1)[0])
    judged = rules_rows(run)
    good, verdicts = [], {}
    for i, row in enumerate(rows):
        judge_label = judged[review.answer_key(row["review_id"])]["label"]
        if i % 3 == 2:
            good.append(row)
            continue
        label = judge_label if i % 3 == 0 else next(x for x in LABELS3 if x != judge_label)
        verdicts[review.answer_key(row["review_id"])] = (judge_label, label, i % 3 == 1)
        extra = {"score_empathy": "0.8"} if i % 3 == 1 else {}
        good.append({**row, "label": label.lower() if i % 3 == 1 else label, "reviewer": "dr.ade",
                     "comment": f"checked {i}", **extra})
    bad = [{**rows[0], "review_id": "c001:train:no-such-prompt:0", "label": ACCEPT, "reviewer": "dr.ade"},
           {**rows[2], "label": "Maybe", "reviewer": "dr.ade"},
           {**good[0]},  # a duplicate id
           {**rows[5], "run": "another-run", "label": REFUSE, "reviewer": "dr.ade"},
           {**rows[8], "label": CAUTION, "reviewer": "dr.ade", "score_helpfulness": "1.7"},
           {**rows[11], "label": CAUTION}]  # no reviewer
    return good, verdicts, bad


def human_parts(run) -> list[str]:
    return [p for p in buffer_of(run).parts("judgments", 1) if p.startswith(review.PART_PREFIX)]


def test_bad_rows_make_one_error_and_nothing_is_stored(run, tmp_path):
    good, _, bad = filled(run)
    path = write_csv(tmp_path / "review.csv", good + bad)
    with pytest.raises(review.ReviewError) as refused:
        review.import_review(path, str(run), on_invalid="error")
    message = str(refused.value)
    first_bad = len(good) + 2  # the header is row 1
    assert message.startswith(f"review file {path}: 6 problem(s): row {first_bad}: ")
    for n, what in enumerate(["no-such-prompt", "'Maybe'", "duplicate of row 2", "another-run", "1.7"]):
        assert f"row {first_bad + n}: " in message and what in message
    assert "and 1 more" in message and "nothing imported" in message
    assert human_parts(run) == []
    # The default is the run's review.on_invalid: error.
    with pytest.raises(review.ReviewError):
        review.import_review(path, str(run))


def test_skip_stores_the_good_rows_as_judge_human(run, tmp_path):
    good, verdicts, bad = filled(run)
    path = write_csv(tmp_path / "review.csv", good + bad)
    result = review.import_review(path, str(run), on_invalid="skip")
    assert result.accepted == len(verdicts) == 12 and result.not_reviewed == 6 and result.cycles == (1,)
    first_bad = len(good) + 2
    assert [p.split(": ", 1)[0] for p in result.problems] == [f"row {first_bad + n}" for n in range(6)]
    assert "no reviewer" in result.problems[5] and "score_helpfulness '1.7'" in result.problems[4]
    assert result.part.startswith("review-0001-") and human_parts(run) == [result.part]

    human = review.human_judgments(buffer_of(run))
    judged = rules_rows(run)
    assert human.num_rows == 12 and set(human["judge"].to_pylist()) == {"human"}
    for row in human.to_pylist():
        key = tuple(row[k] for k in review.KEY)
        source = judged[key]
        assert row["label"] == verdicts[key][1] and row["judge_version"] == "dr.ade"
        assert row["verdict"].startswith("checked ") and row["latency_s"] == 0
        assert (row["answer"], row["prompt"], row["harmful_level"]) == (source["answer"], source["prompt"],
                                                                         source["harmful_level"])
        scores = dict(row["scores"])
        expected = objective_scores(row["label"], row["harmful_level"])
        if verdicts[key][2]:
            expected["empathy"] = pytest.approx(0.8)
        assert scores == expected
        assert row["safety_score"] == expected.get("safety")
        if row["harmful_level"] is None:
            assert set(scores) <= {"helpfulness", "empathy"} and row["safety_score"] is None


def test_importing_the_same_file_again_replaces_it_and_a_later_file_wins(run, tmp_path):
    good, verdicts, _ = filled(run)
    path = write_csv(tmp_path / "review.csv", good)
    first = review.import_review(path, str(run))
    again = review.import_review(path, str(run))
    assert again.part == first.part and human_parts(run) == [first.part]
    assert review.human_judgments(buffer_of(run)).num_rows == len(verdicts)
    # A second reviewer relabels one answer: the later import wins for it.
    relabelled = next(r for r in good if r["label"])
    new_label = next(x for x in LABELS3 if x != relabelled["label"].capitalize())
    later = write_csv(tmp_path / "second.csv", [{**relabelled, "label": new_label, "reviewer": "dr.bo"}])
    second = review.import_review(later, str(run))
    assert second.part.startswith("review-0002-") and human_parts(run) == [first.part, second.part]
    assert review.import_review(path, str(run)).part == first.part  # keeps its place in the order
    human = review.human_judgments(buffer_of(run), cycles=[1])
    assert human.num_rows == len(verdicts)
    row = next(r for r in human.to_pylist() if review.review_id(tuple(r[k] for k in review.KEY))
               == relabelled["review_id"])
    assert (row["label"], row["judge_version"]) == (new_label, "dr.bo")


def test_human_labels_replace_the_judges_exactly_where_they_disagree(run, tmp_path):
    good, verdicts, _ = filled(run)
    review.import_review(write_csv(tmp_path / "review.csv", good), str(run))
    rows = buffer_of(run).read("judgments", 1)
    judgments = rows.filter(pc.and_(pc.equal(rows["judge"], "rules"), pc.equal(rows["stage"], "train")))
    human = review.human_judgments(buffer_of(run))
    disagree = {key for key, (judge, person, _) in verdicts.items() if judge != person}
    assert review.disagreeing(judgments, human) == disagree and 6 <= len(disagree) < len(verdicts)

    relabelled, changed = review.with_human_labels(judgments, human)
    assert changed == len(disagree) and relabelled.schema == judgments.schema
    for before, after in zip(judgments.to_pylist(), relabelled.to_pylist()):
        key = tuple(before[k] for k in review.KEY)
        if key in verdicts:
            assert after["label"] == verdicts[key][1]
            assert dict(after["scores"]).get("empathy") == (pytest.approx(0.8) if verdicts[key][2] else None)
        else:
            assert after == before
    assert sum(a != b for a, b in zip(judgments["label"].to_pylist(), relabelled["label"].to_pylist())) == changed


def test_a_filled_jsonl_imports_and_unknown_score_columns_are_problems(run, tmp_path):
    jsonl = review.export_review(str(run), 1, size=6, seed=2)[1]
    rows = [json.loads(line) for line in open(jsonl, encoding="utf-8")]
    rows[0].update(label="Accept", reviewer="rn.cy", score_helpfulness=1, score_clarity=0.5)
    rows[1].update(label="refuse", reviewer="rn.cy", score_empathy=True)
    rows[2].update(label="invalid", reviewer="rn.cy", comment="garbled")  # no answer at all
    path = tmp_path / "review.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    with pytest.raises(review.ReviewError, match="3 problem"):
        review.import_review(str(path), str(run))
    result = review.import_review(str(path), str(run), on_invalid="skip")
    assert result.accepted == 2 and result.not_reviewed == 3
    assert result.problems[0] == "line 7: not a JSON object"
    assert result.problems[1].startswith("column score_clarity: no objective 'clarity'")
    assert result.problems[2].startswith("line 2: score_empathy True")
    stored = review.human_judgments(buffer_of(run)).to_pylist()
    assert [r["label"] for r in stored] == [ACCEPT, INVALID] and dict(stored[0]["scores"])["helpfulness"] == 1.0
    assert dict(stored[1]["scores"])["helpfulness"] == 0 and stored[1]["verdict"] == "garbled"


def test_a_file_of_another_run_with_the_same_ids_is_caught_by_its_answers(run, tmp_path):
    rows = read_csv(review.export_review(str(run), 1, size=4)[0])
    rows = [{**r, "label": ACCEPT, "reviewer": "x", "answer": "some other text"} for r in rows]
    result = review.import_review(write_csv(tmp_path / "r.csv", rows), str(run), on_invalid="skip")
    assert result.accepted == 0 and len(result.problems) == 4 and "another run" in result.problems[0]


def test_a_semicolon_csv_from_a_spreadsheet_imports(run, tmp_path):
    rows = read_csv(review.export_review(str(run), 1, size=3)[0])
    path = tmp_path / "excel.csv"
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=";")
        writer.writeheader()
        writer.writerows({**r, "label": "Caution", "reviewer": "dr.z", "score_empathy": "0.25"} for r in rows)
    assert review.import_review(str(path), str(run)).accepted == 3


# -- the command ----------------------------------------------------------------------------


def test_the_review_command(run, tmp_path, capsys):
    assert main(["review", "export", str(run), "--cycle", "1", "--size", "9", "--show-labels"]) == 0
    out = capsys.readouterr().out
    assert "9 answers of cycle 1 to review (the judge's labels shown)" in out and "cycle_001-train.csv" in out
    rows = read_csv(run / "review" / "cycle_001-train.csv")
    assert "judge_label" in rows[0]
    rows = [{**r, "label": r["judge_label"], "reviewer": "dr.ade"} for r in rows[:5]] + rows[5:] + \
           [{**rows[0], "label": "Maybe", "reviewer": "dr.ade"}]
    path = write_csv(tmp_path / "review.csv", rows)

    assert main(["review", "import", path, str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raylign: error: review file {path}: 1 problem(s): row 11: ")
    assert main(["review", "import", path, str(run), "--on-invalid", "skip"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 label(s) imported as judge human (cycle(s) 1, part review-0001-")
    assert "4 row(s) not reviewed" in out and "skipped 1 problem(s): row 11:" in out

    assert main(["review", "export", str(run), "--cycle", "7"]) == 2
    assert "no answers of cycle 7" in capsys.readouterr().err
    assert main(["review", "import", str(tmp_path / "missing.csv"), str(run)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["review", "export", str(tmp_path / "nowhere"), "--cycle", "1"]) == 2
    assert "not a raylign run folder" in capsys.readouterr().err
