"""Offline preference training (`raylign train`): DPO on a caregiver preference file in the
Empathy-by-Design layout, evaluated before and after on a reference test file, with the same
learner group and checkpoints as cycles; and its bad inputs, each one line before anything starts."""

import json
import math
import re

import pytest

from raylign.actors.buffer import PreferenceBuffer
from raylign.cli import main
from raylign.testing import tiny_embedding_model

# Supportive, plain answers preferred over prescriptive or technical ones (the paper's pairs).
PAIRS = [
    ("My mother has dementia and keeps refusing to eat. What can I do?",
     "That sounds exhausting, and you are doing your best. Offer small meals she likes, sit with her while she "
     "eats, and keep mealtimes calm. If she keeps refusing, tell her doctor.",
     "Anorexia in neurocognitive disorders is multifactorial. Administer high-calorie supplements and initiate "
     "a dysphagia assessment."),
    ("How do I stay patient when my dad asks the same question all day?",
     "It is hard, and feeling worn out is normal. Answer briefly and kindly, write the answer on a card he can "
     "keep, and take short breaks when you can.",
     "Perseveration is a symptom. Redirect the patient and do not engage repeatedly."),
    ("My wife was just diagnosed with Parkinson's. How do I help her?",
     "I'm sorry, that is a lot to take in. Go to appointments together, ask what she wants help with, and keep "
     "doing the things she enjoys. A local support group can help you both.",
     "Dopaminergic therapy is first line. Monitor for motor fluctuations and dyskinesia."),
    ("My father gets angry in the evenings. Is this normal?",
     "Yes, many people with dementia get upset late in the day, and it is not your fault. Keep evenings quiet, "
     "turn on lights early, and take a break if you need one.",
     "Sundowning. Reduce stimuli and consider pharmacological management."),
    ("How do I talk to my mum about moving into care?",
     "Choose a calm moment, tell her how much you care, and listen to her worries. Visit places together so "
     "she has a say.",
     "Initiate the placement discussion. Present the options and obtain consent."),
    ("I feel guilty taking time for myself while caring for my husband.",
     "Many carers feel this way. Rest is part of caring well, so short breaks help you both. Ask family or a "
     "respite service to step in.",
     "Caregiver burden is a risk factor. Schedule respite."),
]
QUESTIONS = [
    ("My aunt with dementia hides things and then says we stole them. What should I do?",
     "This is common and it is the illness, not her. Stay calm, help her look, and keep a spare of things she "
     "often hides."),
    ("How can I help my dad sleep better at night?",
     "Keep a regular routine, get some daylight and activity during the day, and avoid naps late in the "
     "afternoon. A warm drink and a quiet room can help."),
    ("My mother cries a lot since her stroke. How can I support her?",
     "That must be hard to see. Sit with her, let her talk, and tell her doctor: low mood after a stroke is "
     "common and can be treated."),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caregiving")
    pairs = folder / "caregiving_dpo.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS))
    test = folder / "caregiving_test.jsonl"
    test.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    texts = [t for row in PAIRS for t in row] + [t for row in QUESTIONS for t in row]
    return pairs, test, tiny_embedding_model(folder, texts)


SMALL = ["evaluation.suites.0.max_prompts=8", "evaluation.sampling.samples_per_prompt=2", "generator.batch_size=32"]


def test_train_on_a_preference_file_prints_the_reference_metrics_before_and_after(files, tmp_path, local_ray,
                                                                                    model_path, capsys):
    pairs, test, embedder = files
    run = tmp_path / "run"
    args = ["train", str(pairs), "--reference", str(test), "--embedding-model", embedder, "--epochs", "2",
            "--out", str(run), "--set", f"model.path={model_path}"]
    assert main(args + [x for s in SMALL for x in ("--set", s)]) == 0
    out = capsys.readouterr().out
    records = json.loads((run / "metrics.json").read_text())
    assert [r["cycle"] for r in records] == [0, 1]
    before, after = (r["suites"]["reference"] for r in records)
    for block in (before, after):
        assert block["prompts"] == len(QUESTIONS) and block["scored"] == 2 * len(QUESTIONS)
        assert all(math.isfinite(block[k]) for k in ("rouge_l", "bleu", "embedding_cosine", "grade", "words"))
    # The expert answers' grade is the same before and after; the answers are the policy's.
    assert before["reference_grade"] == after["reference_grade"]
    assert before["rouge_l"] != after["rouge_l"] or before["words"] != after["words"]
    # Printed: the reference suite's table, a row per cycle, with the figures metrics.json holds.
    table = out[out.index("suite reference (reference, 3 prompts)"):]
    for cycle, block in ((0, before), (1, after)):
        row = next(line for line in table.splitlines() if line.split()[:1] == [str(cycle)])
        assert f"{block['rouge_l']:.3f}" in row and f"{block['bleu']:.3f}" in row

    # Trained on the file alone, every pair, for the epochs asked: no training answers generated.
    training = records[1]["training"]  # with build_data's summary
    assert (training["algorithm"], training["examples"]) == ("dpo", len(PAIRS)) and training["steps"] >= 2
    assert training["source"] == "imports" and training["pairs"] == len(PAIRS)
    assert "generate_judge" not in records[1]["seconds"]
    buffer = PreferenceBuffer(str(run / "buffer"))
    assert set(buffer.read("rollouts", 1)["stage"].to_pylist()) == {"eval", "eval.reference"}
    assert buffer.read("pairs").num_rows == len(PAIRS)
    assert (run / "checkpoints").is_dir() and (run / training["adapter"]).is_dir()


def bad_files(folder):
    same = folder / "same.jsonl"
    same.write_text(json.dumps({"prompt": PAIRS[0][0], "chosen": PAIRS[0][1], "rejected": PAIRS[0][1]}) + "\n")
    empty = folder / "empty.jsonl"
    empty.write_text(json.dumps({"prompt": PAIRS[0][0], "chosen": "", "rejected": PAIRS[0][2]}) + "\n")
    columns = folder / "columns.jsonl"
    columns.write_text(json.dumps({"prompt": PAIRS[0][0], "chosen": PAIRS[0][1]}) + "\n")
    unpaired = folder / "unpaired.jsonl"
    unpaired.write_text(json.dumps({"prompt": PAIRS[0][0], "completion": PAIRS[0][1], "label": True}) + "\n")
    no_answer = folder / "questions.jsonl"
    no_answer.write_text("".join(json.dumps({"question": q}) + "\n" for q, _ in QUESTIONS))
    return same, empty, columns, unpaired, no_answer


def test_bad_training_and_reference_files_stop_with_one_line_each(files, tmp_path, capsys):
    pairs, test, _ = files
    same, empty, columns, unpaired, no_answer = bad_files(tmp_path)
    expected = [
        ([str(same)], r"same.jsonl: 1 problem\(s\): row 0: chosen equals rejected \(no preference\)$"),
        ([str(empty)], r"empty.jsonl: 1 problem\(s\): row 0: chosen missing or empty$"),
        ([str(columns)], r"columns.jsonl: needs the fields \['prompt', 'chosen', 'rejected'\] \(preference\)"),
        ([str(unpaired)], r"algorithm dpo trains on pairs, and buffer.imports has only unpaired examples"),
        ([str(pairs), "--reference", str(no_answer)],
         r"questions.jsonl: missing required field\(s\) \['reference'\] for kind reference; found \[.*'question'"),
        ([str(pairs), "--algorithm", "modpo"], r"every imported pair needs chosen_scores and rejected_scores"),
        ([str(pairs), "--epochs", "0"], r"^config learner.epochs: Input should be greater than or equal to 1"),
    ]
    for args, message in expected:
        assert main(["train", *args, "--out", str(tmp_path / "nothing")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("raylign: error: "), err
        assert re.search(message, err.removeprefix("raylign: error: ")), err
    assert not (tmp_path / "nothing").exists()  # nothing was started, nothing left behind
    # on_invalid skip: the good rows train, the bad ones are counted
    from raylign.config import load_config
    from raylign.data.exchange import import_file

    assert load_config(overrides=["buffer.on_invalid=skip"]).buffer.on_invalid == "skip"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(pairs.read_text() + same.read_text() + empty.read_text())
    imported = import_file(mixed, on_invalid="skip")
    assert (imported.data.num_rows, imported.skipped) == (len(PAIRS), 2)
