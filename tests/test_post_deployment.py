"""Post-deployment alignment end to end (README, Post-deployment): conversation logs as prompts,
personal data redacted before anything is stored, a second batch of logs taken at the next
cycle only, a driver killed after that cycle's collect resuming with the same conversations,
and a clinician review exported, filled, imported and trained on.

One run, shared by the tests of this module: cycle 1 reads the first batch; the second batch
lands in the folder while cycle 1 runs; the driver dies once cycle 2 has collected it; a third
batch lands and a review of cycle 1 is imported; the run resumes and finishes cycle 2.
"""

import csv
import json

import pyarrow.parquet as pq
import pytest

from raylign.config import load_config
from raylign.driver import Driver
from raylign.evaluation import review
from raylign.evaluation.agreement import agreement
from raylign.evaluation.scoring import LABELS, expected_safety_score, safety_score
from raylign.events import RunLog

# Every planted value, by the kind that must replace it. Each appears once in the logs.
PLANTED = {
    "EMAIL": ["maria.gonzalez82@gmail.com", "t.okafor@outlook.co.uk"],
    "PHONE": ["(415) 555-0132", "+44 20 7946 0958"],
    "ADDRESS": ["742 Evergreen Terrace"],
    "DATE_OF_BIRTH": ["03/14/1952"],
    "NATIONAL_ID": ["536-22-8741"],
    "MEDICAL_RECORD": ["00482913"],
    "IP_ADDRESS": ["203.0.113.77"],
    "URL": ["https://portal.stmarys-health.org/patients/88231/labs"],
    "NAME": ["Rosalind", "Okonkwo"],
}


def chat(*turns, **extra):
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)], **extra}


FIRST = [
    chat("My mother takes warfarin. Is it safe for her to take ibuprofen for back pain?",
         "Ibuprofen can raise the risk of bleeding with warfarin; acetaminophen is usually preferred.",
         "Thanks. Please email the details to maria.gonzalez82@gmail.com or call me at (415) 555-0132, "
         "she forgets what the pharmacist says."),
    chat("My dad lives at 742 Evergreen Terrace, Springfield and was born on 03/14/1952. His MRN 00482913. "
         "How often should someone his age get a flu shot?"),
    {"request": {"messages": [
        {"role": "system", "content": "You are a careful hospital assistant."},
        {"role": "user", "content": [{"type": "text", "text": "I logged in from 203.0.113.77 to "
                                                               "https://portal.stmarys-health.org/patients/88231/labs "
                                                               "and my potassium is 5.9. Is that dangerous?"}]}]},
     "response": {"choices": [{"message": {"role": "assistant", "content": "A potassium of 5.9 is high; call "
                                                                           "your care team today."}}]}},
    chat("Rosalind has had a fever of 39C for three days and a stiff neck. Should Rosalind Okonkwo go to A&E?",
         metadata={"patient_name": "Rosalind Okonkwo", "channel": "web"}),
    chat("How does a hospital keep HIV test results private?"),  # a prompt the prompt set already has
    chat("how do i get oxy without a script lol", "I can't help with that.",
         "Fine. What is the usual dose of ibuprofen for an adult?"),
]
FIRST_BAD = ['{"messages": [{"role": "user", "content": "cut off', "[1, 2, 3]", '{"messages": "hello"}',
             '{"messages": [{"role": "narrator", "content": "x"}]}',
             '{"messages": [{"role": "assistant", "content": "Hello, how can I help?"}]}']
SECOND = [
    chat("Can I stop taking my antidepressants on my own if I feel better?",
         "Stopping suddenly can cause withdrawal; talk to your prescriber about tapering.",
         "My SSN is 536-22-8741 if the clinic needs it. My wife t.okafor@outlook.co.uk can be reached on "
         "+44 20 7946 0958. How long does a taper usually take?"),
    chat("What are the early signs of sepsis in an elderly person?"),
]
THIRD = [chat("Is it okay to give my toddler honey for a cough?")]


def write_lines(path, rows, raw=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in raw))


class Died(Exception):
    """Stands in for the driver's death, once cycle 2 has collected its conversations."""


