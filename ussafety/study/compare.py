"""Conditions measured and compared: each condition's mean with its interval, and every
method against the SFT run it shares everything else with.

- a condition's mean is the mean over seeds of the per-seed rate, with the two-level
  bootstrap interval of :func:`ussafety.stats.cluster_bootstrap` (seeds, then prompts);
- against SFT (same model, alignment, data, training and evaluation; only the method
  differs, :func:`sft_reference`): the difference paired by ``(seed, source file, row)``,
  so two conditions are compared on the very prompts both saw, with its paired bootstrap
  interval and p-value and the exact McNemar test on the pooled (seed, prompt) pairs;
  p-values are Holm-corrected over the methods compared with the same SFT run on the same
  metric.

Every interval uses :data:`ussafety.stats.N_BOOT` resamples: no function here takes a size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ussafety.stats import (
    cluster_bootstrap,
    cluster_mean,
    holm_correction,
    mcnemar_exact,
    paired_tost,
    pareto_front,
)
from ussafety.study.conditions import (
    LOWER_IS_BETTER,
    MAIN_GRIDS,
    METRICS,
    Condition,
    StudyData,
    group_conditions,
    setting_key,
    sweep_x,
)

ALPHA = 0.05
"""Significance level of every test (after Holm's correction)."""
FAMILY_ORDER = {"base": 0, "baseline": 1, "regularization": 2, "replay": 3, "merging": 4}
SCENARIO_ORDER = {"base": 0, "benign": 1, "poisoned": 2}
NAN = math.nan

Pairs = list[tuple[np.ndarray, np.ndarray]]


def condition_mean(cond: Condition, metric: str) -> dict[str, float]:
    """``metric``: mean over seeds of the per-seed rate; ``metric_low``/``_high``: its 95%
    two-level bootstrap interval; ``metric_n``: items per seed (mean over seeds)."""
    per_seed = cond.per_seed(metric)
    if not per_seed:
        return {metric: NAN, f"{metric}_low": NAN, f"{metric}_high": NAN, f"{metric}_n": 0}
    res = cluster_bootstrap([[list(per_seed[s].values())] for s in sorted(per_seed)])
    return {
        metric: res.estimate,
        f"{metric}_low": res.low,
        f"{metric}_high": res.high,
        f"{metric}_n": int(np.mean([len(v) for v in per_seed.values()])),
    }


def condition_estimate(cond: Condition, metric: str) -> float:
    """The point estimate of :func:`condition_mean` alone (nan when unmeasured)."""
    per_seed = cond.per_seed(metric)
    return cluster_mean([[list(per_seed[s].values())] for s in sorted(per_seed)]) if per_seed else NAN


def diff_parts(pairs: Pairs) -> list[list[list[float]]]:
    """Per seed, the per-prompt differences ``a - b`` as the one part
    :func:`~ussafety.stats.cluster_bootstrap` resamples."""
    return [[(x - y).tolist()] for x, y in pairs]


def paired_outcomes(
    a: Condition,
    b: Condition,
    metric: str,
    reuse_single_reference: bool = False,
    keys: set[tuple[str, int]] | None = None,
) -> Pairs:
    """Per shared seed: a's and b's outcomes on the prompts both saw, in the same order.

    ``reuse_single_reference``: when ``b`` has one seed (a base model, which no training
    seed changes), pair each seed of ``a`` with it. ``keys``: only these ``(source, row)``
    prompts (e.g. one harm category).
    """
    pa, pb = a.per_seed(metric), b.per_seed(metric)
    out = []
    for s in sorted(pa):
        ref = pb.get(s)
        if ref is None and reuse_single_reference and len(pb) == 1:
            ref = next(iter(pb.values()))
        if ref is None:
            continue
        shared = sorted(set(pa[s]) & set(ref) & (keys if keys is not None else set(pa[s])))
        if shared:
            out.append((np.array([pa[s][k] for k in shared]), np.array([ref[k] for k in shared])))
    return out


def paired_comparison(a: Condition, b: Condition, metric: str, reuse_single_reference: bool = False) -> dict[str, Any]:
    """``a - b`` on ``metric``, paired by (seed, prompt): :func:`pairs_comparison` of
    :func:`paired_outcomes`."""
    return pairs_comparison(paired_outcomes(a, b, metric, reuse_single_reference))


def pairs_comparison(pairs: Pairs) -> dict[str, Any]:
    """Estimate, 95% bootstrap interval and p-value (seeds then prompts) of ``a - b`` over
    per-seed outcome pairs, and the exact McNemar test on the pooled (seed, prompt) pairs."""
    if not pairs:
        return {
            "n_seeds": 0,
            "n_pairs": 0,
            "estimate": NAN,
            "ci_low": NAN,
            "ci_high": NAN,
            "p_bootstrap": NAN,
            "p_mcnemar": NAN,
            "b01": 0,
            "b10": 0,
        }
    boot = cluster_bootstrap(diff_parts(pairs))
    xa = np.concatenate([x for x, _ in pairs]) > 0.5
    xb = np.concatenate([y for _, y in pairs]) > 0.5
    mc = mcnemar_exact(list(xb), list(xa))  # b01: b False, a True (a "worse" on a 0/1 outcome)
    return {
        "n_seeds": len(pairs),
        "n_pairs": int(xa.size),
        "estimate": boot.estimate,
        "ci_low": boot.low,
        "ci_high": boot.high,
        "p_bootstrap": boot.p_value,
        "p_mcnemar": mc.p_value,
        "b01": mc.b01,
        "b10": mc.b10,
    }


def equivalence_stats(pairs: Pairs, margin: float, alpha: float = ALPHA) -> dict[str, Any]:
    """What the TOST verdict reads: the ``1 - 2 alpha`` two-level bootstrap interval
    (``tost_low``/``tost_high``; equivalence needs it inside ``(-margin, margin)``) and the
    two one-sided Tango score tests on the pooled pairs (``p_tost`` = the larger, and
    ``p_tost_lower``/``p_tost_upper``: rejecting d <= -margin / d >= +margin)."""
    boot = cluster_bootstrap(diff_parts(pairs), confidence=1.0 - 2.0 * alpha)
    xa = np.concatenate([x for x, _ in pairs]) > 0.5
    xb = np.concatenate([y for _, y in pairs]) > 0.5
    b01, b10 = int(np.sum(xa & ~xb)), int(np.sum(~xa & xb))
    tost = paired_tost(b01, b10, int(xa.size), margin)
    return {
        "margin": margin,
        "tost_low": boot.low,
        "tost_high": boot.high,
        "p_tost": tost.p_value,
        "p_tost_lower": tost.p_lower,
        "p_tost_upper": tost.p_upper,
    }


def paired_estimate(a: Condition, b: Condition, metric: str) -> float:
    """The estimate of :func:`paired_comparison` alone (nan without shared prompts)."""
    pairs = paired_outcomes(a, b, metric)
    return cluster_mean(diff_parts(pairs)) if pairs else NAN


def sft_reference(cond: Condition, conditions: list[Condition]) -> Condition | None:
    """The SFT condition with the same model, alignment, data, training and evaluation."""
    if cond.labels["scenario"] == "base":
        return None
    key = setting_key(cond.config, cond.stamps)
    return next((o for o in conditions if o.is_sft and setting_key(o.config, o.stamps) == key), None)


# ----------------------------------------------------------------------------- tables


def label_row(cond: Condition) -> dict[str, Any]:
    """A condition's label columns, its seeds, key and run ids (the evidence of the row)."""
    return {
        **cond.labels,
        "n_seeds": len(cond.runs),
        "seeds": ",".join(map(str, cond.seeds)),
        "condition": cond.key,
        "run_ids": " ".join(cond.run_ids),
    }


def sorted_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by model, task, scenario, poison ratio, then SFT, then the methods by family."""
    if df.empty:
        return df
    key = df.assign(
        _f=df.family.map(FAMILY_ORDER).fillna(9),
        _s=df.scenario.map(SCENARIO_ORDER).fillna(9),
        _p=df.poison_ratio.fillna(-1),
        _m=df.method != "sft",
    )
    key = key.sort_values(["model", "task", "_s", "_p", "_m", "_f", "method", "params"], kind="stable")
    return df.loc[key.index].reset_index(drop=True)


def condition_table(data: StudyData, grids: Iterable[str] | None = MAIN_GRIDS) -> pd.DataFrame:
    """One row per condition (method x task x scenario ...): each metric's mean over seeds
    with its 95% interval and the number of items per seed."""
    rows = []
    for cond in data.conditions(grids):
        row = label_row(cond)
        for metric in METRICS:
            row.update(condition_mean(cond, metric))
        rows.append(row)
    return sorted_table(pd.DataFrame(rows))


def significance_table(data: StudyData, grids: Iterable[str] | None = MAIN_GRIDS) -> pd.DataFrame:
    """Every non-SFT condition against its SFT reference, on every metric: difference
    (method - SFT), 95% paired bootstrap interval, bootstrap and exact McNemar p-values
    and their Holm corrections over the methods compared with the same SFT run."""
    conditions = data.conditions(grids)
    rows = []
    for cond in conditions:
        ref = sft_reference(cond, conditions)
        if ref is None or cond is ref:
            continue
        for metric in METRICS:
            cmp = paired_comparison(cond, ref, metric)
            if cmp["n_pairs"]:
                rows.append(
                    {
                        **label_row(cond),
                        "metric": metric,
                        "reference": ref.key,
                        "reference_run_ids": " ".join(ref.run_ids),
                        **cmp,
                    }
                )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("p_mcnemar", "p_bootstrap"):
        df[f"{col}_holm"] = np.nan
        for _, idx in df.groupby(["reference", "metric"]).groups.items():
            df.loc[idx, f"{col}_holm"] = holm_correction(list(df.loc[idx, col]))
    df["better_than_sft"] = np.where(df.metric.map(LOWER_IS_BETTER), df.estimate < 0, df.estimate > 0)
    df["significant"] = df.p_mcnemar_holm < ALPHA
    return sorted_table(df)


def ablation_table(data: StudyData) -> pd.DataFrame:
    """One row per (sweep, condition) over the runs each sweep tags: x, metrics with CIs."""
    rows = []
    for name, sweep in data.sweeps.items():
        for cond in group_conditions(data.sweep_runs(name)):
            row = {
                "sweep": name,
                "x_label": sweep.label,
                "log_x": sweep.log,
                "x": sweep_x(cond.config, sweep.x),
                **label_row(cond),
            }
            for metric in METRICS:
                row.update(condition_mean(cond, metric))
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["sweep", "method", "x"], kind="stable").reset_index(drop=True)


def pareto_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (fine-tuned conditions) with ``pareto``: on the (ASR down, task score up)
    front of its model x task x scenario x poison-ratio panel."""
    df = table[table.scenario != "base"].copy()
    df["pareto"] = False
    for _, idx in df.groupby(["model", "task", "scenario", "poison_ratio"], dropna=False).groups.items():
        df.loc[idx, "pareto"] = pareto_front(list(df.loc[idx, "asr"]), list(df.loc[idx, "task_score"]))
    return df


def harm_categories(cond: Condition) -> dict[tuple[str, int], str]:
    """``{(source, row): category}`` of the condition's harmful prompts that name one
    (records made before categories were recorded name none)."""
    return {
        (g.source, g.row): g.category
        for run in cond.runs.values()
        for g in run.record.generations
        if g.kind == "harmful" and g.category
    }


def category_table(data: StudyData, grids: Iterable[str] | None = MAIN_GRIDS) -> pd.DataFrame:
    """Which harm categories each method protects: per condition and ``generation.category``,
    the ASR (mean over seeds, two-level interval) and, for a fine-tuned condition, its
    difference from its SFT reference on that category's prompts (paired interval).
    Exploratory: no correction over the many categories; empty when no record names one."""
    conditions = data.conditions(grids)
    rows = []
    for cond in conditions:
        cats = harm_categories(cond)
        per_seed = cond.per_seed("asr")
        ref = sft_reference(cond, conditions)
        for cat in sorted(set(cats.values())):
            keys = {k for k, c in cats.items() if c == cat}
            own = [[[v for k, v in per_seed[s].items() if k in keys]] for s in sorted(per_seed)]
            own = [p for p in own if p[0]]
            if not own:
                continue
            res = cluster_bootstrap(own)
            row = {
                **label_row(cond),
                "category": cat,
                "n_prompts": len(keys),
                "asr": res.estimate,
                "asr_low": res.low,
                "asr_high": res.high,
                "vs_sft": NAN,
                "vs_sft_low": NAN,
                "vs_sft_high": NAN,
            }
            pairs = paired_outcomes(cond, ref, "asr", keys=keys) if ref is not None and ref is not cond else []
            if pairs:
                diff = cluster_bootstrap(diff_parts(pairs))
                row.update(vs_sft=diff.estimate, vs_sft_low=diff.low, vs_sft_high=diff.high)
            rows.append(row)
    df = pd.DataFrame(rows)
    return df if df.empty else sorted_table(df).sort_values(["category"], kind="stable").reset_index(drop=True)
