"""Seaborn figures of the study, drawn from the analysis tables (never from raw numbers).

Each function takes a table of :mod:`ussafety.study.compare`, draws one figure and,
given ``path`` (no suffix), writes ``path.png`` and ``path.pdf``. Error bars are the
tables' 95% intervals (:data:`ussafety.stats.CLUSTER_CI`), never recomputed here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ussafety.atomic import save_figure_atomic
from ussafety.stats import pareto_front

sns.set_theme(style="whitegrid", context="paper")

METRIC_TITLES = {"asr": "ASR (lower is safer)", "over_refusal": "over-refusal on XSTest", "task_score": "task score"}


def save(fig: plt.Figure, path: Path | None) -> list[Path]:
    if path is None:
        return []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    save_figure_atomic(fig, out[0], dpi=150, bbox_inches="tight")
    save_figure_atomic(fig, out[1], bbox_inches="tight", metadata={"CreationDate": None})
    return out


def _err(df: pd.DataFrame, metric: str) -> np.ndarray:
    """Asymmetric error-bar lengths from a table's ``metric_low``/``metric_high``."""
    lo = (df[metric] - df[f"{metric}_low"]).clip(lower=0).fillna(0).to_numpy()
    hi = (df[f"{metric}_high"] - df[metric]).clip(lower=0).fillna(0).to_numpy()
    return np.vstack([lo, hi])


def _panels(df: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if df.empty:
        return []
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(keys, dropna=False, sort=True)]


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.4)) -> tuple[plt.Figure, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _palette(methods: list[str]) -> dict[str, Any]:
    colors = sns.color_palette("tab20", max(len(methods), 1))
    return dict(zip(methods, colors))


def _empty(message: str, path: Path | None) -> tuple[plt.Figure, list[Path]]:
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig, save(fig, path)


def _ring(ax: Any, x: Any, y: Any, *, size: float, width: float, label: str) -> None:
    """Hollow black circles around the points a rule picked (the Pareto front, the selected
    strengths): one look for "chosen" in every figure."""
    ax.scatter(x, y, s=size, facecolors="none", edgecolors="black", linewidths=width, label=label, zorder=3)


def _setting_title(model: str, task: str, scenario: str, p: float) -> str:
    """A panel's title: model, task and scenario (the poison ratio only where there is one)."""
    scen = scenario if scenario != "poisoned" else f"poisoned p={p:g}"
    return f"{model} | {task} | {scen}"


def _legend_entries(axes: list[Any]) -> dict[str, Any]:
    """Each label once across the panels (first handle wins): one legend for the figure."""
    uniq: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            uniq.setdefault(label, handle)
    return uniq


def _figure_legend(fig: plt.Figure, entries: dict[str, Any], loc: Literal["upper center", "lower center"]) -> None:
    """The figure's one legend above the panels, at most six entries a row."""
    fig.legend(
        entries.values(), entries.keys(), loc=loc, ncol=min(6, len(entries)), bbox_to_anchor=(0.5, 1.0), fontsize=7
    )


def safety_utility(table: pd.DataFrame, path: Path | None = None) -> tuple[plt.Figure, list[Path]]:
    """ASR (x) against task score (y) per method, one panel per model x task x scenario x p,
    with 95% CIs and the Pareto front (lower ASR, higher score) as a step line."""
    df = table[table.scenario != "base"]
    panels = _panels(df, ["model", "task", "scenario", "poison_ratio"])
    if not panels:
        return _empty("no fine-tuned conditions yet", path)
    methods = sorted(df.method.unique())
    colors = _palette(methods)
    fig, axes = _grid(len(panels))
    for ax, ((model, task, scenario, p), g) in zip(axes, panels):
        g = g.reset_index(drop=True)
        for i, r in g.iterrows():
            ax.errorbar(
                r.asr,
                r.task_score,
                xerr=_err(g.iloc[[i]], "asr"),
                yerr=_err(g.iloc[[i]], "task_score"),
                fmt="o",
                color=colors[r.method],
                capsize=2,
                ms=6,
                label=r.method,
            )
            ax.annotate(r.method, (r.asr, r.task_score), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = g[pareto_front(list(g.asr), list(g.task_score))].sort_values("asr")
        if len(front):
            ax.step(front.asr, front.task_score, where="post", color="black", lw=1, ls="--")
            _ring(ax, front.asr, front.task_score, size=160, width=1.2, label="Pareto front")
        ax.set_title(_setting_title(model, task, scenario, p))
        ax.set_xlabel("ASR (lower is safer)")
        ax.set_ylabel("task score")
    uniq = _legend_entries(axes)
    rows = math.ceil(len(uniq) / 6)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.06 * rows / max(1, math.ceil(len(panels) / 3))))
    _figure_legend(fig, uniq, "upper center")
    return fig, save(fig, path)


