"""Run records: one JSON file per run, everything needed to trust and regenerate a number.

A record holds the resolved config and its hash, the seed, the git commit, package
versions, the sha256 of every data file used, metrics, timings and every generation
with its verdicts. Records are written atomically (temp file + rename), so a killed
run leaves either a whole record or none, and a run whose record exists is skipped.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from ussafety.atomic import write_text_atomic
from ussafety.paths import PROJECT_ROOT, runs_dir

RECORD = "record.json"


def git_state() -> dict[str, Any]:
    """Commit of the code that made the run, and whether the tree had local edits."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
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


def run_dir(run_id: str, root: Path | None = None) -> Path:
    return (root or runs_dir()) / run_id


def record_path(run_id: str, root: Path | None = None) -> Path:
    return run_dir(run_id, root) / RECORD


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str))


def new_record(run_id: str, config: dict[str, Any], config_hash: str, seed: int) -> dict[str, Any]:
    return {"run_id": run_id, "config": config, "config_hash": config_hash, "seed": seed,
            "git": git_state(), "versions": package_versions(), "argv": sys.argv,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_record(record: dict[str, Any], root: Path | None = None) -> Path:
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = record_path(record["run_id"], root)
    write_json_atomic(path, record)
    return path


def load_record(run_id: str, root: Path | None = None) -> dict[str, Any] | None:
    path = record_path(run_id, root)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def iter_records(root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Every finished record under ``root`` (default: the runs folder)."""
    for path in sorted((root or runs_dir()).glob(f"*/{RECORD}")):
        yield json.loads(path.read_text(encoding="utf-8"))
