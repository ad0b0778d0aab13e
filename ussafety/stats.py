"""Statistics for comparing methods on the same prompts.

Every method is evaluated on the same prompt set, so comparisons are *paired*:
per-prompt outcomes of two methods are correlated, and paired tests (McNemar,
paired bootstrap) have far more power than comparing two independent proportions.
Intervals for a single rate use Wilson, which behaves at 0% and 100% ASR where the
normal-approximation interval collapses to a zero-width interval.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; ``(nan, nan)`` when ``n == 0``."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and the exact two-sided p-value.

    ``b01``: prompts where ``a`` is False and ``b`` True; ``b10``: ``a`` True, ``b``
    False. Concordant prompts carry no information about the difference.
    """

    b01: int
    b10: int
    p_value: float


def _check_paired(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test on per-prompt outcomes of two methods (aligned by prompt).

    Two-sided binomial test of ``b01`` out of ``b01 + b10`` discordant prompts
    against p = 0.5; p = 1.0 when there are no discordant prompts.
    """
    _check_paired(a, b)
    b01 = sum(1 for x, y in zip(a, b) if not x and y)
    b10 = sum(1 for x, y in zip(a, b) if x and not y)
    if b01 + b10 == 0:
        return McNemarResult(b01, b10, 1.0)
    p = binomtest(b01, b01 + b10, 0.5, alternative="two-sided").pvalue
    return McNemarResult(b01, b10, float(p))


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], n_boot: int = 10000,
                          seed: int = 0, confidence: float = 0.95
                          ) -> tuple[float, float, float, float]:
    """Mean of ``a - b`` over prompts with a paired percentile bootstrap.

    Prompts are resampled with replacement, keeping each prompt's pair together.
    Returns ``(mean_diff, low, high, p_value)``; the two-sided p-value tests
    "mean difference = 0" by the shift method: the share of bootstrap means at
    least as far from the observed mean as the observed mean is from 0, with the
    +1 correction so it is never exactly 0.
    """
    _check_paired(a, b)
    if len(a) == 0:
        raise ValueError("paired_bootstrap_diff needs at least one prompt")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    _z(confidence)
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = diff.size
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)          # bound memory: ~16 MB of indices per chunk
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(means - observed) >= abs(observed) - 1e-12)
    p_value = (extreme + 1) / (n_boot + 1)
    return observed, float(low), float(high), float(min(1.0, p_value))


def holm_correction(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given, monotone, <= 1).

    Controls the family-wise error rate over the comparisons of one table (e.g. every
    method vs. the baseline) without Bonferroni's loss of power.
    """
    m = len(pvalues)
    if any(not 0.0 <= p <= 1.0 for p in pvalues):
        raise ValueError("p-values must lie in [0, 1]")
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels (e.g. two judges on the same responses).

    ``(p_o - p_e) / (1 - p_e)`` with chance agreement from each rater's marginals, as
    sklearn's ``cohen_kappa_score``; nan when chance agreement is 1 (both raters
    constant and equal), where kappa is undefined.
    """
    _check_paired(a, b)
    n = len(a)
    if n == 0:
        raise ValueError("cohens_kappa needs at least one item")
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[k] * count_b.get(k, 0) for k in count_a) / (n * n)
    if expected == 1.0:
        return math.nan
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate, percentile interval and the two-sided shift-method p-value."""

    estimate: float
    low: float
    high: float
    p_value: float


def cluster_bootstrap(parts_by_seed: Sequence[Sequence[Sequence[float]]], n_boot: int = 10000,
                      seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Two-level bootstrap over seeds and, within each seed, over prompts.

    ``parts_by_seed[s][k]`` holds per-prompt values of part ``k`` for seed ``s`` (for a
    paired comparison, per-prompt differences; the parts are independent prompt sets,
    e.g. harmful prompts and task items). The statistic is the sum over parts of the
    mean over seeds of the per-seed prompt mean. Each replicate draws seeds with
    replacement, then each drawn seed's prompts with replacement, part by part. With one
    seed this is the plain (paired) percentile bootstrap over prompts. The p-value tests
    "statistic = 0" as :func:`paired_bootstrap_diff` does.
    """
    if not parts_by_seed:
        raise ValueError("cluster_bootstrap needs at least one seed")
    n_parts = len(parts_by_seed[0])
    if n_parts == 0 or any(len(p) != n_parts for p in parts_by_seed):
        raise ValueError("every seed needs the same (non-zero) number of parts")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    _z(confidence)
    arrays = [[np.asarray(v, dtype=float) for v in parts] for parts in parts_by_seed]
    if any(a.size == 0 for parts in arrays for a in parts):
        raise ValueError("cluster_bootstrap: a seed has a part with no values")
    n_seeds = len(arrays)
    observed = float(sum(np.mean([arrays[s][k].mean() for s in range(n_seeds)])
                         for k in range(n_parts)))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else \
        np.zeros((n_boot, 1), dtype=int)
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
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(stats - observed) >= abs(observed) - 1e-12)
    return BootstrapResult(observed, float(low), float(high),
                           float(min(1.0, (extreme + 1) / (n_boot + 1))))


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
