"""Wilson intervals, exact McNemar, Holm, Cohen's kappa and the bootstraps: hand values, the
libraries they wrap on known inputs, and the one bootstrap size."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap
from statsmodels.stats.inter_rater import cohens_kappa as sm_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from ussafety import stats
from ussafety.stats import (
    BOOT_SEED,
    N_BOOT,
    McNemarResult,
    cluster_bootstrap,
    cluster_mean,
    cohens_kappa,
    holm_correction,
    mcnemar_exact,
    paired_bootstrap_diff,
    pareto_front,
    wilson_interval,
)


@pytest.mark.parametrize(
    "successes,n,low,high",
    [
        (0, 10, 0.0, 0.27753),  # z = 1.959964: upper = z^2/(n+z^2)
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        # centre (0.05 + z^2/40) / (1 + z^2/20) = 0.122506, half 0.113625
        (1, 20, 0.00888, 0.23613),
    ],
)
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


def test_wilson_is_the_closed_form_and_statsmodels_on_a_grid() -> None:
    z = 1.959963984540054
    for n in (1, 7, 50, 150, 250):
        for k in range(0, n + 1, max(1, n // 9)):
            p = k / n
            centre = (p + z * z / (2 * n)) / (1 + z * z / n)
            half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
            lo, hi = wilson_interval(k, n)
            assert (lo, hi) == pytest.approx((max(0, centre - half), min(1, centre + half)), abs=1e-12)
            assert (lo, hi) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


def test_mcnemar_counts_and_pvalue() -> None:
    # 2x2 by hand: 3 both, 2 only a, 7 only b, 8 neither
    a = [True] * 3 + [True] * 2 + [False] * 7 + [False] * 8
    b = [True] * 3 + [False] * 2 + [True] * 7 + [False] * 8
    result = mcnemar_exact(a, b)
    assert (result.b01, result.b10) == (7, 2)
    assert result.p_value == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    # hand: 2 * P(X <= 2 | n=9) = 2 * (1 + 9 + 36) / 512
    assert result.p_value == pytest.approx(2 * 46 / 512)


def test_mcnemar_equals_scipy_binomial_test_on_random_tables() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        a, b = list(rng.random(n) < 0.3), list(rng.random(n) < 0.5)
        res = mcnemar_exact(a, b)
        disc = res.b01 + res.b10
        expected = binomtest(res.b01, disc, 0.5).pvalue if disc else 1.0
        assert res.p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_no_discordant_pairs() -> None:
    assert mcnemar_exact([True, False], [True, False]) == McNemarResult(0, 0, 1.0)
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_holm_known_example() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm_correction([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_correction([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_correction([0.02]) == [0.02]
    assert holm_correction([]) == []
    with pytest.raises(ValueError):
        holm_correction([1.2])
    with pytest.raises(ValueError):
        holm_correction([math.nan])


def test_holm_equals_statsmodels_on_random_pvalues() -> None:
    rng = np.random.default_rng(1)
    for m in (2, 3, 7, 20):
        p = list(rng.random(m) ** 3)
        assert holm_correction(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


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
    with pytest.raises(ValueError):
        cohens_kappa([], [])


def test_cohens_kappa_equals_the_formula_and_statsmodels_on_three_labels() -> None:
    rng = np.random.default_rng(2)
    labels = ["safe", "unsafe", None]  # any hashable, None included (an undecided judge)
    a = [labels[i] for i in rng.integers(0, 3, 80)]
    b = [x if rng.random() < 0.6 else labels[rng.integers(0, 3)] for x in a]
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum(a.count(k) * b.count(k) for k in labels) / n**2
    assert cohens_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))
    table = np.array([[sum(x == r and y == c for x, y in zip(a, b)) for c in labels] for r in labels], float)
    assert cohens_kappa(a, b) == pytest.approx(sm_kappa(table, return_results=False))


def test_bootstrap_contains_true_difference() -> None:
    rng = np.random.default_rng(123)
    n = 400
    a = (rng.random(n) < 0.6).astype(float)
    b = np.where(rng.random(n) < 0.8, a, (rng.random(n) < 0.4).astype(float))
    true_diff = float(a.mean() - b.mean())  # the sample is the population here
    mean, low, high, _ = paired_bootstrap_diff(a, b, seed=1)
    assert mean == pytest.approx(true_diff)
    assert low <= true_diff <= high and low < high


def test_bootstrap_detects_a_clear_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(7)
    base = rng.random(300)
    mean, low, _, p = paired_bootstrap_diff(base + 0.2, base)
    assert mean == pytest.approx(0.2) and p < 0.01 and low > 0.19
    mean0, low0, high0, p0 = paired_bootstrap_diff(base, base)
    assert (mean0, low0, high0, p0) == (0.0, 0.0, 0.0, 1.0)
    assert paired_bootstrap_diff([1.0], [0.0])[:3] == (1.0, 1.0, 1.0)  # one prompt: no spread
    noise = rng.normal(0, 1, 300)
    _, lo_n, hi_n, p_n = paired_bootstrap_diff(base + noise, base + noise[::-1])
    assert lo_n < 0 < hi_n and p_n > 0.05


def test_paired_bootstrap_is_scipys() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.binomial(1, 0.4, 150).astype(float), rng.binomial(1, 0.3, 150).astype(float)
    _, low, high, _ = paired_bootstrap_diff(a, b, seed=5)
    ref = bootstrap(
        (a - b,), np.mean, n_resamples=N_BOOT, method="percentile", vectorized=True, rng=np.random.default_rng(5)
    ).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))


def test_bootstrap_is_seeded_and_validates() -> None:
    a, b = [1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 0, 1]
    assert paired_bootstrap_diff(a, b, n_boot=300, seed=3) == paired_bootstrap_diff(a, b, n_boot=300, seed=3)
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1, 0], [1])
    with pytest.raises(ValueError):
        paired_bootstrap_diff([], [])


def test_cluster_bootstrap_covers_the_known_mean_and_reduces_to_the_prompt_bootstrap() -> None:
    rng = np.random.default_rng(1)
    seeds = [[rng.binomial(1, 0.3, size=400)] for _ in range(3)]
    res = cluster_bootstrap(seeds)
    assert res.estimate == pytest.approx(np.mean([s[0].mean() for s in seeds])) == cluster_mean(seeds)
    assert res.low < 0.3 < res.high and res.high - res.low < 0.1
    assert res.p_value < 0.001  # clearly non-zero
    zero = cluster_bootstrap([[rng.normal(0, 1, 300)]])
    assert zero.low < 0 < zero.high and zero.p_value > 0.01
    const = cluster_bootstrap([[np.full(50, 0.25)], [np.full(30, 0.75)]])
    assert const.estimate == pytest.approx(0.5)  # mean over seeds of per-seed means
    assert 0.25 <= const.low <= const.high <= 0.75  # only the seed draw varies
    two = cluster_bootstrap([[np.ones(10), np.full(10, 2.0)]])
    assert two.estimate == pytest.approx(3.0) and two.low == two.high == pytest.approx(3.0)
    with pytest.raises(ValueError):
        cluster_bootstrap([[np.ones(3)], []])


def test_cluster_bootstrap_with_one_seed_agrees_with_scipy() -> None:
    rng = np.random.default_rng(4)
    diff = rng.binomial(1, 0.35, 200) - rng.binomial(1, 0.3, 200)
    one = cluster_bootstrap([[diff]])
    ref = bootstrap(
        (diff,), np.mean, n_resamples=N_BOOT, method="percentile", vectorized=True, rng=np.random.default_rng(99)
    ).confidence_interval  # another stream: Monte-Carlo noise
    assert one.low == pytest.approx(ref.low, abs=0.01) and one.high == pytest.approx(ref.high, abs=0.01)


def test_cluster_bootstrap_numbers_are_those_of_the_committed_tables() -> None:
    # Values of the implementation that wrote paper_outputs/ before the statistics were
    # unified (same algorithm, same stream): a change here changes every committed interval.
    x = np.array([1] * 43 + [0] * 107, float)
    res = cluster_bootstrap([[x]])
    assert (res.estimate, res.low, res.high) == pytest.approx((43 / 150, 0.22, 0.36))
    y = np.array([1] * 49 + [0] * 101, float)
    diff = cluster_bootstrap([[x - y]])
    assert (diff.low, diff.high, diff.p_value) == pytest.approx((-11 / 150, -2 / 150, 0.023744063984004))


def test_one_bootstrap_size_and_seed() -> None:
    for fn in (paired_bootstrap_diff, cluster_bootstrap):
        params = inspect.signature(fn).parameters
        assert params["n_boot"].default == N_BOOT and params["seed"].default == BOOT_SEED
    assert f"{N_BOOT:,} resamples" in stats.CLUSTER_CI and "percentile" in stats.CLUSTER_CI


def test_pareto_front_of_hand_made_points() -> None:
    cost = [0.1, 0.2, 0.2, 0.5, 0.05, float("nan")]
    benefit = [0.5, 0.9, 0.8, 0.95, 0.4, 1.0]
    # (0.2, 0.8) is dominated by (0.2, 0.9); NaN is never on the front.
    assert pareto_front(cost, benefit) == [True, True, False, True, True, False]
    assert pareto_front([0.3, 0.3], [0.7, 0.7]) == [True, True]  # ties dominate nothing
