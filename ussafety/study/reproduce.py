"""``ussafety reproduce``: run the study notebooks with papermill, in order, resumably.

benign -> poisoned -> ablations -> merging run their grids (a run whose record exists is
skipped), then analysis writes the tables, figures and scorecard. Executed notebooks
are kept under ``<out>/notebooks/``. After each notebook that finishes, a fingerprint
of its inputs is stored in ``<out>/notebooks/reproduce.json``: the notebook file, its
parameters, the analysis code (:data:`ANALYSIS_CODE`), and the run ids of its grid (for
analysis: of the whole study) with their records' finish times. A later call skips a notebook whose
fingerprint is unchanged; after a kill, the notebook that was running starts again
and its finished runs are skipped through their records.

papermill saves the notebook it executes after every cell, by rewriting the file in place,
so a kill leaves a partly executed notebook, or a truncated one if it lands during a save.
It therefore writes to a hidden ``.<name>.ipynb.partial`` beside the output, which replaces
``<name>.ipynb`` (rename: atomic) when the execution ends, finished or at a cell error:
the output is the previous complete notebook or the new one, never part of one
(``tests/test_resume.py`` kills ``ussafety reproduce`` with SIGKILL and resumes it). The
kernel dies with its parent: ipykernel polls for it (``JPY_PARENT_PID``, once a second).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from ussafety.atomic import write_text_atomic
from ussafety.paths import PROJECT_ROOT
from ussafety.progress import progress_enabled

NOTEBOOKS = ("benign", "poisoned", "ablations", "merging", "analysis")
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
STATE = "reproduce.json"


ANALYSIS_CODE = ("study", "records", "stats")
"""The modules (packages or single files) that turn records into what the notebooks show: a
change re-runs them. (A run's own code is not an input: runs are keyed by their config, as
everywhere.) Named without ``.py`` so a module split into a package stays covered."""


def _module_files(name: str) -> list[Path]:
    """The source files of module ``name`` under ``ussafety/``: a package's, or the one file."""
    package, single = PROJECT_ROOT / "ussafety" / name, PROJECT_ROOT / "ussafety" / f"{name}.py"
    if package.is_dir():
        return sorted(package.rglob("*.py"))
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"reproduce.ANALYSIS_CODE names ussafety.{name}, which does not exist")


