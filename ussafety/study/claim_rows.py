"""The rows of a claim: which conditions each pre-registered comparison pairs, under one judge.

A claim's ``comparison.kind`` (``params/study/claims.yaml``) names one of the builders below;
each finds its conditions with the study's own keys (:func:`~.conditions.setting_key`,
:func:`~.conditions.base_key`, :func:`~.compare.sft_reference`), never by run names, and
returns the rows' statistics from :mod:`.compare`. Verdicts are given in :mod:`.verdicts`.

ASR rows are computed under one judge: :class:`JudgedCondition` is a condition whose ASR
outcomes are that judge's verdicts (a record stores every judge's verdict on every answer).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from ussafety.stats import cluster_bootstrap, kendall_tau, pareto_front
from ussafety.study.claims import ClaimsFile, ClaimSpec
from ussafety.study.compare import (
    condition_estimate,
    equivalence_stats,
    paired_estimate,
    paired_outcomes,
    pairs_comparison,
    sft_reference,
)
from ussafety.study.conditions import MAIN_GRIDS, Condition, Outcomes, StudyData, base_key, setting_key

TASK_SCORER = "task scorer"
"""The 'judge' of task-score rows: items are scored, not judged, so one set of rows serves all."""


@dataclass
class JudgedCondition(Condition):
    """A condition whose ASR outcomes are ``judge``'s verdicts (other metrics unchanged)."""

    judge: str = ""
    _asr: dict[int, Outcomes] | None = field(default=None, repr=False)

    def per_seed(self, metric: str) -> dict[int, Outcomes]:
        if metric != "asr" or not self.judge:
            return super().per_seed(metric)
        if self._asr is None:
            self._asr = {}
            for s, run in self.runs.items():
                outcomes = run.record.outcomes(self.judge)
                if outcomes:
                    self._asr[s] = {k: float(v) for k, v in outcomes.items()}
        return self._asr


def judged(conditions: list[Condition], judge: str) -> list[Condition]:
    return [JudgedCondition(key=c.key, config=c.config, runs=c.runs, judge=judge) for c in conditions]


def judges_in(data: StudyData) -> set[str]:
    """Every judge with verdicts on the harmful prompts of at least one record."""
    return {j for run in data.runs for g in run.record.generations if g.kind == "harmful" for j in g.verdicts}


def setting_label(cond: Condition) -> str:
    lab = cond.labels
    p = "" if lab["scenario"] != "poisoned" else f", p = {lab['poison_ratio']:g}"
    return f"{lab['model']}, {lab['task']}, {lab['scenario']}{p}"


def _name(cond: Condition) -> str:
    lab = cond.labels
    return lab["method"] + (f" {lab['params']}" if lab["params"] else "")


def _scenario_ok(cond: Condition, scenario: str) -> bool:
    return scenario == "any" or cond.labels["scenario"] == scenario


def by_reference(conditions: list[Condition]) -> tuple[dict[str, Condition], dict[str, list[Condition]]]:
    """Each fine-tuned condition's SFT reference: ``{key: SFT}`` and ``{SFT key: [others]}``."""
    refs: dict[str, Condition] = {}
    groups: dict[str, list[Condition]] = defaultdict(list)
    for cond in conditions:
        ref = sft_reference(cond, conditions)
        if ref is not None and cond is not ref:
            refs[ref.key] = ref
            groups[ref.key].append(cond)
    return refs, groups


def binary_row(
    a: Condition,
    b: Condition,
    metric: str,
    margin: float,
    alpha: float,
    comparison: str,
    reuse_single_reference: bool = False,
) -> dict[str, Any] | None:
    """``a - b`` on a 0/1 metric: :func:`.compare.pairs_comparison` and
    :func:`.compare.equivalence_stats`; None when the two share no (seed, prompt) pair."""
    pairs = paired_outcomes(a, b, metric, reuse_single_reference)
    if not pairs:
        return None
    return {
        "setting": setting_label(a),
        "comparison": comparison,
        "test_kind": "paired",
        "n_prompts": max(len(x) for x, _ in pairs),
        **pairs_comparison(pairs),
        **equivalence_stats(pairs, margin, alpha),
    }


def _pair_rows(
    pairs: list[tuple[Condition, Condition, str]], claim: ClaimSpec, spec: ClaimsFile, reuse: bool = False
) -> list[dict[str, Any]]:
    metric = claim.metric
    rows = [binary_row(a, b, metric, spec.margin(metric), spec.alpha, what, reuse) for a, b, what in pairs]
    return [r for r in rows if r is not None]


