"""The one statistics path of the project: every interval, test and correction comes from here.

Every method is evaluated on the same prompt set, so comparisons are *paired*: per-prompt
outcomes of two methods are correlated, and paired tests (McNemar, paired bootstrap) have
far more power than comparing two independent proportions. Where scipy or statsmodels
already implement a procedure, this module only adapts its inputs and outputs (names,
validation, the empty and degenerate cases), so there is one implementation to trust:

- :func:`wilson_interval`: statsmodels ``proportion_confint(method="wilson")``; Wilson
  behaves at 0% and 100% ASR, where the normal-approximation interval collapses;
- :func:`mcnemar_exact`: statsmodels ``mcnemar(exact=True)`` (the binomial test of the
  discordant pairs);
- :func:`holm_correction`: statsmodels ``multipletests(method="holm")``;
- :func:`cohens_kappa`: statsmodels ``inter_rater.cohens_kappa`` on the raters' table;
- :func:`paired_bootstrap_diff`: scipy ``stats.bootstrap`` (paired, percentile);
- :func:`cluster_bootstrap`: the two-level (seed, prompt) bootstrap, which neither library
  has; with one seed it is the one-level percentile bootstrap over prompts.
- :func:`paired_tost` (two one-sided Tango score tests) and the power closed forms
  (:func:`mcnemar_sample_size`, :func:`mcnemar_mde`, :func:`tost_sample_size`), each cited where defined.

Every bootstrap draws :data:`N_BOOT` resamples from :data:`BOOT_SEED`: one size for every
table, so one condition never shows two intervals, and :data:`CLUSTER_CI` says so in the
captions.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom, bootstrap, kendalltau, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as _sm_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
"""Confidence level of every interval the study reports."""
N_BOOT = 4000
"""Bootstrap resamples of every interval and bootstrap p-value (Monte-Carlo error of a 2.5%
quantile about +-0.003 on a rate near 0.3 with 150 prompts)."""
BOOT_SEED = 0
"""Seed of every bootstrap, so a table regenerated from the same records is identical."""
CLUSTER_CI = (
    f"{CONFIDENCE:.0%} two-level percentile bootstrap (seeds, then prompts within each seed; "
    f"with one seed, over prompts), {N_BOOT:,} resamples, seed {BOOT_SEED}"
)
"""How the study's intervals are computed, for captions and the scorecard."""


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_paired(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; ``(nan, nan)`` when ``n == 0``."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    _check_confidence(confidence)
    if n == 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    return (max(0.0, float(low)), min(1.0, float(high)))


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and the exact two-sided p-value.

    ``b01``: prompts where ``a`` is False and ``b`` True; ``b10``: ``a`` True, ``b``
    False. Concordant prompts carry no information about the difference.
    """

    b01: int
    b10: int
    p_value: float


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test on per-prompt outcomes of two methods (aligned by prompt).

    Two-sided binomial test of ``b01`` out of ``b01 + b10`` discordant prompts against
    p = 0.5; p = 1.0 when there are no discordant prompts.
    """
    _check_paired(a, b)
    b01 = sum(1 for x, y in zip(a, b) if not x and y)
    b10 = sum(1 for x, y in zip(a, b) if x and not y)
    if b01 + b10 == 0:
        return McNemarResult(b01, b10, 1.0)
    # Concordant cells do not enter the exact test; zeros keep the table honest about that.
    p = mcnemar([[0, b01], [b10, 0]], exact=True).pvalue
    return McNemarResult(b01, b10, float(min(1.0, p)))


def holm_correction(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given, monotone, <= 1).

    Controls the family-wise error rate over the comparisons of one table (e.g. every
    method vs. the baseline) without Bonferroni's loss of power.
    """
    if any(not 0.0 <= p <= 1.0 for p in pvalues):  # also refuses nan
        raise ValueError("p-values must lie in [0, 1]")
    if len(pvalues) == 0:
        return []
    return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels (e.g. two judges on the same responses).

    ``(p_o - p_e) / (1 - p_e)`` with chance agreement from each rater's marginals (as
    sklearn's ``cohen_kappa_score``); nan when chance agreement is 1 (both raters constant
    and equal), where kappa is undefined. Labels may be any hashable values.
    """
    _check_paired(a, b)
    if len(a) == 0:
        raise ValueError("cohens_kappa needs at least one item")
    labels = {label: i for i, label in enumerate(dict.fromkeys([*a, *b]))}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b):
        table[labels[x], labels[y]] += 1
    n = table.sum()
    expected = float((table.sum(axis=1) * table.sum(axis=0)).sum() / (n * n))
    if math.isclose(expected, 1.0):
        return math.nan
    return float(_sm_kappa(table, return_results=False))


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate, percentile interval and the two-sided shift-method p-value."""

    estimate: float
    low: float
    high: float
    p_value: float


def _summary(replicates: np.ndarray, observed: float, confidence: float) -> BootstrapResult:
    """Percentile interval of ``replicates`` and the p-value of "statistic = 0".

    The p-value is the shift method's: the share of replicates at least as far from the
    observed value as the observed value is from 0, with the +1 correction so that it is
    never exactly 0.
    """
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(replicates - observed) >= abs(observed) - 1e-12)
    p_value = min(1.0, (extreme + 1) / (replicates.size + 1))
    return BootstrapResult(observed, float(low), float(high), float(p_value))


def paired_bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float, float]:
    """Mean of ``a - b`` over prompts with scipy's paired percentile bootstrap.

    Prompts are resampled with replacement, keeping each prompt's pair together.
    Returns ``(mean_diff, low, high, p_value)``, the p-value as in :func:`_summary`. A
    constant difference (or a single prompt) has no spread: its interval is the point.
    """
    _check_paired(a, b)
    if len(a) == 0:
        raise ValueError("paired_bootstrap_diff needs at least one prompt")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    _check_confidence(confidence)
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    observed = float(diff.mean())
    if np.ptp(diff) == 0:  # scipy needs two distinct values; every resample is the mean
        replicates = np.full(n_boot, observed)
    else:
        res = bootstrap(
            (diff,),
            np.mean,
            n_resamples=n_boot,
            vectorized=True,
            method="percentile",
            confidence_level=confidence,
            rng=np.random.default_rng(seed),
        )
        replicates = np.asarray(res.bootstrap_distribution, dtype=float)
    r = _summary(replicates, observed, confidence)
    return r.estimate, r.low, r.high, r.p_value


def _arrays(parts_by_seed: Sequence[Sequence[Sequence[float]]]) -> list[list[np.ndarray]]:
    if not parts_by_seed:
        raise ValueError("cluster_bootstrap needs at least one seed")
    n_parts = len(parts_by_seed[0])
    if n_parts == 0 or any(len(p) != n_parts for p in parts_by_seed):
        raise ValueError("every seed needs the same (non-zero) number of parts")
    arrays = [[np.asarray(v, dtype=float) for v in parts] for parts in parts_by_seed]
    if any(x.size == 0 for parts in arrays for x in parts):
        raise ValueError("cluster_bootstrap: a seed has a part with no values")
    return arrays


def cluster_mean(parts_by_seed: Sequence[Sequence[Sequence[float]]]) -> float:
    """The statistic of :func:`cluster_bootstrap` without its interval: the sum over parts
    of the mean over seeds of the per-seed prompt mean."""
    arrays = _arrays(parts_by_seed)
    return float(sum(np.mean([parts[k].mean() for parts in arrays]) for k in range(len(arrays[0]))))


def cluster_bootstrap(
    parts_by_seed: Sequence[Sequence[Sequence[float]]],
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    confidence: float = CONFIDENCE,
) -> BootstrapResult:
    """Two-level bootstrap over seeds and, within each seed, over prompts.

    ``parts_by_seed[s][k]`` holds per-prompt values of part ``k`` for seed ``s`` (for a
    paired comparison, per-prompt differences; the parts are independent prompt sets,
    e.g. harmful prompts and task items). The statistic is :func:`cluster_mean`. Each
    replicate draws seeds with replacement, then each drawn seed's prompts with
    replacement, part by part. With one seed this is the plain (paired) percentile
    bootstrap over prompts, the same distribution as :func:`paired_bootstrap_diff` draws
    from (tests/test_stats.py checks the two agree). The p-value is :func:`_summary`'s.
    """
    arrays = _arrays(parts_by_seed)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    _check_confidence(confidence)
    n_seeds, n_parts = len(arrays), len(arrays[0])
    observed = cluster_mean(parts_by_seed)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else np.zeros((n_boot, 1), dtype=int)
    stats = np.zeros(n_boot)
    for k in range(n_parts):
        part_sum = np.zeros(n_boot)
        for j in range(n_seeds):
            for s in range(n_seeds):
                rows = np.flatnonzero(picks[:, j] == s)
                if rows.size == 0:
                    continue
                values = arrays[s][k]
                idx = rng.integers(0, values.size, size=(rows.size, values.size))
                part_sum[rows] += values[idx].mean(axis=1)
        stats += part_sum / n_seeds
    return _summary(stats, observed, confidence)


def pareto_front(cost: Sequence[float], benefit: Sequence[float]) -> list[bool]:
    """Which points no other point dominates (lower-or-equal cost and higher-or-equal
    benefit, one of them strictly): e.g. cost = ASR, benefit = task score. NaN points are
    never on the front and never dominate."""
    _check_paired(cost, benefit)
    c = np.asarray(cost, dtype=float)
    b = np.asarray(benefit, dtype=float)
    ok = ~(np.isnan(c) | np.isnan(b))
    front = []
    for i in range(c.size):
        if not ok[i]:
            front.append(False)
            continue
        dominated = ok & (c <= c[i]) & (b >= b[i]) & ((c < c[i]) | (b > b[i]))
        front.append(not bool(dominated.any()))
    return front


# ----------------------------------------------------------------------------- equivalence, power
# Paired 0/1 outcomes: ``b01`` prompts where only the method has the outcome, ``b10`` only the
# reference (``mcnemar_exact(reference, method)``'s counts), ``n`` pairs; effect (b01 - b10)/n.


def paired_score_z(b01: int, b10: int, n: int, delta: float) -> float:
    """Score statistic of H0: effect = ``delta`` for paired proportions (Tango 1998, Stat Med
    17:891; Nam 1997; for equivalence Liu et al. 2002, Stat Med 21:231): ``(b01 - b10 - n
    delta) / sqrt(n (2 q + delta (1 - delta)))``, ``q`` the restricted MLE of the ``b10``
    cell under H0. Its variance is taken under H0, so unlike Wald's it stays usable with
    few or no discordant pairs, exactly where equivalence is claimed."""
    if min(b01, b10) < 0 or b01 + b10 > n or n < 1:
        raise ValueError(f"need 0 <= b01, b10 and b01 + b10 <= n >= 1, got {b01}, {b10}, {n}")
    if not -1.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (-1, 1), got {delta}")
    a, b, c = 2.0 * n, -b01 - b10 + (2.0 * n - b01 + b10) * delta, -b10 * delta * (1.0 - delta)
    q = (-b + math.sqrt(max(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)
    var = n * (2.0 * q + delta * (1.0 - delta))
    if var <= 0.0:  # delta = 0 and no discordant pair: no evidence either way
        return 0.0
    return float((b01 - b10 - n * delta) / math.sqrt(var))


@dataclass(frozen=True)
class TostResult:
    """Two one-sided score tests of ``|effect| < margin``: ``p_lower`` rejects effect <=
    -margin, ``p_upper`` rejects effect >= +margin; ``p_value`` is the larger (TOST)."""

    p_lower: float
    p_upper: float
    p_value: float


def paired_tost(b01: int, b10: int, n: int, margin: float) -> TostResult:
    """Schuirmann's two one-sided tests (1987) of equivalence within ``(-margin, +margin)``
    with :func:`paired_score_z` at ``-margin`` and ``+margin``; reject both at alpha (i.e.
    ``p_value < alpha``) to declare equivalence at level alpha."""
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must lie in (0, 1), got {margin}")
    p_lower = float(norm.sf(paired_score_z(b01, b10, n, -margin)))
    p_upper = float(norm.cdf(paired_score_z(b01, b10, n, margin)))
    return TostResult(p_lower, p_upper, max(p_lower, p_upper))


def mcnemar_sample_size(
    effect: float, discordance: float, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8
) -> float:
    """Pairs the two-sided McNemar test needs (Connor 1987): ``(z_{1-alpha/2} sqrt(psi) +
    z_power sqrt(psi - effect^2))^2 / effect^2``; inf at effect 0; not rounded."""
    if not 0.0 <= abs(effect) <= discordance <= 1.0:
        raise ValueError(f"need 0 <= |effect| <= discordance <= 1, got {effect}, {discordance}")
    if effect == 0.0:
        return math.inf
    za, zb = norm.isf(alpha / 2), norm.ppf(power)
    return float((za * math.sqrt(discordance) + zb * math.sqrt(discordance - effect**2)) ** 2 / effect**2)


def mcnemar_mde(n_pairs: float, discordance: float, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8) -> float:
    """Minimum detectable effect: the smallest ``|effect| <= discordance`` the two-sided McNemar
    test detects with ``power`` on ``n_pairs`` pairs (Connor's formula solved); else nan."""
    za, zb = norm.isf(alpha / 2), norm.ppf(power)

    def gap(d: float) -> float:
        return math.sqrt(n_pairs) * d - za * math.sqrt(discordance) - zb * math.sqrt(max(discordance - d * d, 0.0))

    if discordance <= 0.0 or gap(discordance) <= 0.0:
        return math.nan
    return float(brentq(gap, 0.0, discordance, xtol=1e-10))


def mcnemar_exact_power(n_pairs: int, effect: float, discordance: float, alpha: float = 1.0 - CONFIDENCE) -> float:
    """Power of :func:`mcnemar_exact` itself (p < alpha), summed exactly: k ~ Bin(n, psi)
    discordant pairs, b01 | k ~ Bin(k, (psi + effect) / (2 psi)); checks Connor's formula."""
    ks = np.arange(n_pairs + 1)
    weight = binom.pmf(ks, n_pairs, discordance)
    pi, total = (discordance + effect) / (2 * discordance), 0.0
    for k in ks[weight > 1e-12]:
        c = np.arange(k // 2 + 1)
        crit = c[2 * binom.cdf(c, k, 0.5) < alpha]
        if crit.size:
            total += weight[k] * (binom.cdf(crit[-1], k, pi) + binom.sf(k - crit[-1] - 1, k, pi))
    return float(total)


def tost_sample_size(
    discordance: float, margin: float, effect: float = 0.0, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8
) -> float:
    """Pairs the paired TOST needs to show ``|effect| < margin`` at true ``effect`` (Chow, Shao
    & Wang 2008, Sample Size Calculations in Clinical Research, sec. 3.2): ``(z_{1-alpha} +
    z)^2 (psi - effect^2) / (margin - |effect|)^2``, ``z = z_{1-(1-power)/2}`` at effect 0,
    else ``z_power``; inf when ``|effect| >= margin``."""
    if abs(effect) >= margin:
        return math.inf
    z = norm.ppf(1 - (1 - power) / 2) if effect == 0.0 else norm.ppf(power)
    return float((norm.isf(alpha) + z) ** 2 * (discordance - effect**2) / (margin - abs(effect)) ** 2)


def tost_resolution(n_pairs: float, discordance: float, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8) -> float:
    """The margin the paired TOST resolves with ``power`` at true effect 0 (solved for it)."""
    return float((norm.isf(alpha) + norm.ppf(1 - (1 - power) / 2)) * math.sqrt(discordance / n_pairs))


def design_effect(n_seeds: int, icc: float) -> float:
    """Kish's ``1 + (m - 1) rho``: ``m`` seeds on the same prompts, outcomes correlated ``rho``
    within a prompt, count as ``n / design_effect`` independent pairs (rho 1: repeats)."""
    if n_seeds < 1 or not 0.0 <= icc <= 1.0:
        raise ValueError(f"need n_seeds >= 1 and 0 <= icc <= 1, got {n_seeds}, {icc}")
    return 1.0 + (n_seeds - 1) * icc


def sample_scale(effect: float, se: float, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8) -> float:
    """By how much a sample must grow for a two-sided z-test of an estimate with standard
    error ``se`` to detect ``effect`` with ``power``: ``((z_{1-alpha/2} + z_power) se /
    effect)^2`` (se shrinks as 1/sqrt(n)); inf for a zero effect."""
    if effect == 0.0 or math.isnan(effect) or math.isnan(se):
        return math.inf
    return float(((norm.isf(alpha / 2) + norm.ppf(power)) * se / effect) ** 2)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b, two-sided p (scipy ``kendalltau``); ``(nan, 1.0)`` below 3 pairs."""
    _check_paired(x, y)
    if len(x) < 3:
        return (math.nan, 1.0)
    res = kendalltau(x, y)
    return (float(res.statistic), 1.0) if math.isnan(res.statistic) else (float(res.statistic), float(res.pvalue))


def kendall_sample_size(tau: float, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8) -> float:
    """Items a two-sided Kendall test needs to detect ``tau`` with ``power``: the smallest n with
    ``|tau| >= (z_{1-alpha/2} + z_power) sd_n``, ``sd_n^2 = 2 (2n + 5) / (9 n (n - 1))`` the
    null variance (Kendall 1938), i.e. ``9 n^2 - (9 + 4 k) n - 10 k >= 0``, ``k = (z / tau)^2``."""
    if tau == 0.0 or math.isnan(tau):
        return math.inf
    k = ((norm.isf(alpha / 2) + norm.ppf(power)) / tau) ** 2
    return float(max(3, math.ceil(((9 + 4 * k) + math.sqrt((9 + 4 * k) ** 2 + 360 * k)) / 18 - 1e-9)))
