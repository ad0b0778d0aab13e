"""The upload's file formats: detect JSONL, JSON or CSV and split it into records.

Each reader returns ``(records, rows_total)`` with records ``(row, line, object)`` and
reports decoding and parsing problems; the objects are validated in ``checks``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from ussafety.data.upload.report import _Problems

_BOM = b"\xef\xbb\xbf"
_BLANK = " \t\r\n\f\v"
_CSV_QUOTED_BODY = re.compile(r'[^"]*(?:""[^"]*)*"')  # after an opening quote, up to the close
_CSV_FIELD_END = re.compile(r"[,\n]")


def _detect_format(p: Path, data: bytes) -> str | None:
    first = data.lstrip(_BOM + b" \t\r\n")[:1]
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "jsonl" if first == b"{" else "json"
    if suffix == ".csv":
        return "csv"
    return {b"[": "json", b"{": "jsonl"}.get(first)


def _decode_lines(data: bytes, probs: _Problems, row_of_line: bool) -> list[str | None]:
    """Decode line by line so that every bad line is reported with its byte offset.

    Undecodable lines come back as None when ``row_of_line`` (JSONL: the record is
    skipped), else decoded with replacement characters so parsing can go on and
    surface further problems (the upload is rejected anyway).
    """
    offset = len(_BOM) if data.startswith(_BOM) else 0
    out: list[str | None] = []
    row = 0
    for number, raw in enumerate(data[offset:].split(b"\n"), start=1):
        if row_of_line and raw.strip(_BLANK.encode()):
            row += 1
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            probs.add(
                row if row_of_line else None,
                None,
                f"not valid UTF-8 at byte offset {offset + e.start} "
                f"(byte 0x{raw[e.start]:02x}); save the file as UTF-8",
                number,
                kind="encoding",
            )
            out.append(None if row_of_line else raw.decode("utf-8", errors="replace"))
        offset += len(raw) + 1
    return out


# JSON is parsed with strict=False: raw control characters inside strings then reach the
# field checks, which name the field, instead of failing as an anonymous parse error.
_JSON = json.JSONDecoder(strict=False)


def _read_jsonl(data: bytes, probs: _Problems) -> tuple[list[tuple[int, int, Any]], int]:
    records = []
    row = 0
    for number, text in enumerate(_decode_lines(data, probs, row_of_line=True), start=1):
        if text is None:
            row += 1
            continue
        if not text.strip(_BLANK):
            continue
        row += 1
        try:
            records.append((row, number, _JSON.decode(text)))
        except json.JSONDecodeError as e:
            probs.add(row, None, f"invalid JSON: {e.msg} at column {e.colno}", number, kind="parse")
    return records, row


def _read_json(data: bytes, probs: _Problems) -> tuple[list[tuple[int, int, Any]], int]:
    """Walk the top-level list element by element to know each record's line."""
    text = "\n".join(t or "" for t in _decode_lines(data, probs, row_of_line=False))
    records: list[tuple[int, int, Any]] = []

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip_ws(0)
    if text[i : i + 1] != "[":
        probs.add(
            None,
            None,
            "a .json upload must be a list of objects ([{...}, ...]); use .jsonl for one object per line",
            line_at(i),
            kind="format",
        )
        return records, 0
    i = skip_ws(i + 1)
    if text[i : i + 1] == "]":
        return records, 0
    row = 0
    while True:
        try:
            obj, end = _JSON.raw_decode(text, i)
        except json.JSONDecodeError as e:
            probs.add(row + 1, None, f"invalid JSON: {e.msg} at column {e.colno}", e.lineno, kind="parse")
            return records, row + 1
        row += 1
        records.append((row, line_at(i), obj))
        i = skip_ws(end)
        if text[i : i + 1] == ",":
            i = skip_ws(i + 1)
            continue
        if text[i : i + 1] == "]":
            rest = skip_ws(i + 1)
            if rest < len(text):
                probs.add(None, None, "unexpected content after the closing ']'", line_at(rest), kind="parse")
            return records, row
        probs.add(row, None, "invalid JSON: expected ',' or ']' after this row", line_at(i), kind="parse")
        return records, row


