"""What a kill leaves, handled without a model: the executed notebook is replaced only by a
whole one, and a resumed run clears its killed attempt's temporary files first.
(tests/test_resume.py shows both under real SIGKILLs.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from ussafety.pipeline import clear_leftovers
from ussafety.study.reproduce import execute_atomically, partial_path

SOURCE = Path(__file__).resolve().parent.parent / "notebooks" / "analysis.ipynb"


def test_a_killed_execution_leaves_the_previous_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "analysis.ipynb"
    target.write_text('{"previous": "complete"}')

    def killed(src: str, dst: str, **kw: Any) -> None:
        Path(dst).write_text('{"cells": [')  # a save cut short
        raise KeyboardInterrupt  # stands for the kill: nothing after it runs

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    with pytest.raises(KeyboardInterrupt):
        execute_atomically(SOURCE, target)
    assert target.read_text() == '{"previous": "complete"}'
    assert partial_path(target).name == ".analysis.ipynb.partial" and partial_path(target).is_file()

    def finishes(src: str, dst: str, **kw: Any) -> None:
        Path(dst).write_text('{"new": "complete"}')

    monkeypatch.setattr(papermill, "execute_notebook", finishes)
    execute_atomically(SOURCE, target)
    assert target.read_text() == '{"new": "complete"}' and not partial_path(target).exists()


def test_a_cell_error_shows_in_the_output_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "analysis.ipynb"

    def fails(src: str, dst: str, **kw: Any) -> None:
        Path(dst).write_text('{"error": "shown"}')
        raise PapermillExecutionError(0, 1, "boom", "ValueError", "boom", [])

    monkeypatch.setattr(papermill, "execute_notebook", fails)
    with pytest.raises(PapermillExecutionError):
        execute_atomically(SOURCE, target)
    assert target.read_text() == '{"error": "shown"}' and not partial_path(target).exists()


def test_a_resumed_run_clears_its_killed_attempts_temporary_files(tmp_path: Path) -> None:
    run = tmp_path / "sft-sst2-s0-0123456789"
    (run / "adapter").mkdir(parents=True)
    (run / ".adapter-k2j3" / "sub").mkdir(parents=True)
    kept = [run / "adapter" / "adapter_config.json", run / "notes.txt"]
    for path in kept:
        path.write_text("{}")
    junk = [run / ".record.json.x1y2.tmp", run / "adapter" / ".README.md.a9.tmp"]
    for path in junk:
        path.write_text("half")
    removed = clear_leftovers(run)
    assert sorted(removed) == sorted([*junk, run / ".adapter-k2j3"])
    assert all(p.exists() for p in kept) and not any(p.exists() for p in removed)
    assert clear_leftovers(tmp_path / "never-started") == []
