"""Where records live and how they are written and read: the only module that touches them.

One JSON file per run (``<runs>/<run_id>/record.json``), written atomically (temp file +
rename), so a killed run leaves either a whole record or none, and a run whose record
exists is skipped. Reading validates against :class:`~ussafety.records.schema.Record`.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ussafety.atomic import write_text_atomic
from ussafety.paths import PROJECT_ROOT, runs_dir
from ussafety.records.schema import Record

RECORD = "record.json"


class RecordError(ValueError):
    """A record file that does not match the schema; names the file and the fields."""


def git_state() -> dict[str, Any]:
    """Commit of the code that made the run, and whether the tree had local edits."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("ussafety", "torch", "transformers", "peft", "accelerate", "datasets", "unsloth"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_dir(run_id: str, root: Path | None = None) -> Path:
    return (root or runs_dir()) / run_id


def record_path(run_id: str, root: Path | None = None) -> Path:
    return run_dir(run_id, root) / RECORD


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str))


def provenance() -> dict[str, Any]:
    """The fields of a record that say which code, packages and command made it."""
    return {"git": git_state(), "versions": package_versions(), "argv": list(sys.argv), "started": now()}


def save_record(record: Record, root: Path | None = None) -> Path:
    """Write a finished run's record atomically; sets ``finished``."""
    record.finished = now()
    return write_record(record, record_path(record.run_id, root))


def write_record(record: Record, path: Path) -> Path:
    """Write ``record`` to ``path`` atomically with the fields it was read or built with plus
    those assigned since: a copied or re-judged record keeps its bytes apart from what was
    added (fields the schema gained after the file was written are not filled with defaults)."""
    write_json_atomic(path, record.model_dump(mode="json", exclude_unset=True))
    return path


def parse_record(data: Any, where: str) -> Record:
    try:
        return Record.model_validate(data)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:10]]
        more = f"\n  ... {err.error_count() - 10} more" if err.error_count() > 10 else ""
        raise RecordError(f"{where}: not a valid run record:\n  " + "\n  ".join(problems) + more) from None


def read_record(path: Path) -> Record:
    """The record in ``path`` (a ``record.json``), validated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not JSON ({err})") from None
    return parse_record(data, str(path))


def load_record(run_id: str, root: Path | None = None) -> Record | None:
    path = record_path(run_id, root)
    return read_record(path) if path.is_file() else None


def iter_records(root: Path | None = None) -> Iterator[Record]:
    """Every finished record under ``root`` (default: the runs folder)."""
    for path in sorted((root or runs_dir()).glob(f"*/{RECORD}")):
        yield read_record(path)