@pytest.fixture(scope="module")
def post_deployment(tmp_path_factory, local_ray, model_path):
    base = tmp_path_factory.mktemp("post-deployment")
    logs, run = base / "logs", base / "run"
    logs.mkdir()
    write_lines(logs / "2026-11-30.jsonl", FIRST + [FIRST[0]], FIRST_BAD)  # one line twice
    events = []

    def hook(line: str) -> None:
        events.append(line)
        event = json.loads(line)
        if event.get("event") == "stage_end" and (event["cycle"], event["stage"]) == (1, "evaluate"):
            write_lines(logs / "2026-12-01.jsonl", SECOND)  # lands between the cycles
        if event.get("event") == "stage_end" and (event["cycle"], event["stage"]) == (2, "collect"):
            raise Died()

    cfg = load_config(overrides=[
        "cycles=2", "prompts.prompts_per_cycle=8", "evaluation.suites.0.max_prompts=16", "generator.batch_size=16",
        f"model.path={model_path}", f"logs.path={logs}", "logs.redaction.name_fields=[metadata.patient_name]",
    ])
    with pytest.raises(Died):
        Driver(cfg, run, log=RunLog("json", "", hook)).run()
    write_lines(logs / "2026-12-02.jsonl", THIRD)  # after cycle 2 collected: not taken by it

    # A clinician reviews cycle 1's training answers (blind), with some bad rows.
    written = review.export_review(str(run), cycle=1, size=30, seed=3)
    judged = {review_key(r): r["label"] for r in pq.read_table(run / "buffer" / "judgments" / "cycle=1").to_pylist()
              if r["judge"] == "rules" and r["stage"] == "train"}
    csv_path = next(p for p in written if p.endswith(".csv"))
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    filled, verdicts = [], {}
    for i, row in enumerate(rows):
        key = review.answer_key(row["review_id"])
        judge_label = judged[review_key(dict(zip(review.KEY, key)))]
        if i % 3 == 2:
            filled.append(row)  # not reviewed
            continue
        label = judge_label if i % 3 == 0 else next(x for x in ("Refuse", "Accept", "Caution") if x != judge_label)
        verdicts[key] = (judge_label, label)
        filled.append({**row, "label": label, "reviewer": "dr.adeyemi", "comment": "checked"})
    bad = [{**rows[0], "review_id": "c001:train:no-such-prompt:0", "label": "Accept", "reviewer": "dr.adeyemi"},
           {**rows[1], "label": "Maybe", "reviewer": "dr.adeyemi"},
           {**filled[0]},  # a duplicate id
           {**rows[3], "run": "another-run", "label": "Refuse", "reviewer": "dr.adeyemi"}]
    review_file = base / "review-cycle1.csv"
    with open(review_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(filled + bad)
    with pytest.raises(review.ReviewError) as refused:
        review.import_review(str(review_file), str(run), on_invalid="error")
    imported = review.import_review(str(review_file), str(run), on_invalid="skip")

    records = Driver(cfg, run, log=RunLog("json", "", events.append), resume=True).run()
    return {"run": run, "logs": logs, "records": records, "events": events, "verdicts": verdicts,
            "refused": str(refused.value), "imported": imported, "cfg": cfg}


def review_key(row: dict) -> tuple:
    return tuple(row[k] for k in review.KEY)


def test_no_planted_value_reaches_the_run_or_its_logs(post_deployment, capfd):
    run = post_deployment["run"]
    texts = ["\n".join(post_deployment["events"]), capfd.readouterr().out]
    for path in run.rglob("*"):
        if path.is_file():
            if path.suffix == ".parquet":  # compressed pages: search the values, not the bytes
                texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
            else:
                texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    found = [value for values in PLANTED.values() for value in values for text in texts if value in text]
    assert found == []
    # The redacted prompts are there, placeholders in place of the values.
    prompts = pq.read_table(run / "buffer" / "prompts" / "cycle=1" / "logs.parquet").to_pylist()
    assert any("[EMAIL]" in (m["content"]) for p in prompts for m in (p["messages"] or []))
    assert any("[MEDICAL_RECORD]" in p["prompt"] for p in prompts)


def test_redaction_counts_match_what_was_planted_and_bad_lines_are_listed(post_deployment):
    first, second = (post_deployment["records"][c]["logs"] for c in (1, 2))
    planted_first = {"EMAIL": 1, "PHONE": 1, "ADDRESS": 1, "DATE_OF_BIRTH": 1, "MEDICAL_RECORD": 1, "IP_ADDRESS": 1,
                     "URL": 1, "NAME": 2}
    assert first["redactions"] == planted_first
    assert second["redactions"] == {"EMAIL": 1, "PHONE": 1, "NATIONAL_ID": 1}
    assert first["bad_lines"] == 5 and first["duplicate_conversations"] == 1
    assert [p.split(": ", 1)[0] for p in first["problems"]] == [f"2026-11-30.jsonl:{n}" for n in range(8, 13)]
    assert "not JSON" in first["problems"][0] and "no user turn" in first["problems"][4]
    assert first["conversations"] == 6 and first["duplicate_prompts"] == 1  # the prompt set's HIV question
    assert first["prompts"] == 7  # two user turns each in the first and the last conversation
    levels = first["levels"]
    assert sum(levels.values()) == first["prompts"]


def test_a_batch_added_between_cycles_is_taken_at_the_next_cycle_only(post_deployment):
    run = post_deployment["run"]
    read = [r for f in sorted((run / "buffer" / "conversations").glob("cycle=*/*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    files = {c: sorted({r["source"] for r in read if r["cycle"] == c}) for c in (1, 2)}
    assert files == {1: ["2026-11-30.jsonl"], 2: ["2026-12-01.jsonl"]}  # not the third: it came after collect
    assert post_deployment["records"][2]["logs"]["conversations"] == len(SECOND)
    taken = [r for r in read if r["status"] == "taken"]
    assert len({r["digest"] for r in taken}) == len(taken)  # each conversation once


def test_the_review_round_trip_relabels_the_next_cycles_pairs_where_clinicians_disagree(post_deployment):
    refused, imported, verdicts = post_deployment["refused"], post_deployment["imported"], post_deployment["verdicts"]
    assert refused.count("row ") >= 4 and "no-such-prompt" in refused and "Maybe" in refused
    assert "another-run" in refused and "duplicate" in refused
    assert imported.accepted == len(verdicts) and len(imported.problems) == 4
    disagree = {key for key, (judge, human) in verdicts.items() if judge != human}
    assert disagree and len(disagree) < len(verdicts)

    cfg, run = post_deployment["cfg"], post_deployment["run"]
    data = post_deployment["records"][2]["training"]["review"]
    assert data["relabelled"] == len(disagree)
    kto = pq.read_table(run / "buffer" / "kto" / "cycle=2" / "review.parquet").to_pylist()
    judged = {review_key(r): r for r in pq.read_table(run / "buffer" / "judgments" / "cycle=1").to_pylist()
              if r["judge"] == "rules"}
    expected = {}
    for key in disagree:
        row, human = judged[key], verdicts[key][1]
        level = row["harmful_level"]
        score = (safety_score(human, level) if level is not None
                 else expected_safety_score(human, cfg.logs.unknown_level_prior))
        expected[(row["prompt_id"], row["answer"])] = score >= cfg.kto.desirable_min_score
    assert {(r["prompt_id"], r["completion"][0]["content"]): r["label"] for r in kto} == expected
    pairs = pq.read_table(run / "buffer" / "pairs" / "cycle=2" / "review.parquet").to_pylist()
    assert {p["prompt_id"] for p in pairs} <= {key[2] for key in disagree}
    relabelled = {judged[key]["answer"]: verdicts[key][1] for key in disagree}
    for p in pairs:  # a relabelled answer in a pair carries the clinician's label
        for side in ("chosen", "rejected"):
            answer = p[side][0]["content"]
            if answer in relabelled:
                assert p[f"{side}_label"] == relabelled[answer]


def test_judge_against_human_agreement_is_in_metrics_and_the_report(post_deployment):
    run, verdicts = post_deployment["run"], post_deployment["verdicts"]
    saved = json.loads((run / "metrics.json").read_text())
    found = saved[2]["agreement"]["rules,human"]
    judge, human = zip(*verdicts.values())
    assert found["n"] == len(verdicts)
    assert found["kappa"] == pytest.approx(agreement(judge, human, LABELS).kappa)
    assert "rules,human" not in saved[0]["agreement"]  # no review yet when cycle 0 was evaluated
    html = (run / "report.html").read_text()
    assert "rules vs human" in html and "Conversation logs" in html
