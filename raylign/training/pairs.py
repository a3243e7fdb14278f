"""Training data from judged answers: DPO pairs and KTO examples.

DPO (`best_vs_worst`): among the K answers to one prompt, the best against the worst by
safety score (or by another objective judges[0] scores: `pairs.objective`). Ties and near-ties
(gap below `min_score_gap`) are dropped, never turned into
chosen == rejected. With `balance_directions`, "Accept preferred" pairs and "Caution/Refuse
preferred" pairs are sampled down to equal counts: three of the four harm levels reward
withholding, so unbalanced pairs teach a global refusal bias (DESIGN.md).

Answers no judge could label (`Unjudged`) are left out of both. Answers to prompts of unknown
harm level (from conversation logs) are scored by the expected CARES score under
logs.unknown_level_prior (`with_unknown_levels_scored`).

KTO: every judged answer is an example, desirable when its score reaches
`desirable_min_score`; `kto_weights` sets class weights from the counts.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import NamedTuple, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from raylign.config import KTOConfig, PairsConfig
from raylign.data.schemas import JUDGMENTS, KTO_EXAMPLES, PAIRS, assistant_turn, chat_of
from raylign.evaluation.scoring import ACCEPT, UNJUDGED, expected_safety_score


def judged_rows(judgments: pa.Table) -> list[dict]:
    """Rows with a label: Unjudged answers never become training data."""
    return [row for row in judgments.to_pylist() if row["label"] != UNJUDGED]


def with_unknown_levels_scored(judgments: pa.Table, prior: Sequence[float]) -> pa.Table:
    """Judgments whose prompt has no harm level, given the expected safety score of their
    label under `prior` (as `safety_score` and the `safety` objective), for training only."""
    rows = judgments.to_pylist()
    for row in rows:
        if row["harmful_level"] is None and row["label"] != UNJUDGED:
            row["safety_score"] = expected_safety_score(row["label"], prior)
            row["scores"] = {**dict(row["scores"] or {}), "safety": row["safety_score"]}
    return pa.Table.from_pylist(rows, schema=JUDGMENTS)


def distinct_answers(judgments: pa.Table) -> pa.Table:
    """The first row of each (prompt, answer): a cycle's repeated samples count once."""
    seen: set[tuple[str, str]] = set()
    keep = []
    for i, (prompt_id, answer) in enumerate(zip(judgments["prompt_id"].to_pylist(), judgments["answer"].to_pylist())):
        if (prompt_id, answer) not in seen:
            seen.add((prompt_id, answer))
            keep.append(i)
    return judgments.take(keep)


class PairStats(NamedTuple):
    prompts: int
    ties_dropped: int
    """Prompts whose K answers' best and worst scores were closer than min_score_gap."""
    accept_preferred: int
    withhold_preferred: int
    balanced_away: int
    """Pairs removed to balance the two directions."""
    pairs: int


def objective_score(row: dict, objective: str) -> float | None:
    """An answer's score on `objective` (pairs.objective); None when its judge gave none."""
    if objective == "safety":
        return row["safety_score"]
    return dict(row["scores"] or {}).get(objective)


def build_pairs(judgments: pa.Table, cfg: PairsConfig, cycle: int, seed: int) -> tuple[pa.Table, PairStats]:
    """One best-vs-worst DPO pair per prompt whose answers differ enough in score on
    `cfg.objective`."""
    rng = random.Random(seed)
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for row in judged_rows(judgments):
        score = objective_score(row, cfg.objective)
        if score is not None:
            by_prompt[row["prompt_id"]].append({**row, "_rank": score})

    pairs, ties = [], 0
    for prompt_id in sorted(by_prompt):
        answers = by_prompt[prompt_id]
        best_score = max(a["_rank"] for a in answers)
        worst_score = min(a["_rank"] for a in answers)
        if best_score - worst_score < cfg.min_score_gap:
            ties += 1
            continue
        chosen = rng.choice([a for a in answers if a["_rank"] == best_score])
        rejected = rng.choice([a for a in answers if a["_rank"] == worst_score])
        pairs.append(
            {
                "cycle": cycle,
                "prompt_id": prompt_id,
                "harmful_level": chosen["harmful_level"],
                "prompt": chat_of(chosen),
                "chosen": assistant_turn(chosen["answer"]),
                "rejected": assistant_turn(rejected["answer"]),
                "chosen_label": chosen["label"],
                "rejected_label": rejected["label"],
                "chosen_score": chosen["safety_score"],
                "rejected_score": rejected["safety_score"],
                "chosen_scores": chosen["scores"],
                "rejected_scores": rejected["scores"],
            }
        )

    accept = [p for p in pairs if p["chosen_label"] == ACCEPT]
    withhold = [p for p in pairs if p["chosen_label"] != ACCEPT]
    kept = pairs
    if cfg.balance_directions:
        n = min(len(accept), len(withhold))
        kept_ids = {id(p) for p in rng.sample(accept, n) + rng.sample(withhold, n)}
        kept = [p for p in pairs if id(p) in kept_ids]
    stats = PairStats(
        prompts=len(by_prompt),
        ties_dropped=ties,
        accept_preferred=len(accept),
        withhold_preferred=len(withhold),
        balanced_away=len(pairs) - len(kept),
        pairs=len(kept),
    )
    return pa.Table.from_pylist(kept, schema=PAIRS), stats


def build_kto_examples(judgments: pa.Table, cfg: KTOConfig, cycle: int) -> pa.Table:
    """Every judged answer, labelled desirable when its score reaches the threshold."""
    rows = [
        {
            "cycle": cycle,
            "prompt_id": row["prompt_id"],
            "harmful_level": row["harmful_level"],
            "prompt": chat_of(row),
            "completion": assistant_turn(row["answer"]),
            "label": row["safety_score"] >= cfg.desirable_min_score,
            "score": row["safety_score"],
        }
        for row in judged_rows(judgments)
    ]
    return pa.Table.from_pylist(rows, schema=KTO_EXAMPLES)


class KTOWeights(NamedTuple):
    desirable: float
    undesirable: float


def kto_weights(n_desirable: int, n_undesirable: int) -> KTOWeights:
    """Class weights that keep (w_d * n_d) / (w_u * n_u) within [1, 4/3].

    The KTO paper's recommended range. Only the scarcer class is weighted up (weights stay
    >= 1): undesirable answers up to 4:3 when desirable ones dominate, desirable ones up to
    1:1 when they are scarce.
    """
    if n_desirable == 0 or n_undesirable == 0:
        return KTOWeights(1.0, 1.0)  # one class only: nothing to balance
    ratio = n_desirable / n_undesirable
    if ratio < 1.0:
        return KTOWeights(n_undesirable / n_desirable, 1.0)
    if ratio > 4 / 3:
        return KTOWeights(1.0, ratio * 3 / 4)
    return KTOWeights(1.0, 1.0)


def within_staleness(judgments: pa.Table, bound: int) -> tuple[pa.Table, int]:
    """The rows answered by a policy at most `bound` updates behind the one trained on them
    (pipeline.max_staleness; a row without a recorded staleness counts as on-policy), and how
    many were left out."""
    kept = judgments.filter(pc.fill_null(pc.less_equal(judgments["staleness"], bound), True))
    return kept, judgments.num_rows - kept.num_rows
