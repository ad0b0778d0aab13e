"""What a study of a given size can see: the power table and the power of one verdict row.

Comparisons are paired (the same prompts under two conditions), so what limits them is the
number of *discordant* prompts (one condition succeeds, the other not): the McNemar test's
power depends on the effect ``d = p01 - p10`` and the discordance ``psi = p01 + p10``
(Connor 1987), and the paired TOST's on ``psi`` and the margin. Every number here comes
from the closed forms in :mod:`ussafety.stats` (:func:`~ussafety.stats.mcnemar_mde`,
:func:`~ussafety.stats.tost_resolution`, :func:`~ussafety.stats.mcnemar_sample_size`,
:func:`~ussafety.stats.tost_sample_size`); ``tests/test_power.py`` checks them against the
exact power of the exact McNemar test.

Seeds: the scorecard's McNemar and score tests pool the (seed, prompt) pairs as if they
were independent. When a prompt's outcome repeats across seeds they are not; the table
shows the intraclass correlation ``rho`` of 0 (the tests' own assumption), 0.5 and 1 (seeds
are exact repeats: only the prompts count) through Kish's design effect.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.atomic import write_text_atomic
from ussafety.stats import (
    design_effect,
    kendall_sample_size,
    mcnemar_exact_power,
    mcnemar_mde,
    mcnemar_sample_size,
    sample_scale,
    tost_resolution,
    tost_sample_size,
)
from ussafety.study.claims import ClaimsFile, load_claims
from ussafety.study.formatting import markdown

DISCORDANCES = (0.05, 0.10, 0.20, 0.30)
"""Shares of prompts on which two conditions disagree: 5% for two close methods, 20-30% for
the base against a fine-tuned model (the cpu records: 2-9% between methods, 11% base vs SFT)."""
ICCS = (0.0, 0.5, 1.0)
FIRST_PROTOCOL = ("first records (150 sampled prompts)", 150, 1)
"""The cpu study's protocol: 50 prompts from each of three sets, one seed."""
TASK_TEST_ITEMS = {"sst2": 664, "gsm8k": 500, "humaneval": 144}
"""Task test split sizes (``docs/splits.md``): what the task-score claims can resolve."""


def _nan_round(x: float, digits: int = 4) -> float:
    return round(x, digits) if math.isfinite(x) else math.nan


def power_table(spec: ClaimsFile | None = None, discordances: tuple[float, ...] = DISCORDANCES) -> pd.DataFrame:
    """Minimum detectable paired ASR difference (two-sided McNemar, ``spec.power``) and the
    smallest equivalence margin the TOST resolves, per protocol x seeds' correlation x
    discordance, at ``spec.alpha`` and at Holm's strictest step over
    ``spec.design.planning_comparisons`` comparisons (``alpha / m``)."""
    spec = spec or load_claims()
    alpha, power, m = spec.alpha, spec.power, spec.design.planning_comparisons
    protocols = [("decisive study (harmful test split)", spec.design.test_prompts, spec.design.seeds), FIRST_PROTOCOL]
    rows = []
    for name, prompts, seeds in protocols:
        for icc in ICCS if seeds > 1 else (0.0,):
            n_eff = prompts * seeds / design_effect(seeds, icc)
            for psi in discordances:
                mde = mcnemar_mde(n_eff, psi, alpha, power)
                exact = mcnemar_exact_power(round(n_eff), mde, psi, alpha) if math.isfinite(mde) else math.nan
                rows.append(
                    {
                        "protocol": name,
                        "n_prompts": prompts,
                        "n_seeds": seeds,
                        "icc": icc,
                        "n_pairs_effective": round(n_eff, 1),
                        "discordance": psi,
                        "mde": _nan_round(mde),
                        "exact_power_at_mde": _nan_round(exact, 3),
                        "mde_holm": _nan_round(mcnemar_mde(n_eff, psi, alpha / m, power)),
                        "tost_margin": _nan_round(tost_resolution(n_eff, psi, alpha, power)),
                        "tost_margin_holm": _nan_round(tost_resolution(n_eff, psi, alpha / m, power)),
                    }
                )
    return pd.DataFrame(rows)


