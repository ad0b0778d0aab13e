"""Where things live: the data mirror, the model/alignment cache and run records.

Every location can be overridden by an environment variable so that CI, a laptop
and a Colab machine use the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    """The local data mirror (laid out like ``../shared/data``), or None when absent.

    Order: ``$USSAFETY_DATA_DIR``; ``<project>/../shared/data``; ``./shared/data``;
    ``../shared/data`` relative to the working directory. None means "use the hub".
    """
    env = os.environ.get("USSAFETY_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"USSAFETY_DATA_DIR={env} is not a directory")
        return path
    for cand in (
        PROJECT_ROOT.parent / "shared" / "data",
        Path.cwd() / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
    ):
        if (cand / "MANIFEST.json").is_file():
            return cand
    return None


def cache_dir() -> Path:
    """Converted models and aligned bases (``$USSAFETY_CACHE``, default ``<project>/.cache``)."""
    path = Path(os.environ.get("USSAFETY_CACHE", PROJECT_ROOT / ".cache")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Run records (``$USSAFETY_RUNS``, default ``<project>/runs``)."""
    path = Path(os.environ.get("USSAFETY_RUNS", PROJECT_ROOT / "runs")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
