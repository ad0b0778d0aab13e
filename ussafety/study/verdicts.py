"""Decisive verdicts: every row of a claim is reproduced, refuted, equivalent or underpowered.

The rules (``docs/claims.md`` has a worked example), with alpha, margins and family from
``params/study/claims.yaml``:

- **reproduced**: the effect lies on the claimed side of 0, significant after Holm's
  correction over the claim's family (the claim's rows under one judge): exact McNemar p
  on the pooled (seed, prompt) pairs (claim 4's gain: the bootstrap p; ranks: Kendall's
  p) *and* the 95% two-level bootstrap interval excludes 0 on that side (so the seeds'
  spread, which the pooled test ignores, must agree);
- **refuted**: the same on the opposite side;
- **equivalent**: two one-sided tests show ``|effect| < margin``: both Tango score tests
  on the pooled pairs (Holm-corrected like the directional p-values, separately) *and*
  the ``1 - 2 alpha`` bootstrap interval inside ``(-margin, margin)`` (Schuirmann's
  interval form; for claim 4's gain, which is no 0/1 outcome, the interval form alone);
- **underpowered**: none of these; the row then carries its power calculation
  (:mod:`.power`): the pairs (prompts x seeds) needed to detect the observed effect or
  to show equivalence, at Holm's strictest level ``alpha / family size``.

A significant effect smaller than the margin is *reproduced* (or *refuted*) and flagged
``negligible``: the direction is established, its size is below what the study counts.
Non-inferiority claims (claim 5) are *reproduced* when the one-sided score test rejects
"worse by the margin or more" and the ``1 - 2 alpha`` interval lies above ``-margin``,
*refuted* when the opposite one-sided test rejects "better than ``-margin``" and the
interval lies below it. Rank claims have no equivalence verdict.
"""

from __future__ import annotations

import math
from typing import Any

from ussafety.stats import holm_correction
from ussafety.study.claims import ClaimsFile, ClaimSpec
from ussafety.study.power import binary_row_power, rank_row_power, scale_row_power

REPRODUCED, REFUTED, EQUIVALENT, UNDERPOWERED = "reproduced", "refuted", "equivalent", "underpowered"
ROW_VERDICTS = (REPRODUCED, REFUTED, EQUIVALENT, UNDERPOWERED)
MIXED, NOT_MEASURED = "mixed", "not measured"
"""Claim-level only: decided rows that disagree; a claim with no rows in the records."""


def _nan(*values: float) -> bool:
    return any(v is None or math.isnan(v) for v in values)


def _side(low: float, high: float) -> int:
    """+1 when an interval lies above 0, -1 below, 0 when it contains 0."""
    return 1 if low > 0 else -1 if high < 0 else 0


def equivalent(row: dict[str, Any], alpha: float) -> bool:
    """TOST: the ``1 - 2 alpha`` interval inside ``(-margin, margin)`` and, for rows with a
    score test, its Holm-corrected p below alpha."""
    low, high, margin = row.get("tost_low", math.nan), row.get("tost_high", math.nan), row.get("margin", math.nan)
    if _nan(low, high, margin) or not -margin < low <= high < margin:
        return False
    if row["test_kind"] == "bootstrap":  # interval form only
        return True
    return not _nan(row.get("p_tost_holm", math.nan)) and row["p_tost_holm"] < alpha


def directional_verdict(row: dict[str, Any], sign: int, alpha: float) -> str:
    """Reproduced / refuted / equivalent / underpowered for a claimed sign (+1 or -1)."""
    p = row.get("p_holm", math.nan)
    if row["test_kind"] == "rank":
        if _nan(p, row["estimate"]) or p >= alpha or row["estimate"] == 0:
            return UNDERPOWERED
        return REPRODUCED if sign * row["estimate"] > 0 else REFUTED
    if not _nan(p, row["ci_low"], row["ci_high"]) and p < alpha:
        side = _side(row["ci_low"], row["ci_high"])
        if side == sign:
            return REPRODUCED
        if side == -sign:
            return REFUTED
    return EQUIVALENT if equivalent(row, alpha) else UNDERPOWERED