def source_hash() -> str:
    """sha256 of :data:`ANALYSIS_CODE`."""
    h = hashlib.sha256()
    for name in ANALYSIS_CODE:
        for file in _module_files(name):
            h.update(str(file.relative_to(PROJECT_ROOT)).encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def notebook_inputs(nb: str, preset: str, root: Path | None) -> list[tuple[str, str | None]]:
    """``(run_id, finish time or None)`` of the runs ``nb`` reads."""
    from ussafety.records.store import load_record
    from ussafety.study.grid import expand, load_study, unique_runs

    study = load_study(preset)
    grids = None if nb == "analysis" else [nb] if nb in study.grids else []
    runs = unique_runs(expand(study, grids)) if grids is None or grids else []
    out = []
    for r in runs:
        rec = load_record(r.run_id, root)
        out.append((r.run_id, rec.finished if rec else None))
    return out


def fingerprint(nb: str, params: dict[str, Any], preset: str, root: Path | None, code: str) -> str:
    h = hashlib.sha256()
    h.update((NOTEBOOK_DIR / f"{nb}.ipynb").read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(code.encode())
    h.update(json.dumps(notebook_inputs(nb, preset, root)).encode())
    return h.hexdigest()


def partial_path(target: Path) -> Path:
    """Where papermill writes ``target`` while it executes (see the module docstring)."""
    return target.with_name(f".{target.name}.partial")


def execute_atomically(source: Path, target: Path, **papermill_kw: Any) -> None:
    """``papermill.execute_notebook(source, target)`` with ``target`` replaced only by a
    whole notebook: finished, or stopped at a cell error (papermill saves it with the error
    shown, then raises; it is moved into place first, where the user looks). Any other end
    (a kill, Ctrl-C, a dead kernel) leaves ``target`` as it was."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    partial = partial_path(target)
    partial.unlink(missing_ok=True)  # a kill's leftover: this execution starts afresh
    try:
        pm.execute_notebook(str(source), str(partial), **papermill_kw)
    except PapermillExecutionError:
        os.replace(partial, target)
        raise
    if partial.is_file():  # papermill always writes it; a test's stand-in may not
        os.replace(partial, target)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def reproduce(
    preset: str = "cpu",
    out: Path | None = None,
    runs_dir: Path | None = None,
    only: Iterable[str] | None = None,
    force: bool = False,
    log_output: bool = True,
    progress_bar: bool = True,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Execute the notebooks of ``preset`` in order; return what happened to each.

    There is no bootstrap size to pass: every interval uses :data:`ussafety.stats.N_BOOT`,
    and a change of it changes :func:`source_hash`, so the analysis runs again.
    """
    from ussafety.study.grid import load_study
    from ussafety.study.outputs import default_out_dir

    stream = stream or sys.stdout
    study = load_study(preset)  # fails early on an unknown preset
    out = Path(out) if out else default_out_dir(preset)
    nb_out = out / "notebooks"
    nb_out.mkdir(parents=True, exist_ok=True)
    state_path = nb_out / STATE
    state = _load_state(state_path)
    wanted = list(only) if only else list(NOTEBOOKS)
    unknown = set(wanted) - set(NOTEBOOKS)
    if unknown:
        raise ValueError(f"unknown notebook(s) {sorted(unknown)} (known: {', '.join(NOTEBOOKS)})")
    order = [nb for nb in NOTEBOOKS if nb in wanted]
    params = {
        "preset": str(preset),
        "runs_dir": str(Path(runs_dir).resolve()) if runs_dir else None,
        "out_dir": str(out.resolve()),
        "run_grid": True,
    }
    if log_output:
        logger = logging.getLogger("papermill")
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter("    %(message)s"))
            logger.addHandler(handler)
            logger.propagate = False
    code = source_hash()
    root = Path(runs_dir) if runs_dir else None
    report: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for i, nb in enumerate(order, 1):
        target = nb_out / f"{nb}.ipynb"
        if nb != "analysis" and nb not in study.grids:
            print(
                f"[{i}/{len(order)}] {nb}: the {study.preset} study has no such grid, skipped", file=stream, flush=True
            )
            report.append({"notebook": nb, "status": "no grid"})
            continue
        fp = fingerprint(nb, params, preset, root, code)
        if not force and target.is_file() and state.get(nb, {}).get("fingerprint") == fp:
            print(
                f"[{i}/{len(order)}] {nb}: inputs unchanged since {state[nb]['finished']}, skipped ({target})",
                file=stream,
                flush=True,
            )
            report.append({"notebook": nb, "status": "skipped", "path": str(target)})
            continue
        print(f"[{i}/{len(order)}] {nb}: executing -> {target}", file=stream, flush=True)
        t0 = time.perf_counter()
        execute_atomically(
            NOTEBOOK_DIR / f"{nb}.ipynb",
            target,
            parameters=params,
            cwd=str(PROJECT_ROOT),
            progress_bar=progress_bar and progress_enabled(),  # the package's rule: ussafety.progress
            log_output=log_output,
            kernel_name="python3",
        )
        wall = time.perf_counter() - t0
        state[nb] = {
            "fingerprint": fingerprint(nb, params, preset, root, code),
            "wall_s": round(wall, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_text_atomic(state_path, json.dumps(state, indent=1, sort_keys=True))
        print(f"[{i}/{len(order)}] {nb}: done in {wall:.0f} s", file=stream, flush=True)
        report.append({"notebook": nb, "status": "executed", "path": str(target), "wall_s": wall})
    print(
        f"reproduce {study.preset}: {sum(r['status'] == 'executed' for r in report)} executed, "
        f"{sum(r['status'] == 'skipped' for r in report)} skipped in {time.perf_counter() - t_all:.0f} s; "
        f"outputs in {out}",
        file=stream,
        flush=True,
    )
    return report