def asr_vs_poison(table: pd.DataFrame, path: Path | None = None) -> tuple[plt.Figure, list[Path]]:
    """ASR against the poison ratio, one line per method (and settings), one panel per
    model x task; the benign runs are p = 0."""
    df = table[table.scenario != "base"].copy()
    panels = _panels(df, ["model", "task"])
    if not panels:
        return _empty("no fine-tuned conditions yet", path)
    df["line"] = df.method + df.params.map(lambda s: f" {s}" if s else "")
    colors = _palette(sorted(df.line.unique()))
    fig, axes = _grid(len(panels))
    for ax, ((model, task), g) in zip(axes, panels):
        g = g.copy()
        g["line"] = g.method + g.params.map(lambda s: f" {s}" if s else "")
        for line, h in g.groupby("line"):
            h = h.sort_values("poison_ratio")
            ax.errorbar(
                h.poison_ratio, h.asr, yerr=_err(h, "asr"), marker="o", capsize=2, color=colors[line], label=line
            )
        ax.set_title(f"{model} | {task}")
        ax.set_xlabel("poison ratio p")
        ax.set_ylabel("ASR")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, save(fig, path)


def method_bars(table: pd.DataFrame, path: Path | None = None) -> tuple[plt.Figure, list[Path]]:
    """Per-method bars with 95% CIs: ASR, over-refusal and task score (columns), one row
    per model x task; bars grouped by scenario (base, benign, poisoned p)."""
    if table.empty:
        return _empty("no conditions yet", path)
    df = table.copy()
    df["scenario_p"] = np.where(
        df.scenario == "poisoned", "poisoned p=" + df.poison_ratio.map(lambda p: f"{p:g}"), df.scenario
    )
    df["bar"] = df.method + df.params.map(lambda s: f" {s}" if s else "")
    rows = _panels(df, ["model", "task"])
    scen = list(dict.fromkeys(df.sort_values(["poison_ratio"], na_position="first").scenario_p))
    colors = dict(zip(scen, sns.color_palette("Set2", max(len(scen), 1))))
    fig, axes = plt.subplots(len(rows), 3, figsize=(15, 3.6 * len(rows)), squeeze=False)
    for i, ((model, task), g) in enumerate(rows):
        bars = list(dict.fromkeys(g.bar))
        width = 0.8 / max(1, len(scen))
        for j, metric in enumerate(("asr", "over_refusal", "task_score")):
            ax = axes[i][j]
            for k, s in enumerate(scen):
                h = g[g.scenario_p == s].set_index("bar").reindex(bars)
                x = np.arange(len(bars)) + (k - (len(scen) - 1) / 2) * width
                ok = h[metric].notna().to_numpy()
                if ok.any():
                    hh = h[ok]
                    ax.bar(x[ok], hh[metric], width, yerr=_err(hh, metric), capsize=2, color=colors[s], label=s)
            ax.set_xticks(np.arange(len(bars)))
            ax.set_xticklabels(bars, rotation=45, ha="right", fontsize=7)
            ax.set_ylim(0, 1)
            ax.set_title(f"{model} | {task} | {METRIC_TITLES[metric]}")
        axes[i][0].legend(fontsize=7)
    fig.tight_layout()
    return fig, save(fig, path)