def noninferiority_verdict(row: dict[str, Any], sign: int, alpha: float) -> str:
    """``sign`` = +1: higher is better, the bound is ``-margin``; -1: lower is better, ``+margin``."""
    low, high, margin = row["tost_low"], row["tost_high"], row["margin"]
    bound = -sign * margin
    p_ok, p_bad = row.get("p_ni_holm", math.nan), row.get("p_inf_holm", math.nan)
    if _nan(low, high):
        return UNDERPOWERED
    above, below = low > bound, high < bound  # the interval's side of the bound
    if not _nan(p_ok) and p_ok < alpha and (above if sign > 0 else below):
        return REPRODUCED
    if not _nan(p_bad) and p_bad < alpha and (below if sign > 0 else above):
        return REFUTED
    return UNDERPOWERED


def _holm(rows: list[dict[str, Any]], source: str, target: str) -> None:
    """``target`` = Holm over the rows' finite ``source`` p-values; nan where there is none."""
    idx = [i for i, r in enumerate(rows) if not _nan(r.get(source, math.nan))]
    for r in rows:
        r[target] = math.nan
    for i, p in zip(idx, holm_correction([rows[i][source] for i in idx])):
        rows[i][target] = p


def decide(rows: list[dict[str, Any]], claim: ClaimSpec, spec: ClaimsFile) -> None:
    """Give every row of one family (one claim under one judge) its corrected p-values,
    verdict and, when underpowered, its power calculation; in place."""
    sign, alpha = claim.sign, spec.alpha
    for r in rows:
        r["p_raw"] = r.get("p_mcnemar", r.get("p_bootstrap", r.get("p_rank", math.nan)))
        if claim.test == "noninferiority":
            lower_ok = sign > 0  # higher is better: "not below -margin" is the lower test
            p = r["p_tost_lower"] if lower_ok else r["p_tost_upper"]
            r["p_ni"], r["p_inf"] = p, 1.0 - p
    _holm(rows, "p_raw", "p_holm")
    _holm(rows, "p_tost", "p_tost_holm")
    if claim.test == "noninferiority":
        _holm(rows, "p_ni", "p_ni_holm")
        _holm(rows, "p_inf", "p_inf_holm")
    plan_alpha = alpha / max(1, len(rows))  # Holm's strictest step: what a row must clear
    for r in rows:
        if claim.test == "noninferiority":
            r["verdict"] = noninferiority_verdict(r, sign, alpha)
        else:
            r["verdict"] = directional_verdict(r, sign, alpha)
        r["negligible"] = r["verdict"] in (REPRODUCED, REFUTED) and r["test_kind"] != "rank" and equivalent(r, alpha)
        if r["verdict"] == UNDERPOWERED:
            if r["test_kind"] == "paired":
                unit = "items" if claim.metric == "task_score" else "prompts"
                r.update(binary_row_power(r, r["margin"], plan_alpha, spec.power, spec.design.seeds, unit))
            elif r["test_kind"] == "bootstrap":
                r.update(scale_row_power(r, plan_alpha, spec.power))
            else:
                r.update(rank_row_power(r, plan_alpha, spec.power))


def aggregate(verdicts: list[str], rule: str) -> tuple[str, str]:
    """A claim's verdict from its rows'.

    ``all`` (the claim is about every row): reproduced when every row is; refuted when
    any row is; equivalent when any row is (the claim fails there with no effect); else
    underpowered. ``majority``: reproduced when at least half the rows are and none is
    refuted; refuted when at least half are; equivalent when at least half are; else
    underpowered while any row is, and mixed when every row is decided but no rule holds.
    """
    if not verdicts:
        return NOT_MEASURED, "no rows: the records hold none of the conditions it compares"
    n = len(verdicts)
    r, f, e, u = (verdicts.count(v) for v in ROW_VERDICTS)
    why = f"{r} reproduced, {f} refuted, {e} equivalent, {u} underpowered of {n} row{'s' * (n != 1)}"
    if rule == "all":
        verdict = REPRODUCED if r == n else REFUTED if f else EQUIVALENT if e else UNDERPOWERED
    elif 2 * r >= n and f == 0:
        verdict = REPRODUCED
    elif 2 * f >= n:
        verdict = REFUTED
    elif 2 * e >= n:
        verdict = EQUIVALENT
    else:
        verdict = UNDERPOWERED if u else MIXED
    return verdict, why
