"""Wilson intervals, exact McNemar, paired bootstrap, Holm and Cohen's kappa."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from ussafety.stats import (
    McNemarResult,
    cohens_kappa,
    holm_correction,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_interval,
)


@pytest.mark.parametrize("successes,n,low,high", [
    (0, 10, 0.0, 0.27753),      # z = 1.959964: upper = z^2/(n+z^2)
    (5, 10, 0.23659, 0.76341),
    (10, 10, 0.72247, 1.0),
    # centre (0.05 + z^2/40) / (1 + z^2/20) = 0.122506, half 0.113625
    (1, 20, 0.00888, 0.23613),
])
def test_wilson_hand_values(successes: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(low, abs=1e-5) and hi == pytest.approx(high, abs=1e-5)


def test_wilson_closed_form_and_edge_cases() -> None:
    z = 1.959963984540054
    assert wilson_interval(0, 10)[1] == pytest.approx(z * z / (10 + z * z))
    lo90, hi90 = wilson_interval(5, 10, confidence=0.90)
    lo95, hi95 = wilson_interval(5, 10)
    assert lo95 < lo90 < 0.5 < hi90 < hi95
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.5)


def test_mcnemar_counts_and_pvalue() -> None:
    # 2x2 by hand: 3 both, 2 only a, 7 only b, 8 neither
    a = [True] * 3 + [True] * 2 + [False] * 7 + [False] * 8
    b = [True] * 3 + [False] * 2 + [True] * 7 + [False] * 8
    result = mcnemar_exact(a, b)
    assert (result.b01, result.b10) == (7, 2)
    assert result.p_value == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    # hand: 2 * P(X <= 2 | n=9) = 2 * (1 + 9 + 36) / 512
    assert result.p_value == pytest.approx(2 * 46 / 512)


def test_mcnemar_no_discordant_pairs() -> None:
    assert mcnemar_exact([True, False], [True, False]) == McNemarResult(0, 0, 1.0)
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_holm_known_example() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm_correction([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_correction([0.5, 0.6]) == pytest.approx([1.0, 1.0])   # capped at 1
    assert holm_correction([]) == []
    with pytest.raises(ValueError):
        holm_correction([1.2])


def test_bootstrap_contains_true_difference() -> None:
    rng = np.random.default_rng(123)
    n = 400
    a = (rng.random(n) < 0.6).astype(float)
    b = np.where(rng.random(n) < 0.8, a, (rng.random(n) < 0.4).astype(float))
    true_diff = float(a.mean() - b.mean())   # the sample is the population here
    mean, low, high, p = paired_bootstrap_diff(a, b, n_boot=2000, seed=1)
    assert mean == pytest.approx(true_diff)
    assert low <= true_diff <= high and low < high


def test_bootstrap_detects_a_clear_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(7)
    base = rng.random(300)
    mean, low, high, p = paired_bootstrap_diff(base + 0.2, base, n_boot=2000)
    assert mean == pytest.approx(0.2) and p < 0.01 and low > 0.19
    mean0, low0, high0, p0 = paired_bootstrap_diff(base, base, n_boot=500)
    assert (mean0, low0, high0, p0) == (0.0, 0.0, 0.0, 1.0)
    noise = rng.normal(0, 1, 300)
    _, lo_n, hi_n, p_n = paired_bootstrap_diff(base + noise, base + noise[::-1], n_boot=2000)
    assert lo_n < 0 < hi_n and p_n > 0.05


def test_bootstrap_is_seeded_and_validates() -> None:
    a, b = [1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 0, 1]
    assert paired_bootstrap_diff(a, b, n_boot=300, seed=3) == \
        paired_bootstrap_diff(a, b, n_boot=300, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1, 0], [1])
    with pytest.raises(ValueError):
        paired_bootstrap_diff([], [])


def test_cohens_kappa_hand_computation() -> None:
    a = [1, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    b = [1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
    # p_o = 8/10; a has six 1s, b has six 1s: p_e = .6*.6 + .4*.4 = 0.52
    assert cohens_kappa(a, b) == pytest.approx((0.8 - 0.52) / (1 - 0.52))
    assert cohens_kappa(["x", "y", "z"], ["x", "y", "z"]) == pytest.approx(1.0)
    assert cohens_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert math.isnan(cohens_kappa([1, 1], [1, 1]))
    with pytest.raises(ValueError):
        cohens_kappa([1], [1, 0])
