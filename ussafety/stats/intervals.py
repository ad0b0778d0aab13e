"""Intervals and tests on per-prompt outcomes: Wilson, exact McNemar, Holm, Cohen's kappa,
Kendall's tau and the Pareto front (see :mod:`ussafety.stats` for why each is the one used)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as _sm_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from ussafety.stats.base import CONFIDENCE, check_confidence, check_paired


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; ``(nan, nan)`` when ``n == 0``."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    check_confidence(confidence)
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
    check_paired(a, b)
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
    check_paired(a, b)
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


def pareto_front(cost: Sequence[float], benefit: Sequence[float]) -> list[bool]:
    """Which points no other point dominates (lower-or-equal cost and higher-or-equal
    benefit, one of them strictly): e.g. cost = ASR, benefit = task score. NaN points are
    never on the front and never dominate."""
    check_paired(cost, benefit)
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


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b, two-sided p (scipy ``kendalltau``); ``(nan, 1.0)`` below 3 pairs."""
    check_paired(x, y)
    if len(x) < 3:
        return (math.nan, 1.0)
    res = kendalltau(x, y)
    return (float(res.statistic), 1.0) if math.isnan(res.statistic) else (float(res.statistic), float(res.pvalue))
