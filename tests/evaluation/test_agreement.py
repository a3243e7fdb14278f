import math

import pytest

from raylign.evaluation.agreement import agreement
from raylign.evaluation.scoring import ACCEPT, CAUTION, INVALID, REFUSE


def test_kappa_of_a_textbook_table():
    # 2x2 table [[20, 5], [10, 15]]: po = 0.7, pe = 0.5, kappa = 0.4.
    a = [ACCEPT] * 25 + [REFUSE] * 25
    b = [ACCEPT] * 20 + [REFUSE] * 5 + [ACCEPT] * 10 + [REFUSE] * 15
    result = agreement(a, b)
    assert result.observed == pytest.approx(0.7)
    assert result.kappa == pytest.approx(0.4)
    assert result.confusion[ACCEPT] == {ACCEPT: 20, CAUTION: 0, REFUSE: 5, INVALID: 0}
    assert result.confusion[REFUSE][ACCEPT] == 10 and result.n == 50


def test_perfect_chance_and_opposite_agreement():
    labels = [ACCEPT, CAUTION, REFUSE, ACCEPT]
    assert agreement(labels, labels).kappa == 1.0
    assert agreement([ACCEPT] * 4, [ACCEPT] * 4).kappa == 1.0  # one label for all, both judges
    assert agreement([ACCEPT, REFUSE] * 5, [REFUSE, ACCEPT] * 5).kappa == pytest.approx(-1.0)
    assert agreement([ACCEPT, ACCEPT, REFUSE, REFUSE], [ACCEPT, REFUSE, ACCEPT, REFUSE]).kappa == pytest.approx(0.0)


def test_empty_and_mismatched_inputs():
    assert math.isnan(agreement([], []).kappa)
    with pytest.raises(ValueError, match="different numbers"):
        agreement([ACCEPT], [])
