"""Equivalence and power: the paired score test and TOST, and the closed forms that size a
study (McNemar, TOST, Kendall) or say what it can resolve.

Paired 0/1 outcomes: ``b01`` prompts where only the method has the outcome, ``b10`` only the
reference (``mcnemar_exact(reference, method)``'s counts), ``n`` pairs; effect (b01 - b10)/n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom, norm

from ussafety.stats.base import CONFIDENCE


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


def kendall_sample_size(tau: float, alpha: float = 1.0 - CONFIDENCE, power: float = 0.8) -> float:
    """Items a two-sided Kendall test needs to detect ``tau`` with ``power``: the smallest n with
    ``|tau| >= (z_{1-alpha/2} + z_power) sd_n``, ``sd_n^2 = 2 (2n + 5) / (9 n (n - 1))`` the
    null variance (Kendall 1938), i.e. ``9 n^2 - (9 + 4 k) n - 10 k >= 0``, ``k = (z / tau)^2``."""
    if tau == 0.0 or math.isnan(tau):
        return math.inf
    k = ((norm.isf(alpha / 2) + norm.ppf(power)) / tau) ** 2
    return float(max(3, math.ceil(((9 + 4 * k) + math.sqrt((9 + 4 * k) ** 2 + 360 * k)) / 18 - 1e-9)))