_CSV_COLUMNS = {"prompt", "response", "completion", "instruction", "output", "messages"}


def _read_csv(data: bytes, probs: _Problems) -> tuple[list[tuple[int, int, Any]], int]:
    """Read a CSV with strict quoting, naming quote errors as such.

    ``strict=True`` makes the csv module fail on an unterminated quote (instead of
    silently swallowing the rest of the file into one cell, which used to surface as
    a wrong cell count) and on text after a closing quote (``"He said "hi""``).
    Parsing stops at such an error: the reader cannot tell where the next row starts.
    """
    lines = [t or "" for t in _decode_lines(data, probs, row_of_line=False)]
    text = "\n".join(lines)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, int, Any]] = []
    try:
        header = next(reader, None)
    except csv.Error as e:
        _csv_error(e, text, lines, 1, reader.line_num, None, probs)
        return records, 0
    if header is None:
        return records, 0
    header = [h.strip() for h in header]
    if not _CSV_COLUMNS & set(header):
        probs.add(
            None,
            None,
            "CSV header needs columns prompt,response (or prompt,completion, "
            f"instruction,output, or messages); found {header}",
            1,
            kind="format",
        )
        return records, 0
    row, prev_end = 0, reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            row += 1
            _csv_error(e, text, lines, prev_end + 1, reader.line_num, row, probs)
            break
        start, prev_end = prev_end + 1, reader.line_num
        if not cells or (all(not c.strip() for c in cells) and len(cells) <= 1):
            continue
        row += 1
        if len(cells) != len(header):
            probs.add(row, None, f"has {len(cells)} cells but the header has {len(header)}", start, kind="parse")
            continue
        obj: dict[str, Any] = dict(zip(header, cells, strict=True))
        if "messages" in obj:
            try:
                obj["messages"] = json.loads(obj["messages"])
            except json.JSONDecodeError as e:
                probs.add(row, "messages", f"cell is not valid JSON: {e.msg}", start, kind="parse")
                continue
        records.append((row, start, obj))
    return records, row


def _csv_error(
    e: csv.Error, text: str, lines: list[str], start: int, at: int, row: int | None, probs: _Problems
) -> None:
    """Explain a csv.Error raised while reading the record that starts at line ``start``.

    An unterminated quote can surface as "unexpected end of data" or, in a long file,
    as "field larger than field limit" long after the quote; rescanning the record
    from its first line finds the line where the quote opened either way.
    """
    offset = sum(len(line) + 1 for line in lines[: start - 1])
    opened = _unclosed_quote(text, offset)
    if opened is not None:
        quote_line = text.count("\n", 0, opened) + 1
        probs.add(
            row,
            None,
            f"unterminated quoted field: the quote opened at line {quote_line} "
            'is never closed (write a quote inside a quoted field as "")',
            quote_line,
            kind="csv_quote",
        )
    elif "expected after" in str(e):
        probs.add(
            row,
            None,
            "text after the closing quote of a field (a quoted field must end "
            "with '\"' then ',' or the end of the line; write a quote inside it as \"\")",
            at,
            kind="csv_quote",
        )
    elif "field limit" in str(e):
        probs.add(row, None, f"a cell is too long for the CSV reader ({e})", start, kind="too_long")
    else:
        probs.add(row, None, f"CSV cannot be parsed: {e}", start, kind="parse")


def _unclosed_quote(text: str, pos: int) -> int | None:
    """Offset of the opening quote of a field that is never closed, scanning from ``pos``.

    Field by field with regular expressions (no per-character Python loop), so a big
    file costs milliseconds; only called once a csv.Error has been raised.
    """
    while pos < len(text):
        if text[pos] == '"':
            body = _CSV_QUOTED_BODY.match(text, pos + 1)
            if body is None:
                return pos
            pos = body.end()
        end = _CSV_FIELD_END.search(text, pos)
        if end is None:
            return None
        pos = end.end()
    return None
