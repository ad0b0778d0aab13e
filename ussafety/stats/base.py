"""The constants every interval and test shares, and the argument checks they all make.

Why a module of its own: the intervals (:mod:`.intervals`), the bootstraps (:mod:`.bootstrap`) and
the power formulas (:mod:`.power`) must use one confidence level and one bootstrap size, so a
table never shows two intervals for one condition.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def check_confidence(confidence: float) -> None:
    """Refuse a confidence level outside (0, 1) before a library turns it into nonsense."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def check_paired(a: Sequence, b: Sequence) -> None:
    """Refuse paired samples of different lengths: a paired test silently truncated is wrong."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
