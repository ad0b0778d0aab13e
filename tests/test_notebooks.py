"""The study notebooks: generated from notebooks/build.py, thin, executable under papermill
on the smoke preset, and `ussafety reproduce` resumes instead of redoing finished work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ussafety.study import reproduce as rp
from ussafety.study.grid import expand

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def test_notebooks_are_generated_and_thin() -> None:
    out = subprocess.run([sys.executable, str(NOTEBOOKS / "build.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in rp.NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        cells = nb.cells
        assert cells[0].cell_type == "markdown" and "colab.research.google.com/github/" in cells[0].source
        assert f"/blob/main/notebooks/{name}.ipynb" in cells[0].source
        assert "except ImportError" in cells[1].source and "pip" in cells[1].source
        assert "default_preset()" in cells[1].source
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "preset = None" in tagged[0].source
        code = [c.source for c in cells if c.cell_type == "code"]
        assert not any("def " in src or "class " in src for src in code), name  # no logic of its own
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code")


def test_reproduce_smoke_executes_every_notebook_then_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    runs = tmp_path / "runs"
    report = rp.reproduce("smoke", out=out, runs_dir=runs, log_output=False, progress_bar=False)
    assert [r["status"] for r in report] == ["executed"] * 5
    for name in rp.NOTEBOOKS:
        nb = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, (name, errors)
        assert any(c.cell_type == "code" and c.get("outputs") for c in nb.cells), name
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "smoke" in injected[0].source
    assert (out / "scorecard.md").read_text().startswith("# Scorecard")
    for table in ("conditions", "significance", "ablations"):
        assert (out / "tables" / f"{table}.tex").is_file()
    assert (out / "figures" / "safety_utility.pdf").is_file()
    n_runs = len({r.run_id for r in expand("smoke")})
    assert len(list(runs.glob("*/record.json"))) == n_runs
    assert len(list((out / "records").glob("*/record.json"))) == n_runs  # the evidence, exported

    # A second call: nothing changed, so no notebook is executed again.
    import papermill

    def boom(*a, **k):
        raise AssertionError("an unchanged notebook must not run again")

    monkeypatch.setattr(papermill, "execute_notebook", boom)
    again = rp.reproduce("smoke", out=out, runs_dir=runs, log_output=False, progress_bar=False)
    assert [r["status"] for r in again] == ["skipped"] * 5

    # After a kill in the merging notebook (its run's record lost, the notebook unfinished),
    # merging runs again, and so does every notebook that reads that record.
    calls: list[str] = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **k: calls.append(Path(src).stem))
    state = json.loads((out / "notebooks" / rp.STATE).read_text())
    del state["merging"]
    (out / "notebooks" / rp.STATE).write_text(json.dumps(state))
    lost = expand("smoke", "merging")[0].run_id
    shutil.rmtree(runs / lost)
    rp.reproduce("smoke", out=out, runs_dir=runs, log_output=False, progress_bar=False)
    readers = [nb for nb in ("benign", "poisoned", "ablations") if lost in {r.run_id for r in expand("smoke", nb)}]
    assert calls == [*readers, "merging", "analysis"]
