"""Reading, validating and writing upload files: the entry points of the package."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict, Unpack

from ussafety.atomic import write_text_atomic
from ussafety.data.types import Example
from ussafety.data.upload.checks import MAX_CHARS, _Row, _Settings, _validate
from ussafety.data.upload.readers import _BOM, _detect_format, _read_csv, _read_json, _read_jsonl
from ussafety.data.upload.report import MAX_PROBLEMS, UploadResult, _Problems
from ussafety.data.upload.tokens import ControlTokenMode, _extra_tokens, _scanner

# ----------------------------------------------------------------------------- reading


class UploadOptions(TypedDict, total=False):
    """The options of :func:`read_upload` (its defaults apply to any left out): typed once, so
    :func:`load_upload` and :func:`validate_upload_report` pass them on without restating them."""

    max_chars: int
    max_problems: int
    control_tokens: ControlTokenMode
    special_tokens: Iterable[str]


def read_upload(
    path: str | Path,
    *,
    max_chars: int = MAX_CHARS,
    max_problems: int = MAX_PROBLEMS,
    control_tokens: ControlTokenMode = "refuse",
    special_tokens: Iterable[str] = (),
) -> UploadResult:
    """Parse and validate an upload without raising for its content.

    ``control_tokens``: ``"refuse"`` reports every text holding a control token,
    ``"escape"`` defuses them (``escape_control_tokens``) and records the rows.
    ``special_tokens``: the model's own special-token strings (e.g.
    ``tokenizer.all_special_tokens``), checked on top of the common templates' tokens.
    Problems are capped at ``max_problems`` (``problems_total`` still counts all).
    Each Example gets ``source="upload/<file name>"``, ``row`` = 0-based record index,
    ``sha256`` of the file bytes and ``meta`` ``{"line", "format", "schema"}`` plus
    ``"escaped": {field: [tokens]}`` on rows whose tokens were escaped.
    """
    if control_tokens not in ("refuse", "escape"):
        raise ValueError(f"control_tokens must be 'refuse' or 'escape', got {control_tokens!r}")
    p = Path(path)
    probs = _Problems(max_problems)
    result = UploadResult(
        file=str(p),
        sha256=None,
        format=None,
        rows_total=0,
        examples=[],
        problems=[],
        problems_total=0,
        escaped=[],
        schemas={},
        control_tokens=control_tokens,
    )

    def finish() -> UploadResult:
        result.problems, result.problems_total = probs.sorted(), probs.total
        return result

    try:
        data = p.read_bytes()
    except OSError as e:
        probs.add(None, None, f"cannot be read: {e.strerror or e}", kind="file")
        return finish()
    result.sha256, result.size_bytes = hashlib.sha256(data).hexdigest(), len(data)
    if not data.strip(b" \t\r\n" + _BOM):
        probs.add(None, None, "file is empty" if not data else "file contains only whitespace", kind="file")
        return finish()
    fmt = _detect_format(p, data)
    if fmt is None:
        probs.add(None, None, f"unknown format (suffix '{p.suffix}'): use .jsonl, .json or .csv", kind="file")
        return finish()
    result.format = fmt
    reader = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}[fmt]
    records, result.rows_total = reader(data, probs)
    if not result.rows_total and not probs:
        probs.add(None, None, "no data rows", kind="file")

    settings = _Settings(max_chars, control_tokens, _scanner(_extra_tokens(special_tokens)))
    seen: dict[tuple, tuple[int, int | None]] = {}
    for row, line, obj in records:
        check = _Row(row, line, probs, settings)
        schema, parts = _validate(obj, check)
        if schema is not None:
            result.schemas[schema] = result.schemas.get(schema, 0) + 1
        if parts is None:
            continue
        key = (parts.system, tuple(tuple(sorted(m.items())) for m in parts.history), parts.prompt, parts.response)
        if key in seen:
            first_row, first_line = seen[key]
            at = f" (line {first_line})" if first_line is not None else ""
            probs.add(row, None, f"exact duplicate of row {first_row}{at}", line, other_row=first_row, kind="duplicate")
            continue
        seen[key] = (row, line)
        meta: dict[str, Any] = {"line": line, "format": fmt, "schema": schema}
        if check.escaped:
            meta["escaped"] = check.escaped
            result.escaped.append({"row": row, "line": line, "fields": check.escaped})
        result.examples.append(
            Example(
                prompt=parts.prompt,
                response=parts.response,
                source=f"upload/{p.name}",
                row=row - 1,
                sha256=result.sha256,
                history=parts.history,
                system=parts.system,
                meta=meta,
            )
        )
    return finish()


def load_upload(path: str | Path, **options: Unpack[UploadOptions]) -> list[Example]:
    """Parse and validate an upload; raise one UploadError listing all problems found.

    The options are those of ``read_upload``; the returned examples carry what
    ``read_upload`` puts in their ``meta`` (including which rows were escaped).
    """
    result = read_upload(path, **options)
    if not result.ok:
        raise result.error()
    return result.examples


def validate_upload_report(path: str | Path, **options: Unpack[UploadOptions]) -> dict[str, Any]:
    """The JSON-serialisable report of an upload (``report["ok"]`` says if it is usable); the
    options are those of ``read_upload``."""
    return read_upload(path, **options).report()


# ----------------------------------------------------------------------------- writing


def write_upload(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples as an upload JSONL atomically (temp file in the same folder + os.replace).

    Rows without history/system become ``{"prompt", "response"}``, the others
    ``{"messages": [...]}``; ``meta`` is not written (an upload carries text only).
    Every example needs a response; nothing is written if one lacks it.
    """
    target = Path(path)
    lines = []
    for i, ex in enumerate(examples):
        if not isinstance(ex.response, str):
            raise ValueError(f"example {i} (source {ex.source!r}, row {ex.row}) has no response")
        rec: dict[str, Any] = (
            {"messages": ex.messages()} if ex.history or ex.system else {"prompt": ex.prompt, "response": ex.response}
        )
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    return write_text_atomic(target, "".join(lines))
