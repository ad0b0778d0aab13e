"""The GPU estimate of a study as a person reads it: ``ussafety reproduce --preset paper --estimate``.

Why its own module: :mod:`ussafety.study.gpu_cost` computes (one run, many runs, a
refusal); this one decides which GPU a study is held against and writes the Markdown that
the command prints and docs/gpu.md quotes (runs, GPU-hours, peak memory per run by model
and method, the runs that cannot fit and why), so the numbers in the docs come from the
same function as the command's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ussafety.config import RunConfig
from ussafety.models.backend import BackendError, detect
from ussafety.models.costs import DEVICES, GiB, device_named
from ussafety.models.loading import TINY_RANDOM
from ussafety.study.gpu_cost import GridEstimate, estimate_config, estimate_grid, refusal, visible_gpu_bytes

CPU_MODELS = ("embedded", TINY_RANDOM)
"""Models the CPU presets run; a study with any other model is a GPU study."""


def is_gpu_study(cfgs: Iterable[RunConfig]) -> bool:
    """Whether any run of the study uses a model that only a GPU runs in useful time."""
    return any(cfg.model.name not in CPU_MODELS for cfg in cfgs)


@dataclass(frozen=True)
class Target:
    """The GPU a study is estimated on (its assumed rates) and the memory runs must fit in."""

    device: str  # a DEVICES key
    gpu_bytes: int
    label: str  # for people: which GPU and how much memory


def target(device: str | None = None) -> Target:
    """``device`` (a :data:`~ussafety.models.costs.DEVICES` key) and its memory; without it,
    the visible CUDA GPU's free memory (rates of the known GPU its name matches, else the
    H200's), and without a GPU the H200."""
    if device is not None:
        if device not in DEVICES:
            raise ValueError(f"unknown device '{device}' (known: {', '.join(DEVICES)})")
        spec = DEVICES[device]
        return Target(device, spec.memory_bytes, f"the {spec.name} ({spec.memory_bytes / GiB:.1f} GiB)")
    free = visible_gpu_bytes()
    if free is None:
        spec = DEVICES["H200"]
        return Target(
            "H200",
            spec.memory_bytes,
            f"the {spec.name} ({spec.memory_bytes / GiB:.1f} GiB; no GPU visible here, pass --device for another)",
        )
    name = detect().device_name
    return Target(device_named(name) or "H200", free, f"the visible {name} ({free / GiB:.1f} GiB free)")


def study_estimate(cfgs: Iterable[RunConfig], device: str = "H200") -> tuple[GridEstimate, list[tuple[str, str]]]:
    """The grid estimate of ``cfgs`` on ``device``, and the runs the backend choice refuses
    (run name, the loader's message): they would fail before their weights load."""
    estimates, refused = [], []
    for cfg in cfgs:
        try:
            estimates.append(estimate_config(cfg, device=device))
        except BackendError as err:
            refused.append((cfg.name, str(err)))
    return estimate_grid(estimates), refused


def _short(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]


def markdown(grid: GridEstimate, where: Target, refused: Iterable[tuple[str, str]] = (), title: str = "") -> str:
    """Runs, GPU-hours, peak memory per run (GiB, by method and model) and the runs that do
    not fit ``where``, as Markdown."""
    d = grid.to_dict()
    n_trained = sum(1 for r in grid.runs if r.train_rows)
    lines = [
        f"### {title or 'GPU estimate'} ({DEVICES[where.device].name}, rates assumed until measured)",
        "",
        f"{len(grid.runs):,} runs, **{grid.gpu_hours:,.1f} GPU-hours**: training {d['train_hours']:.1f} h "
        f"({d['trainings']:,} trainings; {n_trained - d['trainings']:,} trained runs reuse an SFT training), "
        f"generation {d['generation_hours']:.1f} h, LLM judging {d['judge_hours']:.1f} h. Median run "
        f"{d['median_run_minutes']:.1f} min; largest peak {grid.peak_bytes / GiB:.1f} GiB.",
        "",
    ]
    groups = grid.groups()
    models = list(dict.fromkeys(g["model"] for g in groups))
    methods = list(dict.fromkeys(g["method"] for g in groups))
    cell = {(g["model"], g["method"]): g for g in groups}
    lines += [
        "Peak memory per run (GiB; the largest of the runs in a cell), runs and GPU-hours:",
        "",
        "| method | " + " | ".join(_short(m) for m in models) + " | runs | GPU-h |",
        "|---|" + "---:|" * (len(models) + 2),
    ]
    for method in methods:
        row = [f"{cell[(m, method)]['peak_bytes'] / GiB:.1f}" if (m, method) in cell else "-" for m in models]
        runs = sum(cell[(m, method)]["runs"] for m in models if (m, method) in cell)
        hours = sum(cell[(m, method)]["gpu_hours"] for m in models if (m, method) in cell)
        lines.append(f"| {method} | " + " | ".join(row) + f" | {runs:,} | {hours:.1f} |")
    per_model = [
        (sum(g["runs"] for g in groups if g["model"] == m), sum(g["gpu_hours"] for g in groups if g["model"] == m))
        for m in models
    ]
    lines += [
        "| runs / GPU-h | "
        + " | ".join(f"{n:,} / {h:.1f}" for n, h in per_model)
        + f" | {len(grid.runs):,} | {grid.gpu_hours:.1f} |",
        "",
    ]
    lines += fit_lines(grid, where)
    refused = list(refused)
    if refused:
        by_reason: dict[str, list[str]] = defaultdict(list)
        for name, reason in refused:
            by_reason[reason].append(name)
        lines += [
            "",
            f"**{len(refused):,} runs cannot start** (the backend choice refuses them before the weights load):",
        ]
        lines += [f"- {len(names):,} runs (e.g. `{names[0]}`): {reason}" for reason, names in by_reason.items()]
    return "\n".join(lines)


def fit_lines(grid: GridEstimate, where: Target) -> list[str]:
    """Whether every run fits ``where``; otherwise one refusal per (model, method), with the
    first such run's message (what it needs and what would help)."""
    bad = grid.not_fitting(where.gpu_bytes)
    if not bad:
        return [f"Every run fits {where.label}."]
    first: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(bad):
        first.setdefault((r.model, r.method), []).append(i)
    out = [f"**{len(bad):,} runs do not fit** {where.label}; each would be refused before its weights load:"]
    for (model, method), idx in first.items():
        out.append(f"- {_short(model)}, {method} ({len(idx):,} runs): {refusal(bad[idx[0]], where.gpu_bytes)}")
    return out


def gpu_study_report(cfgs: Iterable[RunConfig], device: str | None = None, title: str = "") -> str:
    """What ``ussafety reproduce --preset P --estimate`` prints for a GPU study: the
    estimate on ``device`` (or the visible GPU, or the H200) as Markdown."""
    where = target(device)
    grid, refused = study_estimate(cfgs, where.device)
    return markdown(grid, where, refused, title=title)
