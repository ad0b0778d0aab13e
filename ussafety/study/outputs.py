"""Everything the study analysis writes: tables (CSV, Markdown, LaTeX), figures (PNG, PDF),
``scorecard.md`` and, for small studies, the records behind them.

This is what the ``analysis`` notebook and ``ussafety reproduce`` call; a table regenerated
from the same records is the same file (seeded bootstraps, fixed sort order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.atomic import write_text_atomic
from ussafety.records import record_path, write_record
from ussafety.study.compare import ablation_table, category_table, condition_table, significance_table
from ussafety.study.conditions import MAIN_GRIDS, StudyData, load_study_data
from ussafety.study.formatting import (
    CAPTIONS,
    display_ablations,
    display_conditions,
    display_significance,
    latex,
    markdown,
)
from ussafety.study.power import write_power_table
from ussafety.study.scorecard import scorecard, scorecard_markdown

EXPORT_LIMIT = 200
"""Studies with at most this many records export them beside the outputs by default."""


def default_out_dir(preset: Any) -> Path:
    """``paper_outputs/`` for the README's main study (``cpu``), else ``paper_outputs/<preset>/``."""
    from ussafety.paths import PROJECT_ROOT
    from ussafety.study.grid import load_study

    name = load_study(preset).preset
    return PROJECT_ROOT / "paper_outputs" if name == "cpu" else PROJECT_ROOT / "paper_outputs" / name


def write_table(raw: pd.DataFrame, shown: pd.DataFrame, base: Path, caption: str) -> list[Path]:
    """``base.csv`` (raw numbers), ``base.md`` and ``base.tex`` (formatted, with ``caption``)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(base.with_suffix(".csv"), raw.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(base.with_suffix(".md"), markdown(shown, caption) + "\n")
    write_text_atomic(base.with_suffix(".tex"), latex(shown, caption, f"tab:{base.stem}"))
    return [base.with_suffix(s) for s in (".csv", ".md", ".tex")]


def write_outputs(
    preset: Any, out_dir: Path, root: Path | None = None, figures: bool = True, export_records: bool | None = None
) -> dict[str, Any]:
    """Tables, figures and ``scorecard.md`` of ``preset``'s study from the records under ``root``.

    ``export_records`` (default: when the study has at most :data:`EXPORT_LIMIT` records)
    copies the records used to ``out_dir/records/<run_id>/record.json``, so the evidence
    travels with the outputs and ``--runs out_dir/records`` regenerates them. Returns the
    frames and the written paths, for a notebook to show. Runs without a record are only
    counted (``data.missing``): nothing is run here.
    """
    data = load_study_data(preset, root)
    stale = stale_records(data.missing, root)
    if export_records is None:
        export_records = len(data.runs) <= EXPORT_LIMIT
    dest = Path(out_dir) / "records"
    if export_records and (root is None or Path(root).resolve() != dest.resolve()):
        for run in data.runs:
            write_record(run.record, record_path(run.run_id, dest))
    return write_outputs_from(data, out_dir, figures=figures, stale=stale)


def stale_records(missing: list[str], root: Path | None = None) -> dict[str, str]:
    """``{missing run id: record of the same run name with another id}``: a run whose code or
    config changed since its record was made (e.g. a method rewritten), so the scorecard can
    say why its rows are missing rather than fail or stay silent."""
    from ussafety.paths import runs_dir

    folder = Path(root) if root is not None else runs_dir()
    out = {}
    for rid in missing:
        older = sorted(
            p.parent.name for p in folder.glob(f"{rid.rsplit('-', 1)[0]}-*/record.json") if p.parent.name != rid
        )
        if older:
            out[rid] = older[-1]
    return out


def write_outputs_from(
    data: StudyData, out_dir: Path, figures: bool = True, stale: dict[str, str] | None = None
) -> dict[str, Any]:
    """:func:`write_outputs` for runs already loaded (any records, e.g. synthetic ones);
    ``stale``: see :func:`stale_records`."""
    out_dir = Path(out_dir)
    tables, figs = out_dir / "tables", out_dir / "figures"
    cond = condition_table(data, MAIN_GRIDS)
    every = condition_table(data, None)
    sig = significance_table(data, MAIN_GRIDS)
    abl = ablation_table(data)
    written = []
    written += write_table(cond, display_conditions(cond), tables / "conditions", CAPTIONS["conditions"])
    written += write_table(sig, display_significance(sig), tables / "significance", CAPTIONS["significance"])
    if not abl.empty:
        written += write_table(abl, display_ablations(abl), tables / "ablations", CAPTIONS["ablations"])
    cats = category_table(data, MAIN_GRIDS)
    if not cats.empty:
        write_text_atomic(tables / "categories.csv", cats.to_csv(index=False, float_format="%.6g"))
        written.append(tables / "categories.csv")
    claims = scorecard(data)
    write_text_atomic(out_dir / "scorecard.md", scorecard_markdown(claims, data, stale=stale))
    written.append(out_dir / "scorecard.md")
    written += write_power_table(out_dir)
    fig_paths: dict[str, list[Path]] = {}
    if figures:
        from ussafety.study import plots

        fig_paths = plots.all_figures(cond, every, abl, figs)
        written += [p for ps in fig_paths.values() for p in ps]
    return {
        "data": data,
        "conditions": cond,
        "all_conditions": every,
        "significance": sig,
        "ablations": abl,
        "categories": cats,
        "claims": claims,
        "figures": fig_paths,
        "written": written,
    }