def benign_vs_base(every: list[Condition], main: list[Condition], claim: ClaimSpec) -> list[tuple]:
    bases = [c for c in every if c.labels["scenario"] == "base"]
    out = []
    for c in every:
        if c.is_sft and c.labels["scenario"] == "benign":
            key = base_key(c.config, c.stamps)
            base = next((b for b in bases if base_key(b.config, b.stamps) == key), None)
            if base is not None:
                out.append((c, base, f"SFT benign - {base.labels['method']} base"))
    return out


def poisoned_vs_benign(every: list[Condition], main: list[Condition], claim: ClaimSpec) -> list[tuple]:
    out = []
    for c in every:
        if c.is_sft and c.labels["scenario"] == "poisoned":
            key = setting_key(c.config, c.stamps, poison_ratio=0.0)
            benign = next((b for b in every if b.is_sft and setting_key(b.config, b.stamps) == key), None)
            if benign is not None:
                out.append((c, benign, f"SFT p = {c.labels['poison_ratio']:g} - SFT benign"))
    return out


def _covered(cond: Condition, claim: ClaimSpec) -> bool:
    comp = claim.comparison
    lab = cond.labels
    return (lab["family"] in comp.families or lab["method"] in comp.methods) and not cond.is_sft


def method_vs_sft(every: list[Condition], main: list[Condition], claim: ClaimSpec) -> list[tuple]:
    """Each covered method against its SFT; with ``largest_poison_ratio``, only at the largest
    poison ratio of a method measured at ``min_poison_ratios`` ratios or more."""
    comp = claim.comparison
    _, groups = by_reference(main)
    conds = [c for g in groups.values() for c in g if _covered(c, claim) and _scenario_ok(c, comp.scenario)]
    if comp.largest_poison_ratio:
        lines: dict[tuple, list[Condition]] = defaultdict(list)
        for c in conds:
            lab = c.labels
            lines[(lab["model"], lab["task"], lab["method"], lab["params"])].append(c)
        conds = [
            max(g, key=lambda c: c.labels["poison_ratio"])
            for g in lines.values()
            if len({c.labels["poison_ratio"] for c in g}) >= comp.min_poison_ratios
        ]
    out = []
    for c in conds:
        ref = sft_reference(c, main)
        if ref is not None:
            out.append((c, ref, f"{_name(c)} - SFT"))
    return out


def method_vs_others(every: list[Condition], main: list[Condition], claim: ClaimSpec) -> list[tuple]:
    """``method`` against every other condition of its setting (SFT included), or, with
    ``families``, against the other methods of those families (SFT excluded: it is the
    reference, not a protection)."""
    comp = claim.comparison
    refs, groups = by_reference(main)
    out = []
    for key, conds in groups.items():
        mine = [c for c in conds if c.labels["method"] == comp.method and _scenario_ok(c, comp.scenario)]
        rivals = [c for c in conds if c.labels["method"] != comp.method]
        rivals = [c for c in rivals if c.labels["family"] in comp.families] if comp.families else [refs[key], *rivals]
        out += [(m, r, f"{_name(m)} - {_name(r)}") for m in mine for r in rivals]
    return out


def method_vs_method(every: list[Condition], main: list[Condition], claim: ClaimSpec) -> list[tuple]:
    comp = claim.comparison
    _, groups = by_reference(main)
    out = []
    for conds in groups.values():
        for x, y in comp.pairs:
            out += [
                (a, b, f"{_name(a)} - {_name(b)}")
                for a in conds
                for b in conds
                if a.labels["method"] == x and b.labels["method"] == y and _scenario_ok(a, comp.scenario)
            ]
    return out


PAIR_BUILDERS = {
    "benign_vs_base": benign_vs_base,
    "poisoned_vs_benign": poisoned_vs_benign,
    "method_vs_sft": method_vs_sft,
    "method_vs_others": method_vs_others,
    "method_vs_method": method_vs_method,
}


def gain_gap(a: Condition, b: Condition, alpha: float) -> dict[str, Any]:
    """gain(a) - gain(b), gain = ASR reduction vs SFT + task-score change vs SFT; SFT
    cancels, so it is (ASR_b - ASR_a) + (task_a - task_b), paired by seed and prompt; with
    the ``1 - 2 alpha`` interval for the TOST's interval form."""
    harm = paired_outcomes(b, a, "asr")
    task = paired_outcomes(a, b, "task_score")
    seeds_h = set(a.per_seed("asr")) & set(b.per_seed("asr"))
    seeds_t = set(a.per_seed("task_score")) & set(b.per_seed("task_score"))
    if not harm or not task or seeds_h != seeds_t or len(harm) != len(task):
        return {}
    parts = [[(x - y).tolist(), (u - v).tolist()] for (x, y), (u, v) in zip(harm, task)]
    boot = cluster_bootstrap(parts)
    narrow = cluster_bootstrap(parts, confidence=1.0 - 2.0 * alpha)
    return {
        "estimate": boot.estimate,
        "ci_low": boot.low,
        "ci_high": boot.high,
        "p_bootstrap": boot.p_value,
        "tost_low": narrow.low,
        "tost_high": narrow.high,
        "n_seeds": len(harm),
        "n_prompts": max(len(x) for x, _ in harm),
        "n_items": max(len(u) for u, _ in task),
    }