def task_power_table(
    spec: ClaimsFile | None = None, discordances: tuple[float, ...] = (0.02, 0.05, 0.10)
) -> pd.DataFrame:
    """Per task test split at the design's seeds (rho = 0): the non-inferiority margin the
    one-sided test resolves at true effect 0 with ``spec.power``, against the pre-registered
    ``margins.task_score``. One-sided at effect 0 has power ``Phi(.)`` where TOST has
    ``2 Phi(.) - 1``, so it is :func:`tost_resolution` at power ``2 p - 1``."""
    spec = spec or load_claims()
    alpha, power, m, seeds = spec.alpha, spec.power, spec.design.planning_comparisons, spec.design.seeds
    rows = []
    for task, items in TASK_TEST_ITEMS.items():
        for psi in discordances:
            n = items * seeds
            rows.append(
                {
                    "task": task,
                    "n_items": items,
                    "n_seeds": seeds,
                    "discordance": psi,
                    "ni_margin": _nan_round(tost_resolution(n, psi, alpha, 2 * power - 1)),
                    "ni_margin_holm": _nan_round(tost_resolution(n, psi, alpha / m, 2 * power - 1)),
                    "pre_registered_margin": spec.margin("task_score"),
                }
            )
    return pd.DataFrame(rows)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """Counts as integers, shares as percentages, rates to 3 decimals, nan as 'none'."""
    out = df.copy().astype(object)
    for col in df.columns:
        if col in ("n_pairs_effective", "n_prompts", "n_items", "n_seeds"):
            out[col] = df[col].map(lambda v: f"{v:,.0f}")
        elif col == "discordance":
            out[col] = df[col].map(lambda v: f"{v:.0%}")
        elif col == "icc":
            out[col] = df[col].map(lambda v: f"{v:g}")
        elif df[col].dtype.kind == "f":
            out[col] = df[col].map(lambda v: "none" if math.isnan(v) else f"{v:.3f}")
    return out


def power_markdown(table: pd.DataFrame, tasks: pd.DataFrame, spec: ClaimsFile) -> str:
    """``power.md``: the assumptions, then both tables."""
    m, a = spec.design.planning_comparisons, spec.alpha
    table, tasks = _display(table), _display(tasks)
    shown = table.rename(
        columns={
            "mde": f"MDE (alpha {a:g})",
            "mde_holm": f"MDE (Holm, alpha/{m})",
            "exact_power_at_mde": "exact test's power at MDE",
            "tost_margin": f"TOST margin (alpha {a:g})",
            "tost_margin_holm": f"TOST margin (alpha/{m})",
        }
    )
    lines = [
        "# Power: what the study can and cannot see",
        "",
        "Generated by `ussafety.study.power.write_power_table` from `params/study/claims.yaml`; do not edit by hand.",
        "",
        "Assumptions. A paired comparison of two conditions on the same prompts; per-prompt 0/1 outcomes "
        "(attack succeeded). *Discordance*: the share of (seed, prompt) pairs on which the two conditions "
        "differ. *MDE*: the smallest true ASR difference the two-sided exact McNemar test detects with "
        f"{spec.power:.0%} power (Connor 1987, Biometrics 43:207, normal approximation); the next column "
        "is the power the exact test itself has at that difference, summed exactly over the binomial "
        "distribution of discordant pairs (`ussafety.stats.mcnemar_exact_power`; `tests/test_power.py` "
        "checks it by simulation): a little below the target, so read the MDEs as slightly optimistic. "
        "*Holm*: Holm's "
        f"strictest step over {m} comparisons, alpha/{m} = {a / m:.4f} (later steps are laxer), the "
        "per-claim family of about every method against SFT. *TOST margin*: the smallest equivalence "
        f"margin delta for which the paired TOST (one-sided level {a:g} each) shows |d| < delta with "
        f"{spec.power:.0%} power when the true difference is 0 (Chow, Shao & Wang 2008, sec. 3.2). "
        "*icc*: correlation of a prompt's outcome across seeds; the pooled tests assume 0, 1 means seeds "
        "repeat each other and only the prompts count (Kish's design effect 1 + (seeds - 1) icc). "
        "'none': no difference up to the discordance itself is detectable. Pre-registered margins: ASR "
        f"{spec.margin('asr'):g}, task score {spec.margin('task_score'):g}.",
        "",
        "## ASR: minimum detectable difference and resolvable equivalence margin",
        "",
        markdown(shown),
        "",
        "## Task score: non-inferiority margin resolvable on each task's test split",
        "",
        f"One-sided test at level {a:g} (and alpha/{m}), true difference 0, {spec.power:.0%} power, "
        f"{spec.design.seeds} seeds, icc 0; the pre-registered margin is {spec.margin('task_score'):g}. "
        "Where the resolvable margin exceeds it, claim 5 can end *underpowered* at the decisive size.",
        "",
        markdown(
            tasks.rename(columns={"ni_margin": f"NI margin (alpha {a:g})", "ni_margin_holm": f"NI margin (alpha/{m})"})
        ),
        "",
    ]
    return "\n".join(lines)