def ablation_curves(abl: pd.DataFrame, path: Path | None = None) -> tuple[plt.Figure, list[Path]]:
    """One column per ablation (sweep): ASR (top) and task score (bottom) against the
    swept value, one line per method, log x where the sweep says so."""
    if abl.empty:
        return _empty("no ablation runs yet", path)
    sweeps = list(dict.fromkeys(abl.sweep))
    fig, axes = plt.subplots(2, len(sweeps), figsize=(4.2 * len(sweeps), 6.4), squeeze=False)
    for j, sweep in enumerate(sweeps):
        g = abl[abl.sweep == sweep]
        for i, metric in enumerate(("asr", "task_score")):
            ax = axes[i][j]
            for (method, model, task), h in g.groupby(["method", "model", "task"]):
                h = h.dropna(subset=["x"]).sort_values("x")
                ax.errorbar(
                    h.x.astype(float),
                    h[metric],
                    yerr=_err(h, metric),
                    marker="o",
                    capsize=2,
                    label=f"{method} ({model}, {task})",
                )
            if bool(g.log_x.iloc[0]):
                ax.set_xscale("log")
            ax.set_xlabel(g.x_label.iloc[0])
            ax.set_ylabel(METRIC_TITLES[metric])
            ax.set_title(sweep)
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig, save(fig, path)


def frontier_curves(frontier: pd.DataFrame, path: Path | None = None) -> tuple[plt.Figure, list[Path]]:
    """Each method's safety-utility curve on the validation split (:func:`ussafety.study.
    frontier.frontier_table`): ASR (x) against task score (y) through its strengths, weak to
    strong, the selected strength ringed, SFT as a star and the task-score floor of the
    selection rule (SFT's minus the allowed drop) dashed; one panel per setting."""
    panels = _panels(frontier, ["model", "task", "scenario", "poison_ratio"])
    if not panels:
        return _empty("no validation frontier yet", path)
    colors = _palette(sorted(frontier.method.unique()))
    fig, axes = _grid(len(panels))
    for ax, ((model, task, scenario, p), g) in zip(axes, panels):
        for method, h in g.groupby("method", sort=True):
            ax.plot(h.asr, h.task_score, marker="o", color=colors[method], label=method)
            for _, r in h.iterrows():
                if r.strength == r.strength:  # not nan
                    ax.annotate(
                        f"{r.strength:g}", (r.asr, r.task_score), textcoords="offset points", xytext=(3, 3), fontsize=6
                    )
            sel = h[h.selected]
            _ring(ax, sel.asr, sel.task_score, size=170, width=1.3, label="selected")
        first = g.iloc[0]
        ax.scatter([first.sft_asr], [first.sft_task_score], marker="*", s=180, color="black", label="SFT", zorder=4)
        ax.axhline(first.task_floor, color="grey", ls="--", lw=1, label="task-score floor")
        ax.set_title(_setting_title(model, task, scenario, p) + " (validation)")
        ax.set_xlabel("validation ASR (lower is safer)")
        ax.set_ylabel("validation task score")
    uniq = _legend_entries(axes)
    fig.tight_layout()
    _figure_legend(fig, uniq, "lower center")
    return fig, save(fig, path)


def all_figures(
    conditions: pd.DataFrame, all_conditions: pd.DataFrame, ablations: pd.DataFrame, out: Path
) -> dict[str, list[Path]]:
    """Every figure of the study into ``out`` (PNG and PDF); figures are closed after."""
    made = {}
    for name, fn, table in (
        ("safety_utility", safety_utility, conditions),
        ("asr_vs_poison_ratio", asr_vs_poison, all_conditions),
        ("method_bars", method_bars, conditions),
        ("ablations", ablation_curves, ablations),
    ):
        fig, paths = fn(table, out / name)
        plt.close(fig)
        made[name] = paths
    return made