def gain_rows(main: list[Condition], claim: ClaimSpec, spec: ClaimsFile) -> list[dict[str, Any]]:
    """Claim 4: the method's gain against the best other method's, per SFT reference."""
    method = claim.comparison.method
    refs, groups = by_reference(main)
    rows = []
    for ref_key, conds in groups.items():
        ref = refs[ref_key]
        mine = [c for c in conds if c.labels["method"] == method]
        others = [c for c in conds if c.labels["method"] != method]
        if not mine or not others:
            continue
        own = mine[0]
        gains = {c.key: paired_estimate(ref, c, "asr") + paired_estimate(c, ref, "task_score") for c in [own, *others]}
        ranked = sorted([c for c in others if not math.isnan(gains[c.key])], key=lambda c: -gains[c.key])
        if not ranked or math.isnan(gains[own.key]):
            continue
        gap = gain_gap(own, ranked[0], spec.alpha)
        if not gap:
            continue
        pts = [ref, own, *others]
        front = pareto_front(
            [condition_estimate(c, "asr") for c in pts], [condition_estimate(c, "task_score") for c in pts]
        )
        rows.append(
            {
                "setting": setting_label(own),
                "test_kind": "bootstrap",
                "margin": spec.margin("gain"),
                "comparison": f"gain({_name(own)}) - gain({_name(ranked[0])}, best other of {len(others)})",
                "own_gain": gains[own.key],
                "on_pareto_front": front[1],
                **gap,
            }
        )
    return rows


def ranking_rows(main: list[Condition], claim: ClaimSpec) -> list[dict[str, Any]]:
    """Kendall's tau between two tasks of the methods' ASR effects against SFT (same model,
    scenario and poison ratio; methods measured on both tasks)."""
    refs, groups = by_reference(main)
    effects: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for ref_key, conds in groups.items():
        for c in conds:
            lab = c.labels
            est = paired_estimate(c, refs[ref_key], claim.metric)
            if not math.isnan(est):
                effects[(lab["model"], lab["scenario"], lab["poison_ratio"])][lab["task"]][_name(c)] = est
    rows = []
    for (model, scenario, p), tasks in effects.items():
        for t1, t2 in combinations(sorted(tasks), 2):
            common = sorted(set(tasks[t1]) & set(tasks[t2]))
            if len(common) < 3:
                continue
            tau, pv = kendall_tau([tasks[t1][m] for m in common], [tasks[t2][m] for m in common])
            where = f"{model}, {scenario}" + (f", p = {p:g}" if scenario == "poisoned" else "")
            rows.append(
                {
                    "setting": where,
                    "comparison": f"{t1} vs {t2} ({len(common)} methods)",
                    "test_kind": "rank",
                    "estimate": tau,
                    "p_rank": pv,
                    "n_methods": len(common),
                }
            )
    return rows


def views(data: StudyData, judge: str) -> tuple[list[Condition], list[Condition]]:
    """Every condition and those of the main grids, with ASR under ``judge``
    (:data:`TASK_SCORER`: as recorded), built once per judge for all claims."""
    every, main = data.conditions(None), data.conditions(MAIN_GRIDS)
    return (every, main) if judge == TASK_SCORER else (judged(every, judge), judged(main, judge))


def claim_rows(
    every: list[Condition], main: list[Condition], claim: ClaimSpec, spec: ClaimsFile, judge: str
) -> list[dict[str, Any]]:
    """The rows of ``claim`` on the conditions of :func:`views` for ``judge``."""
    kind = claim.comparison.kind
    if kind == "gain_vs_best_other":
        rows = gain_rows(main, claim, spec)
    elif kind == "ranking_across_tasks":
        rows = ranking_rows(main, claim)
    else:
        reuse = kind == "benign_vs_base"  # a base model has one seed: every SFT seed pairs with it
        rows = _pair_rows(PAIR_BUILDERS[kind](every, main, claim), claim, spec, reuse)
    for r in rows:
        r["judge"] = judge
    return rows
