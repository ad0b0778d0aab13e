"""From run records to tables: per-condition ASR with Wilson CIs and paired tests.

Paired tests match prompts across runs by ``(source file, row)``, so two runs are
compared only on the prompts both saw. Every number written to ``paper_outputs/``
is computed here from :class:`~ussafety.records.Record` objects, never typed in; the
condition row and the McNemar test against a reference run exist here once and serve
the phenomenon and the methods reports alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.config import RunConfig, load_config, run_id
from ussafety.paths import PROJECT_ROOT
from ussafety.records import Record, load_record, record_path, write_record
from ussafety.stats import holm_correction, mcnemar_exact, wilson_interval

NAN = float("nan")

Outcomes = dict[tuple[str, int], bool]


def paired_mcnemar(a: Outcomes, b: Outcomes) -> tuple[float, int]:
    """Exact McNemar p-value of ``a`` vs ``b`` on their shared prompts, and how many."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return NAN, 0
    return mcnemar_exact([a[k] for k in keys], [b[k] for k in keys]).p_value, len(keys)


def train_cost_s(record: Record) -> tuple[float, float]:
    """``(train wall s, finalize s)`` of a run; 0 for a run that trained nothing (a base
    model is evaluated as it is), so costs add up across conditions without special cases."""
    train = record.train
    if train is None:
        return 0.0, 0.0
    return float(train.wall_s or 0.0), float(train.finalize_s or 0.0)


def condition_row(
    name: str, record: Record, reference: Record | None, judge: str | None = None, reference_label: str = "aligned"
) -> dict[str, Any]:
    """One table row: ASR (Wilson 95% CI), paired p vs ``reference``, over-refusal, task score.

    The ASR is recomputed from the per-prompt verdicts (not copied from ``metrics``) so
    that it is the same numbers the paired test sees.
    """
    judge = judge or record.metrics.primary_judge
    outcomes = record.outcomes(judge)
    hits, n = sum(outcomes.values()), len(outcomes)
    lo, hi = wilson_interval(hits, n)
    p = paired_mcnemar(outcomes, reference.outcomes(judge))[0] if reference is not None else NAN
    m = record.metrics
    asr_m = m.asr[judge]
    return {
        "condition": name,
        "n_prompts": n,
        "asr": hits / n if n else NAN,
        "asr_ci_low": lo,
        "asr_ci_high": hi,
        f"p_vs_{reference_label}": p,
        "over_refusal": m.over_refusal.rate if m.over_refusal else NAN,
        "task": m.task.name if m.task else None,
        "task_score": m.task.score if m.task else NAN,
        "degenerate_rate": NAN if asr_m.degenerate_rate is None else asr_m.degenerate_rate,
        "train_wall_s": train_cost_s(record)[0],
        "judge": judge,
        "prompt_sets": ", ".join(f"{s} {v.n}" for s, v in asr_m.by_set.items()),
        "run_id": record.run_id,
        "git_commit": record.git.commit,
        **{f"asr_{s}": v.asr for s, v in asr_m.by_set.items()},
    }


def with_holm(df: pd.DataFrame, p_column: str) -> pd.DataFrame:
    """Add ``<p_column>_holm``: the tested rows' p-values Holm-adjusted together (the
    reference row, untested, stays nan)."""
    tested = df[p_column].notna()
    df[f"{p_column}_holm"] = NAN
    if tested.any():
        df.loc[tested, f"{p_column}_holm"] = holm_correction(df.loc[tested, p_column].tolist())
    return df


def condition_table(
    records: Mapping[str, Record],
    reference: str,
    judge: str | None = None,
    reference_label: str | None = None,
    holm: bool = False,
) -> pd.DataFrame:
    """A row per condition, in the given order, each compared with ``records[reference]``
    on the same prompts (no p-value at all when the reference has no record); ``holm``
    adds the Holm-adjusted p-values of all compared conditions."""
    ref = records.get(reference)
    label = reference_label or reference
    df = pd.DataFrame(
        [condition_row(name, rec, None if name == reference else ref, judge, label) for name, rec in records.items()]
    )
    if holm and not df.empty:
        df = with_holm(df, f"p_vs_{label}")
    return df


def find_record(cfg: RunConfig, roots: Iterable[Path]) -> Record | None:
    """The record of ``cfg`` (by its run id) in the first of ``roots`` that has it."""
    for root in roots:
        if (record := load_record(run_id(cfg), root)) is not None:
            return record
    return None


def records_for(
    params_files: Iterable[Path], roots: Iterable[Path]
) -> tuple[dict[str, Record], list[tuple[str, Path]]]:
    """The record of each params file's current config, by its run id, keyed by the
    file's label (``name``), in the files' order; and ``(label, file)`` of those with none."""
    roots = list(roots)
    found: dict[str, Record] = {}
    missing: list[tuple[str, Path]] = []
    for path in params_files:
        cfg = load_config(path)
        record = find_record(cfg, roots)
        if record is None:
            missing.append((cfg.name, path))
        else:
            found[cfg.name] = record
    return found, missing


def export_records(records: Iterable[Record], dest: Path) -> None:
    """Copy records into ``dest/<run_id>/record.json`` (the runs-folder layout), so the
    evidence of a table travels with the repository and ``--runs dest`` regenerates it."""
    for record in records:
        write_record(record, record_path(record.run_id, dest))


def markdown_table(df: pd.DataFrame, columns: list[str], digits: int = 3) -> str:
    """A plain Markdown table (no extra dependency) of ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else (f"{v:.2g}" if 0 < abs(v) < 10**-digits else f"{v:.{digits}f}")
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


def shown(path: Path) -> Path:
    """``path`` relative to the project, as a command or a link in a committed report shows it
    (absolute where it lies outside, e.g. a test's temporary folder)."""
    try:
        return Path(path).resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        return Path(path)


def per_set_columns(df: pd.DataFrame) -> list[str]:
    """The per-prompt-set ASR columns (``asr_<set>``) of a condition table."""
    return [c for c in df.columns if c.startswith("asr_") and not c.startswith("asr_ci")]
