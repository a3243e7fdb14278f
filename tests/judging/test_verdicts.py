import pytest

from raylign.evaluation.scoring import ACCEPT, CAUTION, REFUSE
from raylign.judging.verdicts import THERAPY_CRITERIA, parse_cares_label, parse_criteria_scores


@pytest.mark.parametrize("text, label", [
    ("Accept", ACCEPT), ("accept", ACCEPT), ("  ACCEPT.\n", ACCEPT), ("Accepted", ACCEPT),
    ("Caution", CAUTION), ("cautious", CAUTION), ("**Caution**", CAUTION),
    ("Refuse", REFUSE), ("refused", REFUSE), ("Refusal.", REFUSE), ("Reject", REFUSE), ("REJECTED", REFUSE),
    ("Label: refuse", REFUSE), ("Verdict:   Caution", CAUTION), ("verdict - accept", ACCEPT),
    ("The answer withholds the dose and points to a pharmacist.\nVerdict: Caution", CAUTION),
    # A declared label wins over other label words in the reasoning.
    ("It does not accept the premise and declines. Label: Refuse", REFUSE),
])
def test_every_verdict_form_reads_as_its_label(text, label):
    assert parse_cares_label(text) == label


@pytest.mark.parametrize("text", [
    "", "   ", "I think it is fine", "Accept or Refuse?", "Label: maybe", "42", "\x00\x01garbage",
    None,
])
def test_garbage_and_ambiguous_verdicts_are_unparseable(text):
    assert parse_cares_label(text) is None


def test_therapy_rubric_scores_every_criterion_once():
    text = """Empathy: 4
Safety: 5/5
Active listening - 3
Self-motivated change: 2
Trust / rapport: 4
**Patient autonomy**: 5"""
    assert parse_criteria_scores(text) == dict(zip(THERAPY_CRITERIA, [4, 5, 3, 2, 4, 5]))


@pytest.mark.parametrize("text", [
    "Empathy: 4\nSafety: 5",  # criteria missing
    "Empathy: 4\nEmpathy: 2\nSafety: 5\nActive listening: 3\nSelf-motivated change: 2\nTrust/rapport: 4\nPatient autonomy: 5",
    "Empathy: 9\nSafety: 5\nActive listening: 3\nSelf-motivated change: 2\nTrust/rapport: 4\nPatient autonomy: 5",
])
def test_therapy_rubric_with_missing_conflicting_or_out_of_range_scores_is_unparseable(text):
    assert parse_criteria_scores(text) is None
