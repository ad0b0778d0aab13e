"""What reading an upload found: its problems, the error to raise and the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ussafety.data.types import Example
from ussafety.data.upload.tokens import ControlTokenMode

MAX_PROBLEMS = 20

#: Problem kinds: a fixed vocabulary so that platform tooling can count and route them.
PROBLEM_KINDS = (
    "file",  # the file as a whole: unreadable, empty, unknown format, no data rows
    "encoding",  # not valid UTF-8
    "parse",  # invalid JSON, wrong CSV cell count, content after the JSON list
    "csv_quote",  # a CSV quoted field never closed, or text after a closing quote
    "format",  # a row or CSV header that matches no accepted format
    "missing_field",  # a required field absent or null
    "wrong_type",  # a field (or row) of the wrong JSON type
    "empty",  # a required text, or a message list, that is empty
    "too_long",  # a text over ``max_chars``
    "role",  # a chat role unknown or out of order
    "duplicate",  # an exact repeat of an earlier row
    "control_token",  # a chat-template control token inside a text
    "control_char",  # NUL, other C0/C1 controls, DEL or a bidi override inside a text
)


@dataclass(frozen=True)
class UploadProblem:
    """One thing wrong with an upload, located as precisely as the format allows."""

    row: int | None
    field: str | None
    message: str
    kind: str
    line: int | None = None
    other_row: int | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.line is not None:
            where.append(f"line {self.line}" if not where else f"(line {self.line})")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (" ".join(where) + ": " if where else "") + self.message

    def to_dict(self) -> dict[str, Any]:
        """The report's form of a problem (``other_row`` only for duplicates)."""
        out: dict[str, Any] = {
            "row": self.row,
            "line": self.line,
            "field": self.field,
            "kind": self.kind,
            "message": self.message,
        }
        if self.other_row is not None:
            out["other_row"] = self.other_row
        return out


class UploadError(ValueError):
    """An upload that cannot be trained on; ``problems`` lists everything found.

    ``file``, ``row``, ``line`` and ``field`` repeat the first problem so that simple
    callers (and a UI) can point at it without walking the list. ``str()`` is the
    multi-line message for a person; it needs no traceback.
    """

    def __init__(self, file: str | Path, problems: list[UploadProblem], total: int | None = None):
        if not problems:
            raise ValueError("UploadError needs at least one problem")
        self.file = str(file)
        self.problems = list(problems)
        self.total = max(total or 0, len(self.problems))
        first = self.problems[0]
        self.row, self.line, self.field = first.row, first.line, first.field
        lines = [f"{self.file}: {self.total} problem{'s' if self.total != 1 else ''} in upload"]
        lines += [f"  {self.file}: {p}" for p in self.problems]
        if self.total > len(self.problems):
            lines.append(f"  ... and {self.total - len(self.problems)} more not shown")
        super().__init__("\n".join(lines))


class _Problems:
    """Collects problems up to a cap while still counting the rest."""

    def __init__(self, cap: int):
        self.cap, self.total = max(1, cap), 0
        self.items: list[UploadProblem] = []

    def add(
        self,
        row: int | None,
        field: str | None,
        message: str,
        line: int | None = None,
        other_row: int | None = None,
        *,
        kind: str,
    ) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.total += 1
        if len(self.items) < self.cap:
            self.items.append(UploadProblem(row, field, message, kind, line, other_row))

    def __bool__(self) -> bool:
        return self.total > 0

    def sorted(self) -> list[UploadProblem]:
        """File-level problems first, then by row (reading and validation find them apart)."""
        return sorted(self.items, key=lambda p: (p.row is not None, p.row or 0, p.line or 0))


@dataclass
class UploadResult:
    """Everything reading an upload found: the clean rows and every problem.

    ``examples`` holds the rows that passed every check even when others failed; an
    upload is trained on only when ``ok``. ``escaped`` lists the accepted rows whose
    control tokens were defused (``control_tokens="escape"``), one entry per row:
    ``{"row", "line", "fields": {field: [tokens]}}``.
    """

    file: str
    sha256: str | None
    format: str | None
    rows_total: int
    examples: list[Example]
    problems: list[UploadProblem]
    problems_total: int
    escaped: list[dict[str, Any]]
    schemas: dict[str, int]
    control_tokens: ControlTokenMode
    size_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    def error(self) -> UploadError:
        """The UploadError to raise for a bad upload (only valid when not ``ok``)."""
        return UploadError(self.file, self.problems, self.problems_total)

    def report(self) -> dict[str, Any]:
        """The JSON-serialisable report for platform engineers (schema in docs/uploads.md)."""
        return {
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format": self.format,
            "schemas": dict(self.schemas),
            "control_tokens": self.control_tokens,
            "rows_total": self.rows_total,
            "rows_accepted": len(self.examples),
            "ok": self.ok,
            "problems_total": self.problems_total,
            "problems": [p.to_dict() for p in self.problems],
            "escaped": [dict(e) for e in self.escaped],
        }
