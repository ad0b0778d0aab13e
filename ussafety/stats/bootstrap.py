"""Bootstrap intervals and p-values: scipy's paired percentile bootstrap over prompts, and
the two-level (seed, prompt) cluster bootstrap that neither scipy nor statsmodels has."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap

from ussafety.stats.base import BOOT_SEED, CONFIDENCE, N_BOOT, check_confidence, check_paired


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
    check_paired(a, b)
    if len(a) == 0:
        raise ValueError("paired_bootstrap_diff needs at least one prompt")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    check_confidence(confidence)
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
    check_confidence(confidence)
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