def write_power_table(out_dir: Path, spec: ClaimsFile | None = None) -> list[Path]:
    """``out_dir/power.csv`` (both tables, long form) and ``out_dir/power.md``."""
    spec = spec or load_claims()
    table, tasks = power_table(spec), task_power_table(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    both = pd.concat([table.assign(metric="asr"), tasks.assign(metric="task_score")], ignore_index=True)
    write_text_atomic(out_dir / "power.csv", both.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(out_dir / "power.md", power_markdown(table, tasks, spec))
    return [out_dir / "power.csv", out_dir / "power.md"]


# ----------------------------------------------------------------------------- one row


def _prompts(pairs: float, seeds: int) -> float:
    return float(math.ceil(pairs / seeds)) if math.isfinite(pairs) else math.inf


def binary_row_power(
    row: dict[str, Any], margin: float, alpha: float, power: float, seeds: int, unit: str = "prompts"
) -> dict[str, Any]:
    """For an underpowered paired 0/1 row: the (seed, prompt) pairs the McNemar test needs
    to detect the observed effect (and the margin) at the observed discordance, the pairs
    the TOST needs to show equivalence within ``margin``, and each as prompts at ``seeds``
    seeds (``unit``: what a pair's second member is, prompts or task items). A row without
    discordant pairs plans with one (``1 / n``)."""
    n = row["n_pairs"]
    psi = max((row["b01"] + row["b10"]) / n, 1.0 / n)
    d = row["estimate"]
    detect = mcnemar_sample_size(abs(d), psi, alpha, power) if 0 < abs(d) <= psi else math.inf
    detect_margin = mcnemar_sample_size(margin, max(psi, margin), alpha, power)
    equiv = tost_sample_size(psi, margin, d, alpha, power)  # inf when |d| >= margin
    return {
        "discordance": psi,
        "need_pairs_effect": detect,
        "need_prompts_effect": _prompts(detect, seeds),
        "need_pairs_margin": detect_margin,
        "need_prompts_margin": _prompts(detect_margin, seeds),
        "need_pairs_tost": equiv,
        "need_prompts_tost": _prompts(equiv, seeds),
        "plan_seeds": seeds,
        "plan_alpha": alpha,
        "plan_unit": unit,
    }


def scale_row_power(row: dict[str, Any], alpha: float, power: float) -> dict[str, Any]:
    """For an underpowered row without a paired 0/1 test (claim 4's gain): how many times
    the current prompts and items the observed effect needs, from its bootstrap interval's
    standard error ((high - low) / (2 z_0.975))."""
    se = (row["ci_high"] - row["ci_low"]) / (2 * 1.959963984540054)
    return {"need_scale": sample_scale(row["estimate"], se, alpha, power), "plan_alpha": alpha}


def rank_row_power(row: dict[str, Any], alpha: float, power: float) -> dict[str, Any]:
    """For an underpowered rank row: the methods a Kendall test needs to detect the observed tau."""
    return {"need_methods": kendall_sample_size(row["estimate"], alpha, power), "plan_alpha": alpha}


def describe_power(row: dict[str, Any]) -> str:
    """The power calculation of an underpowered row, in words, for the scorecard."""

    def need(pairs: float, prompts: float, what: str) -> str:
        if not math.isfinite(pairs):
            return f"{what}: impossible"
        return f"{what}: {pairs:,.0f} pairs ({prompts:,.0f} {row['plan_unit']} x {row['plan_seeds']} seeds)"

    if "need_pairs_effect" in row:
        m = row["margin"]
        parts = [
            need(row["need_pairs_effect"], row["need_prompts_effect"], f"detect {row['estimate']:+.3f}")
            if row["estimate"]
            else "observed effect 0",
            need(row["need_pairs_margin"], row["need_prompts_margin"], f"detect +-{m:g}"),
            need(row["need_pairs_tost"], row["need_prompts_tost"], f"show |d| < {m:g}"),
        ]
        return "; ".join(parts) + f" (discordance {row['discordance']:.3f}, alpha {row['plan_alpha']:.3g})"
    if "need_scale" in row:
        return f"detect {row['estimate']:+.3f}: {row['need_scale']:.1f}x the current prompts and items"
    if "need_methods" in row:
        n = row["need_methods"]
        return f"detect tau {row['estimate']:+.2f}: " + (f"{n:.0f} methods" if math.isfinite(n) else "impossible")
    return ""
