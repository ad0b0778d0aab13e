"""Strength selection: each method's safety-utility frontier on the validation split, and the
strength the pre-registered rule picks from it.

A method run at several strengths (EWC's lambda, DER's alpha, a merge's t...) traces a
curve from SFT-like (weak) to safe-but-useless (strong). The decisive study reports every
method at one strength, chosen *before* the test split is looked at, by the rule in
``params/study/claims.yaml`` (``strength``): among the strengths whose validation task
score is at least SFT's minus ``max_task_drop`` (and whose over-refusal is at most SFT's
plus ``max_over_refusal_rise``), the lowest validation ASR; strengths within
``tie_tolerance`` of it tie and the weaker one wins (less utility risk for the same
safety). When none qualifies, the highest task score (ties: weaker) is taken and flagged.
Records of any split other than the rule's are refused: selection must not see the test.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pandas as pd

from ussafety.stats import pareto_front
from ussafety.study.claim_rows import by_reference
from ussafety.study.claims import ClaimsFile, StrengthRule, load_claims
from ussafety.study.compare import condition_estimate
from ussafety.study.conditions import Condition, sweep_x

EPS = 1e-12
"""Float slack of the comparisons (rates are k / n)."""


class StrengthError(ValueError):
    """Strength selection asked of records it must not use (another split)."""


def strength_value(cond: Condition, param: str | None) -> float:
    """The condition's value of the strength parameter (as the study file spells it: a merge
    after SFT reads ``method.params.t``); nan for a method without one."""
    if param is None:
        return math.nan
    value = sweep_x(cond.config, f"method.params.{param}")
    return float(value) if value is not None else math.nan


def _weaker_first(points: list[dict[str, Any]], stronger: str | None) -> list[dict[str, Any]]:
    """Points ordered from the weakest strength (``stronger`` = ``higher``: smallest value)."""
    if stronger is None:
        return list(points)
    return sorted(points, key=lambda p: p["strength"] * (1 if stronger == "higher" else -1))


def select_strength(
    points: list[dict[str, Any]], sft: dict[str, float], rule: StrengthRule, stronger: str | None
) -> tuple[int, str]:
    """Index into ``points`` (dicts with ``strength``, ``asr``, ``task_score``,
    ``over_refusal``) of the strength the rule picks against ``sft``'s validation numbers,
    and why. Pure: the frontier table and the tests call it alike."""
    if not points:
        raise ValueError("select_strength needs at least one point")
    floor = sft["task_score"] - rule.max_task_drop
    ok = []
    for p in points:
        task_ok = not math.isnan(p["task_score"]) and p["task_score"] >= floor - EPS
        refusal_ok = (
            rule.max_over_refusal_rise is None
            or math.isnan(sft.get("over_refusal", math.nan))
            or math.isnan(p.get("over_refusal", math.nan))
            or p["over_refusal"] <= sft["over_refusal"] + rule.max_over_refusal_rise + EPS
        )
        p["task_ok"], p["refusal_ok"] = task_ok, refusal_ok
        if task_ok and refusal_ok and not math.isnan(p["asr"]):
            ok.append(p)
    if ok:
        best = min(p["asr"] for p in ok)
        tied = [p for p in ok if p["asr"] <= best + rule.tie_tolerance + EPS]
        pick = _weaker_first(tied, stronger)[0]
        why = "lowest validation ASR within the constraints" + (
            f" ({len(tied)} tied within {rule.tie_tolerance:g}: the weaker)" if len(tied) > 1 else ""
        )
    else:
        scored = [p for p in points if not math.isnan(p["task_score"])]
        if not scored:
            return 0, "no validation task score: first strength, unchecked"
        best = max(p["task_score"] for p in scored)
        tied = [p for p in scored if p["task_score"] >= best - rule.tie_tolerance - EPS]
        pick = _weaker_first(tied, stronger)[0]
        why = (
            f"no strength within {rule.max_task_drop:g} of SFT's task score (and the over-refusal bound): "
            "the highest task score, flagged"
        )
    return next(i for i, p in enumerate(points) if p is pick), why


def frontier_table(conditions: list[Condition], spec: ClaimsFile | None = None) -> pd.DataFrame:
    """One row per (setting, method, strength) of the validation ``conditions`` that have an
    SFT reference among them: the validation ASR, task score and over-refusal (mean over
    seeds, records' primary judge), SFT's, which constraints hold, whether the point is on
    the method's (ASR down, task up) front, and ``selected`` with ``reason``."""
    spec = spec or load_claims()
    rule = spec.strength
    wrong = sorted({str(c.config.get("eval", {}).get("split")) for c in conditions} - {rule.split})
    if wrong:
        raise StrengthError(
            f"strength selection reads the {rule.split} split only; got records of "
            f"split(s) {', '.join(wrong)} (the test split must not choose a strength)"
        )
    refs, groups = by_reference(conditions)
    rows = []
    for ref_key, conds in groups.items():
        ref = refs[ref_key]
        sft = {m: condition_estimate(ref, m) for m in ("asr", "task_score", "over_refusal")}
        by_method: dict[str, list[Condition]] = defaultdict(list)
        for c in conds:
            if c.labels["method"] in rule.methods:
                by_method[c.labels["method"]].append(c)
        for method, mine in sorted(by_method.items()):
            param = rule.methods[method].param
            stronger = rule.methods[method].stronger
            points: list[dict[str, Any]] = [
                {
                    "strength": strength_value(c, param),
                    "n_seeds": len(c.runs),
                    "condition": c.key,
                    **{m: condition_estimate(c, m) for m in ("asr", "task_score", "over_refusal")},
                }
                for c in mine
            ]
            points = _weaker_first(points, stronger)
            pick, why = select_strength(points, sft, rule, stronger)
            front = pareto_front([p["asr"] for p in points], [p["task_score"] for p in points])
            lab = ref.labels
            for i, p in enumerate(points):
                rows.append(
                    {
                        "model": lab["model"],
                        "task": lab["task"],
                        "scenario": lab["scenario"],
                        "poison_ratio": lab["poison_ratio"],
                        "method": method,
                        "param": param or "",
                        "stronger": stronger or "",
                        **p,
                        "sft_asr": sft["asr"],
                        "sft_task_score": sft["task_score"],
                        "sft_over_refusal": sft["over_refusal"],
                        "task_floor": sft["task_score"] - rule.max_task_drop,
                        "eligible": p["task_ok"] and p["refusal_ok"],
                        "pareto": front[i],
                        "selected": i == pick,
                        "reason": why if i == pick else "",
                    }
                )
    return pd.DataFrame(rows)


def selected_strengths(table: pd.DataFrame) -> pd.DataFrame:
    """The selected row of every (setting, method): what the test runs must use."""
    if table.empty:
        return table
    return table[table.selected].reset_index(drop=True)
