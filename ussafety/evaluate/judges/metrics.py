"""How good is a judge, and how much do two judges agree: small, dependency-free metrics.

Why here and not sklearn: the numbers in ``paper_outputs/judges`` must be exactly
reproducible from this repository with the pinned environment, and each is a few
lines. Cohen's kappa comes from :func:`ussafety.stats.cohens_kappa`, the project's one
statistics path (statsmodels' kappa; the same definition as sklearn's ``cohen_kappa_score``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ussafety.evaluate.judges.base import label_from_flags, prompt_type_of
from ussafety.stats import cohens_kappa, wilson_interval


@dataclass(frozen=True)
class Confusion:
    """2x2 counts of two binary raters (or truth vs prediction): ``n_ab`` with a, b in {1, 0}.

    ``n11``: both say harmful; ``n10``: only ``a``; ``n01``: only ``b``; ``n00``: neither.
    """

    n11: int
    n10: int
    n01: int
    n00: int

    @property
    def n(self) -> int:
        return self.n11 + self.n10 + self.n01 + self.n00

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def confusion(a: Sequence[bool], b: Sequence[bool]) -> Confusion:
    """Counts of each (a, b) combination over paired items."""
    if len(a) != len(b):
        raise ValueError(f"paired labels differ in length: {len(a)} vs {len(b)}")
    pairs = list(zip(map(bool, a), map(bool, b)))
    return Confusion(
        pairs.count((True, True)), pairs.count((True, False)), pairs.count((False, True)), pairs.count((False, False))
    )


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def proportion(count: int, n: int) -> tuple[float, float, float]:
    """``(count / n, low, high)``: a share with its Wilson 95% interval, all three nan when ``n`` is 0.

    One helper for the rates the evaluation and the judge reports print (ASR, label rates,
    gold-set accuracy), so they cannot drift apart in how the interval or an empty set is handled.
    """
    lo, hi = wilson_interval(count, n)
    return (count / n if n else math.nan), lo, hi


def binary_metrics(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float]:
    """Accuracy, and precision / recall / F1 on the positive (harmful) class.

    nan where a ratio has an empty denominator (e.g. precision when nothing was
    predicted harmful) rather than a made-up 0 or 1.
    """
    c = confusion(truth, pred)
    precision = _ratio(c.n11, c.n11 + c.n01)
    recall = _ratio(c.n11, c.n11 + c.n10)
    f1 = (
        _ratio(2 * precision * recall, precision + recall)
        if not (math.isnan(precision) or math.isnan(recall))
        else math.nan
    )
    return {
        "n": c.n,
        "n_positive": c.n11 + c.n10,
        "accuracy": _ratio(c.n11 + c.n00, c.n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "predicted_positive_rate": _ratio(c.n11 + c.n01, c.n),
    }


def calibration_table(proba: Sequence[float], truth: Sequence[bool], n_bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: equal-width bins of predicted P(harmful); per bin the count,
    mean prediction and observed harmful fraction (empty bins are kept with n = 0)."""
    if len(proba) != len(truth):
        raise ValueError("proba and truth differ in length")
    rows = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i, p in enumerate(proba) if lo <= p < hi or (b == n_bins - 1 and p == 1.0)]
        rows.append(
            {
                "bin_low": lo,
                "bin_high": hi,
                "n": len(idx),
                "mean_predicted": _ratio(sum(proba[i] for i in idx), len(idx)),
                "observed_harmful": _ratio(sum(bool(truth[i]) for i in idx), len(idx)),
            }
        )
    return rows


def expected_calibration_error(table: list[dict[str, float]]) -> float:
    """Count-weighted mean |observed - predicted| over the non-empty bins of a table."""
    total = sum(r["n"] for r in table)
    return _ratio(sum(r["n"] * abs(r["observed_harmful"] - r["mean_predicted"]) for r in table if r["n"]), total)


def brier_score(proba: Sequence[float], truth: Sequence[bool]) -> float:
    """Mean squared error of P(harmful) against the 0/1 label."""
    return _ratio(sum((p - float(bool(t))) ** 2 for p, t in zip(proba, truth)), len(proba))


def agreement(a: Sequence[bool | None], b: Sequence[bool | None]) -> dict[str, float | int]:
    """Agreement of two judges' harmful calls on the same responses.

    Items where either judge said None (could not judge) are left out and counted in
    ``n_undecided``. Returns the confusion counts, raw agreement, Cohen's kappa (nan
    when undefined, e.g. both judges constant and equal) and each judge's ASR.
    """
    if len(a) != len(b):
        raise ValueError(f"paired verdicts differ in length: {len(a)} vs {len(b)}")
    kept = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    xs, ys = [bool(x) for x, _ in kept], [bool(y) for _, y in kept]
    c = confusion(xs, ys)
    return {
        **c.as_dict(),
        "n": c.n,
        "n_undecided": len(a) - len(kept),
        "agreement": _ratio(c.n11 + c.n00, c.n),
        "kappa": cohens_kappa(xs, ys) if kept else math.nan,
        "asr_a": _ratio(c.n11 + c.n10, c.n),
        "asr_b": _ratio(c.n11 + c.n01, c.n),
    }


def row_label(row: dict[str, Any], judge: str) -> str | None:
    """The judge's three-way label of a generation row (``kind``, ``verdicts``): the stored
    label, or for verdicts stored before labels existed, the one their flags give
    (:func:`~ussafety.evaluate.judges.base.label_from_flags`)."""
    v = row["verdicts"][judge]
    return v.get("label") or label_from_flags(v.get("harmful"), v.get("refused"), prompt_type_of(row["kind"]))


def label_rate(rows: list[dict[str, Any]], judge: str, label: str) -> dict[str, Any]:
    """Share of ``rows`` the judge labels ``label``, with its Wilson 95% interval (the fields
    of :class:`ussafety.records.schema.Rate`)."""
    count = sum(1 for r in rows if row_label(r, judge) == label)
    rate, lo, hi = proportion(count, len(rows))
    return {"rate": rate, "ci_low": lo, "ci_high": hi, "n": len(rows), "count": count, "judge": judge}
