"""Where a report's files and evidence go: the shared ``records/`` folder beside the reports,
the list of records under a table, and the hand-written notes appended to it.

Why apart from :mod:`ussafety.study.tables` (which computes the rows): these decide only
where things are written, the same way for the phenomenon and the methods reports.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ussafety.atomic import write_text_atomic
from ussafety.paths import runs_dir


def records_home(out_dir: Path) -> Path:
    """Where a report beside ``out_dir`` keeps its evidence: one ``records/`` folder next to
    the reports' folders (``paper_outputs/records``), shared by the phenomenon, methods and
    study outputs, so a record used by several tables is stored once."""
    return out_dir.parent / "records"


def record_lines(names: list[str], df: pd.DataFrame) -> list[str]:
    """``- `<name>`: `../records/<run id>/record.json` (commit ...)`` per row: where each
    number of the table comes from."""
    return [
        f"- `{name}`: `../records/{run_id}/record.json` (commit `{str(commit)[:10]}`)"
        for name, run_id, commit in zip(names, df.run_id, df.git_commit)
    ]


def exports_to(root: Path | None, home: Path) -> bool:
    """Whether a report read from ``root`` copies its records into ``home``: not when it
    was regenerated from ``home`` itself (``--runs paper_outputs/records``)."""
    return (root or runs_dir()).resolve() != home.resolve()


def write_markdown(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` with the hand-written ``notes.md`` beside ``path`` appended: the
    reading of the table is kept by a person, the numbers by code."""
    notes = path.parent / "notes.md"
    if notes.is_file():
        lines = [*lines, "", notes.read_text(encoding="utf-8").strip()]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
