"""The analysis tables as people read them: numbers as strings, Markdown and LaTeX.

Formatting only: every number shown was computed in :mod:`ussafety.study.compare`; the
captions name how the intervals were computed (:data:`ussafety.stats.CLUSTER_CI`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ussafety.stats import CLUSTER_CI
from ussafety.study.conditions import METRICS

CAPTIONS = {
    "conditions": f"ASR, over-refusal and task score: mean over seeds [{CLUSTER_CI}]",
    "significance": (
        f"Each method against SFT: difference [paired {CLUSTER_CI}]; exact McNemar p-values on "
        "the pooled (seed, prompt) pairs and bootstrap p-values, Holm-corrected over the "
        "methods sharing an SFT run"
    ),
    "ablations": f"Ablations: metrics per value [{CLUSTER_CI}]",
}
"""Caption of each table (LaTeX ``\\caption``, first line of the Markdown file)."""


def fmt_num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.2g}" if 0 < abs(v) < 10**-digits else f"{v:.{digits}f}"
    return str(v)


def fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def with_ci(df: pd.DataFrame, metric: str, digits: int = 3) -> pd.Series:
    """``"mean [low, high]"`` of ``metric`` per row."""
    return df.apply(
        lambda r: (
            f"{fmt_num(r[metric], digits)} [{fmt_num(r[f'{metric}_low'], digits)}, "
            f"{fmt_num(r[f'{metric}_high'], digits)}]"
        ),
        axis=1,
    )


def display_conditions(table: pd.DataFrame) -> pd.DataFrame:
    """The condition table as strings, one "mean [low, high]" column per metric."""
    if table.empty:
        return table
    out = table[["model", "task", "scenario", "poison_ratio", "method", "params", "n_seeds"]].copy()
    out["poison_ratio"] = out.poison_ratio.map(lambda p: "" if p != p else f"{p:g}")
    for metric, title in METRICS.items():
        out[title] = with_ci(table, metric)
    out["items"] = table.apply(lambda r: f"{r.asr_n}/{r.over_refusal_n}/{r.task_score_n}", axis=1)
    return out


def display_significance(sig: pd.DataFrame) -> pd.DataFrame:
    """The significance table as strings: difference [CI] and the four p-values."""
    if sig.empty:
        return sig
    out = sig[["model", "task", "scenario", "poison_ratio", "method", "params", "metric", "n_seeds", "n_pairs"]].copy()
    out["poison_ratio"] = out.poison_ratio.map(lambda p: f"{p:g}")
    out["metric"] = out.metric.map(METRICS)
    out["diff vs SFT [95% CI]"] = sig.apply(lambda r: f"{r.estimate:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", axis=1)
    for col in ("p_mcnemar", "p_mcnemar_holm", "p_bootstrap", "p_bootstrap_holm"):
        out[col] = sig[col].map(fmt_p)
    return out


def display_ablations(abl: pd.DataFrame) -> pd.DataFrame:
    """The ablation table as strings: sweep, x, method and "mean [low, high]" per metric."""
    if abl.empty:
        return abl
    out = abl[["sweep", "x", "model", "task", "method", "n_seeds"]].copy()
    for metric, title in METRICS.items():
        out[title] = with_ci(abl, metric)
    return out


def markdown(df: pd.DataFrame, caption: str = "") -> str:
    """A Markdown table of ``df``, after ``caption`` as a paragraph when given."""
    head = [caption, ""] if caption else []
    if df.empty:
        return "\n".join([*head, "(no rows)"])
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt_num(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(head + lines)


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs ``table`` of ``df`` (strings as they are, escaped)."""
    cols = list(df.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "l" * len(cols) + "}",
        r"\toprule",
        " & ".join(tex_escape(str(c)) for c in cols) + r" \\",
        r"\midrule",
    ]
    for _, r in df.iterrows():
        lines.append(
            " & ".join(tex_escape(fmt_num(r[c]) if isinstance(r[c], float) else str(r[c])) for c in cols) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
