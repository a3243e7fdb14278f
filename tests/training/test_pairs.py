import pyarrow as pa
import pytest

from raylign.config import KTOConfig, PairsConfig
from raylign.training.pairs import build_kto_examples, build_pairs, kto_weights, within_staleness
from raylign.data.schemas import JUDGMENTS
from raylign.evaluation.scoring import ACCEPT, CAUTION, INVALID, REFUSE, objective_scores, safety_score


def judged(rows):
    """rows: (prompt_id, harmful_level, answer, label)."""
    records = []
    for i, (pid, level, answer, label) in enumerate(rows):
        records.append(dict(
            cycle=1, stage="train", prompt_id=pid, sample_index=i, prompt=f"question {pid}",
            harmful_level=level, principle_index=0, method="direct", answer=answer, num_tokens=5,
            finish_reason="stop", policy_version=0, judge="rules", label=label, verdict="",
            safety_score=safety_score(label, level), scores=objective_scores(label, level), latency_s=0.0,
        ))
    return pa.Table.from_pylist(records, schema=JUDGMENTS)


TABLE = judged([
    # p1 harmless: accept best (1), refuse worst (0)
    ("p1", 0, "helpful", ACCEPT), ("p1", 0, "refuse", REFUSE), ("p1", 0, "helpful2", ACCEPT),
    # p2 level 3: refuse best, accept worst
    ("p2", 3, "refuse", REFUSE), ("p2", 3, "accept", ACCEPT),
    # p3 level 1: caution and refuse both score 1: a tie, dropped
    ("p3", 1, "caution", CAUTION), ("p3", 1, "refuse", REFUSE),
    # p4 level 2: refuse (1) vs caution (0.5): gap 0.5
    ("p4", 2, "refuse", REFUSE), ("p4", 2, "caution", CAUTION),
    # p5 level 3: all refuse: identical scores, dropped
    ("p5", 3, "a", REFUSE), ("p5", 3, "b", REFUSE),
    # p6 level 0: accept vs garbage
    ("p6", 0, "good answer", ACCEPT), ("p6", 0, "....", INVALID),
])


def test_best_vs_worst_drops_ties_and_never_pairs_an_answer_with_itself():
    pairs, stats = build_pairs(TABLE, PairsConfig(balance_directions=False), cycle=1, seed=0)
    rows = {r["prompt_id"]: r for r in pairs.to_pylist()}
    assert sorted(rows) == ["p1", "p2", "p4", "p6"]
    assert stats.ties_dropped == 2 and stats.pairs == 4 and stats.prompts == 6
    for r in rows.values():
        assert r["chosen"] != r["rejected"]
        assert r["chosen_score"] > r["rejected_score"]
        assert r["prompt"] == [{"role": "user", "content": f"question {r['prompt_id']}"}]
        assert r["chosen"][0]["role"] == "assistant"
    assert rows["p1"]["chosen"][0]["content"] in ("helpful", "helpful2")
    assert rows["p1"]["rejected"][0]["content"] == "refuse"
    assert (rows["p4"]["chosen_label"], rows["p4"]["rejected_label"]) == (REFUSE, CAUTION)


def test_min_score_gap_drops_near_ties():
    pairs, stats = build_pairs(TABLE, PairsConfig(min_score_gap=0.75, balance_directions=False), 1, 0)
    assert sorted(pairs["prompt_id"].to_pylist()) == ["p1", "p2", "p6"]
    assert stats.ties_dropped == 3


def test_balance_directions_equalises_accept_and_withhold():
    pairs, stats = build_pairs(TABLE, PairsConfig(), cycle=1, seed=0)
    assert (stats.accept_preferred, stats.withhold_preferred) == (2, 2)
    labels = pairs["chosen_label"].to_pylist()
    assert labels.count(ACCEPT) == 2 and len(labels) == 4
    three_to_one = judged([("a", 0, "x y", ACCEPT), ("a", 0, "r", REFUSE)]
                          + [(f"h{i}", 3, "r", REFUSE) for i in range(3)]
                          + [(f"h{i}", 3, "x y", ACCEPT) for i in range(3)])
    pairs, stats = build_pairs(three_to_one, PairsConfig(), cycle=1, seed=0)
    assert stats.pairs == 2 and stats.balanced_away == 2
    assert sorted(pairs["chosen_label"].to_pylist()) == [ACCEPT, REFUSE]


def test_pairs_are_seeded():
    a, _ = build_pairs(TABLE, PairsConfig(), 1, seed=3)
    b, _ = build_pairs(TABLE, PairsConfig(), 1, seed=3)
    assert a.equals(b)


def test_kto_labels_follow_threshold():
    examples = build_kto_examples(TABLE, KTOConfig(desirable_min_score=0.75), cycle=1)
    assert examples.num_rows == TABLE.num_rows
    by_answer = {(r["prompt_id"], r["completion"][0]["content"]): r["label"] for r in examples.to_pylist()}
    assert by_answer[("p1", "helpful")] is True
    assert by_answer[("p1", "refuse")] is False
    assert by_answer[("p4", "caution")] is False  # 0.5 < 0.75
    assert by_answer[("p3", "caution")] is True
    assert by_answer[("p6", "....")] is False


@pytest.mark.parametrize("n_d, n_u", [(10, 10), (12, 10), (13, 10), (30, 10), (5, 40), (1, 1000), (999, 1)])
def test_kto_weights_keep_weighted_ratio_between_1_and_4_3(n_d, n_u):
    w = kto_weights(n_d, n_u)
    ratio = (w.desirable * n_d) / (w.undesirable * n_u)
    assert 1 - 1e-9 <= ratio <= 4 / 3 + 1e-9
    assert w.desirable >= 1 and w.undesirable >= 1


def test_kto_weights_single_class():
    assert kto_weights(0, 5) == (1.0, 1.0)


def test_rows_answered_beyond_the_staleness_bound_make_no_pair_and_no_example():
    stale = TABLE.set_column(TABLE.schema.get_field_index("staleness"), "staleness",
                             pa.array([2 if pid == "p2" else 1 for pid in TABLE["prompt_id"].to_pylist()], pa.int32()))
    kept, dropped = within_staleness(stale, 1)
    assert dropped == 2 and "p2" not in kept["prompt_id"].to_pylist()
    assert "p2" not in build_pairs(kept, PairsConfig(balance_directions=False), cycle=1, seed=0)[0]["prompt_id"].to_pylist()
    assert "p2" not in build_kto_examples(kept, KTOConfig(), cycle=1)["prompt_id"].to_pylist()
    assert within_staleness(TABLE, 0) == (TABLE, 0)  # unrecorded (null) staleness: on-policy
