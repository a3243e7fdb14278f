"""Agreement between two judges on the same answers: Cohen's kappa and the confusion matrix.

Reported every cycle when more than one judge labels the answers (say `self` and `llm`), so a
user sees whether self-evaluation can be trusted, as in the CARES paper's ablation.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

from raylign.evaluation.scoring import LABELS


class Agreement(NamedTuple):
    kappa: float
    """Cohen's kappa: 1 is full agreement, 0 what chance gives, below 0 worse than chance."""
    observed: float
    """Share of answers both judges gave the same label."""
    confusion: dict[str, dict[str, int]]
    """confusion[label of a][label of b] = count, over LABELS."""
    n: int


def agreement(a: Sequence[str], b: Sequence[str], labels: Sequence[str] = LABELS) -> Agreement:
    """Agreement of two judges' labels for the same answers, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"the two judges labelled different numbers of answers ({len(a)} and {len(b)})")
    n = len(a)
    pairs = Counter(zip(a, b))
    confusion = {x: {y: pairs[(x, y)] for y in labels} for x in labels}
    if n == 0:
        return Agreement(float("nan"), float("nan"), confusion, 0)
    observed = sum(pairs[(x, x)] for x in labels) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[x] * count_b[x] for x in labels) / (n * n)
    # Both judges gave one and the same label to everything: agreement is complete, not undefined.
    kappa = 1.0 if expected == 1 else (observed - expected) / (1 - expected)
    return Agreement(kappa, observed, confusion, n)
