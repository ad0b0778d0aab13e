"""TOST and power: hand values, an independent maximum-likelihood fit, the exact power of the
exact McNemar test, and the power table's shape and monotonicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import binom, norm

from ussafety import stats
from ussafety.study import power
from ussafety.study.claims import load_claims


def exact_mcnemar_power(n: int, effect: float, discordance: float, alpha: float) -> float:
    """Power of the *exact* two-sided McNemar test, summed exactly (no simulation): the number
    of discordant pairs k ~ Bin(n, psi); given k, b01 ~ Bin(k, (psi + d) / (2 psi)); the test
    rejects when 2 P(X <= min(b01, k - b01)) <= alpha under Bin(k, 1/2)."""
    ks = np.arange(n + 1)
    weight = binom.pmf(ks, n, discordance)
    pi = (discordance + effect) / (2 * discordance)
    total = 0.0
    for k in ks[weight > 1e-12]:
        c = np.arange(k // 2 + 1)
        ok = c[2 * binom.cdf(c, k, 0.5) <= alpha]
        if ok.size == 0:
            continue
        crit = int(ok.max())
        total += weight[k] * (binom.cdf(crit, k, pi) + binom.sf(k - crit - 1, k, pi))
    return float(total)


def rmle_z(b01: int, b10: int, n: int, delta: float) -> float:
    """The score statistic with the restricted MLE found numerically (not by the quadratic)."""
    rest = n - b01 - b10

    def nll(q: float) -> float:
        return -(b01 * math.log(q + delta) + (b10 * math.log(q) if b10 else 0.0) + rest * math.log(1 - 2 * q - delta))

    q = minimize_scalar(
        nll, bounds=(max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12), method="bounded", options={"xatol": 1e-13}
    ).x
    return (b01 - b10 - n * delta) / math.sqrt(n * (2 * q + delta * (1 - delta)))


@pytest.mark.parametrize(
    "b01,b10,n,delta",
    [
        (12, 4, 200, 0.05),
        (12, 4, 200, -0.05),
        (3, 10, 150, -0.05),
        (20, 25, 1000, 0.01),
        (5, 1, 50, -0.1),
        (0, 2, 150, 0.03),
    ],
)
def test_score_statistic_matches_a_numerical_restricted_mle(b01: int, b10: int, n: int, delta: float) -> None:
    assert stats.paired_score_z(b01, b10, n, delta) == pytest.approx(rmle_z(b01, b10, n, delta), abs=1e-5)


def test_tost_hand_values() -> None:
    # No discordant pair: q = 0, Z(+d) = -n d / sqrt(n d (1 - d)) = -sqrt(n d / (1 - d)).
    hand = norm.cdf(-math.sqrt(150 * 0.03 / 0.97))
    res = stats.paired_tost(0, 0, 150, 0.03)
    assert res.p_upper == pytest.approx(hand) and res.p_lower == pytest.approx(hand)
    assert res.p_value == pytest.approx(0.015624, abs=1e-5)

    # b01 = 12, b10 = 4, n = 200, margin 0.05: the quadratic by hand at -0.05 and +0.05.
    def hand_z(d: float) -> float:
        a, b, c = 400.0, -16 + (400 - 12 + 4) * d, -4 * d * (1 - d)
        q = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        return (12 - 4 - 200 * d) / math.sqrt(200 * (2 * q + d * (1 - d)))

    res = stats.paired_tost(12, 4, 200, 0.05)
    assert res.p_lower == pytest.approx(norm.sf(hand_z(-0.05)))
    assert res.p_upper == pytest.approx(norm.cdf(hand_z(0.05)))
    assert res.p_value == max(res.p_lower, res.p_upper) == pytest.approx(norm.cdf(hand_z(0.05)))
    # effect +0.04 against margin 0.05: not shown equivalent; against 0.2 it is.
    assert res.p_value > 0.05 and stats.paired_tost(12, 4, 200, 0.2).p_value < 0.001


def test_tost_is_symmetric_and_refuses_bad_input() -> None:
    a, b = stats.paired_tost(9, 3, 300, 0.04), stats.paired_tost(3, 9, 300, 0.04)
    assert (a.p_lower, a.p_upper) == pytest.approx((b.p_upper, b.p_lower))
    with pytest.raises(ValueError):
        stats.paired_tost(5, 5, 8, 0.03)
    with pytest.raises(ValueError):
        stats.paired_tost(1, 1, 10, 0.0)


def test_connor_sample_size_hand_value_and_inverse() -> None:
    # (1.959964 sqrt(0.1) + 0.841621 sqrt(0.1 - 0.0025))^2 / 0.0025 = 311.585
    assert stats.mcnemar_sample_size(0.05, 0.1) == pytest.approx(311.585, abs=0.01)
    assert stats.mcnemar_mde(311.585, 0.1) == pytest.approx(0.05, abs=1e-6)
    assert stats.mcnemar_sample_size(0.0, 0.1) == math.inf
    assert math.isnan(stats.mcnemar_mde(20, 0.05))  # one expected discordant pair: nothing detectable


@pytest.mark.parametrize("n,psi", [(3063, 0.10), (150, 0.20)])
def test_mde_has_about_the_exact_tests_power(n: int, psi: float) -> None:
    # Connor's MDE, given to the exact McNemar test, has a little under 80% power (the exact
    # test is conservative, most at small n): power.md reports the exact figure beside it.
    mde = stats.mcnemar_mde(n, psi)
    exact = stats.mcnemar_exact_power(n, mde, psi, 0.05)
    assert exact == pytest.approx(exact_mcnemar_power(n, mde, psi, 0.05), abs=0.01)  # '<' vs '<=' alpha
    assert 0.74 < exact < 0.81
    assert stats.mcnemar_exact_power(n, mde / 2, psi) < 0.4


def test_exact_power_agrees_with_a_simulation_of_the_test() -> None:
    # 2,000 studies of 150 prompts, psi = 0.2, effect +0.1, each tested with mcnemar_exact.
    rng = np.random.default_rng(3)
    n, psi, d = 150, 0.2, 0.1
    hits = 0
    for _ in range(2000):
        cells = rng.multinomial(n, [(psi + d) / 2, (psi - d) / 2, 1 - psi])
        a = [False] * cells[0] + [True] * cells[1] + [False] * cells[2]
        b = [True] * cells[0] + [False] * cells[1] + [False] * cells[2]
        hits += stats.mcnemar_exact(a, b).p_value < 0.05
    simulated = hits / 2000  # Monte-Carlo sd ~ 0.01
    assert simulated == pytest.approx(stats.mcnemar_exact_power(n, d, psi), abs=0.035)


def test_tost_sample_size_and_resolution_agree() -> None:
    n = stats.tost_sample_size(0.1, 0.03)
    assert stats.tost_resolution(n, 0.1) == pytest.approx(0.03)
    # (z_.95 + z_.90)^2 * 0.1 / 0.03^2
    assert n == pytest.approx((1.644854 + 1.281552) ** 2 * 0.1 / 0.0009, rel=1e-5)
    assert stats.tost_sample_size(0.1, 0.03, effect=0.03) == math.inf
    assert stats.tost_sample_size(0.1, 0.03, effect=0.01) > n


def test_kendall_sample_size_and_design_effect() -> None:
    tau = 0.5
    n = stats.kendall_sample_size(tau)
    sd = math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    sd_prev = math.sqrt(2 * (2 * (n - 1) + 5) / (9 * (n - 1) * (n - 2)))
    assert tau / sd >= 1.959964 + 0.841621 > tau / sd_prev
    assert stats.design_effect(3, 0.0) == 1.0 and stats.design_effect(3, 1.0) == 3.0
    assert stats.sample_scale(0.1, 0.1) == pytest.approx((1.959964 + 0.841621) ** 2)


def test_power_table_is_monotone_and_matches_the_formula() -> None:
    spec = load_claims()
    table = power.power_table(spec)
    big = table[(table.n_prompts == 1021) & (table.icc == 0.0)].set_index("discordance")
    small = table[table.n_prompts == 150].set_index("discordance")
    assert list(big.index) == list(power.DISCORDANCES)
    assert math.isnan(small.loc[0.05, "mde"])  # 7.5 expected discordant pairs: nothing below psi itself
    for col in ("mde", "mde_holm", "tost_margin", "tost_margin_holm"):
        assert big[col].is_monotonic_increasing and small[col].dropna().is_monotonic_increasing  # more discordance
        assert (big[col] < small[col].fillna(1.0)).all()  # more pairs
    assert (big.mde_holm > big.mde).all()  # stricter alpha
    for icc_lo, icc_hi in ((0.0, 0.5), (0.5, 1.0)):  # correlated seeds
        lo = table[(table.n_prompts == 1021) & (table.icc == icc_lo)].mde.to_numpy()
        hi = table[(table.n_prompts == 1021) & (table.icc == icc_hi)].mde.to_numpy()
        assert (hi > lo).all()
    assert big.loc[0.10, "mde"] == pytest.approx(stats.mcnemar_mde(3063, 0.10), abs=1e-4)
    assert big.loc[0.10, "mde"] == pytest.approx(0.0160, abs=2e-4)
    assert small.loc[0.10, "mde"] == pytest.approx(0.0718, abs=2e-4)
    assert big.loc[0.10, "mde_holm"] == pytest.approx(stats.mcnemar_mde(3063, 0.10, 0.05 / 18), abs=1e-4)
    assert big.exact_power_at_mde.between(0.75, 0.8).all()


def test_task_table_and_written_files(tmp_path) -> None:
    spec = load_claims()
    tasks = power.task_power_table(spec)
    sst2 = tasks[tasks.task == "sst2"].set_index("discordance")
    # one-sided at effect 0: (z_.95 + z_.80) sqrt(psi / n)
    assert sst2.loc[0.05, "ni_margin"] == pytest.approx((1.644854 + 0.841621) * math.sqrt(0.05 / 1992), abs=1e-4)
    paths = power.write_power_table(tmp_path, spec)
    md = (tmp_path / "power.md").read_text()
    assert "Connor 1987" in md and "alpha/18" in md and "| 1,021 | 3 | 0 | 3,063 | 10% | 0.016 |" in md
    assert {p.name for p in paths} == {"power.csv", "power.md"}


def test_row_power_of_an_underpowered_row() -> None:
    row = {"n_pairs": 150, "b01": 1, "b10": 3, "estimate": -2 / 150}
    out = power.binary_row_power(row, 0.03, 0.05, 0.8, 3)
    assert out["discordance"] == pytest.approx(4 / 150)
    assert out["need_pairs_effect"] == pytest.approx(stats.mcnemar_sample_size(2 / 150, 4 / 150))
    assert out["need_prompts_effect"] == math.ceil(out["need_pairs_effect"] / 3)
    assert out["need_pairs_tost"] == pytest.approx(stats.tost_sample_size(4 / 150, 0.03, -2 / 150))
    text = power.describe_power({**row, **out, "margin": 0.03})
    assert "detect -0.013" in text and "prompts x 3 seeds" in text and "show |d| < 0.03" in text
