"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A killed process leaves either the old file or the whole new one, never half of it;
that is what lets a grid skip finished runs and keeps uploads intact, and what keeps a
killed analysis notebook from leaving a half-written table, scorecard or figure.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``.<name>.<random>.tmp`` beside it, fsynced and
    renamed over ``path``; the temp file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8, ``\\n`` line ends as given."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_figure_atomic(fig: Any, path: Path, **savefig_kw: Any) -> Path:
    """``fig.savefig(path, **savefig_kw)``, atomically: the figure is rendered in memory in
    the format of ``path``'s suffix (``.png``, ``.pdf``, ...) and written with
    :func:`write_bytes_atomic`, so a kill leaves the old figure or the whole new one."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=savefig_kw.pop("format", None) or path.suffix.lstrip(".").lower(), **savefig_kw)
    return write_bytes_atomic(path, buf.getvalue())
