"""The customer's fine-tuning upload: parse it strictly and explain every problem.

A customer who uploads a broken file should get one error that lists everything
wrong with it (file, 1-based row, line and field), not a stack trace from the
tokenizer after an hour of training, and not one problem per attempt. Reading
never writes anything; ``write_upload`` writes atomically so that a crash cannot
leave a half-written upload behind for the next run to train on.

Accepted formats (by suffix, else by the first character): JSONL (``.jsonl``,
``.ndjson``; a ``.json`` file whose first character is ``{`` is read as JSONL too),
JSON (a list of objects) and CSV with a header row. Each row is one of

* ``{"prompt", "response"}`` (optional ``"system"``),
* TRL standard prompt-completion ``{"prompt": str, "completion": str}``,
* TRL conversational prompt-completion ``{"prompt": [messages], "completion":
  [one assistant message]}``: the prompt may start with a system turn and carry
  earlier turns, and ends with the user turn,
* Alpaca style ``{"instruction", "input" (optional), "output"}``,
* chat ``{"messages": [{"role", "content"}, ...]}``: an optional leading system
  turn, then user/assistant turns ending with ``user`` -> ``assistant``; the last
  assistant turn is the response, the last user turn the prompt, the rest history.
  In CSV the ``messages`` cell holds that list as JSON.

Every text is also refused when it holds a chat-template control token (it would
be tokenised as the real special token, so a customer could inject e.g. a system
turn into training) or a control character (NUL, C0/C1, bidi overrides, which hide
text from a reviewer). With ``control_tokens="escape"`` control tokens are defused
instead and the rows are recorded (see ``escape_control_tokens``).

Row numbers count data records from 1 (blank JSONL lines and the CSV header are
not records); ``line`` is the physical line in the file where the record starts.
``docs/uploads.md`` describes the formats, the refusals and the report's schema.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ussafety.atomic import write_text_atomic
from ussafety.data.types import Example

MAX_CHARS = 20_000
MAX_PROBLEMS = 20
ROLES = ("system", "user", "assistant")
_BOM = b"\xef\xbb\xbf"
_BLANK = " \t\r\n\f\v"

ControlTokenMode = Literal["refuse", "escape"]

#: Problem kinds: a fixed vocabulary so that platform tooling can count and route them.
PROBLEM_KINDS = (
    "file",           # the file as a whole: unreadable, empty, unknown format, no data rows
    "encoding",       # not valid UTF-8
    "parse",          # invalid JSON, wrong CSV cell count, content after the JSON list
    "csv_quote",      # a CSV quoted field never closed, or text after a closing quote
    "format",         # a row or CSV header that matches no accepted format
    "missing_field",  # a required field absent or null
    "wrong_type",     # a field (or row) of the wrong JSON type
    "empty",          # a required text, or a message list, that is empty
    "too_long",       # a text over ``max_chars``
    "role",           # a chat role unknown or out of order
    "duplicate",      # an exact repeat of an earlier row
    "control_token",  # a chat-template control token inside a text
    "control_char",   # NUL, other C0/C1 controls, DEL or a bidi override inside a text
)

#: Row formats, as reported in ``Example.meta["schema"]`` and the report's ``schemas``.
SCHEMAS = ("prompt_response", "prompt_completion", "prompt_completion_chat", "alpaca", "chat")

#: Control tokens of the common chat templates. They are matched exactly (case
#: included) because that is how tokenizers split special tokens out of text.
CONTROL_TOKENS: dict[str, tuple[str, ...]] = {
    "ChatML": ("<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|endoftext|>"),
    "Llama 2": ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>"),
    "Llama 3": ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"),
    "Gemma": ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"),
    "Mistral": ("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CALLS]",
                "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
                "[TOOL_CONTENT]", "<s>", "</s>"),
    "Phi": ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
}

# C0 controls except \t \n \r, DEL, C1 controls, and the bidi embeddings, overrides and
# isolates that can make a reviewer read text in a different order than the model does.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CSV_QUOTED_BODY = re.compile(r'[^"]*(?:""[^"]*)*"')  # after an opening quote, up to the close
_CSV_FIELD_END = re.compile(r"[,\n]")


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
        out: dict[str, Any] = {"row": self.row, "line": self.line, "field": self.field,
                               "kind": self.kind, "message": self.message}
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
        self.cap, self.items, self.total = max(1, cap), [], 0

    def add(self, row: int | None, field: str | None, message: str, line: int | None = None,
            other_row: int | None = None, *, kind: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.total += 1
        if len(self.items) < self.cap:
            self.items.append(UploadProblem(row, field, message, kind, line, other_row))

    def __bool__(self) -> bool:
        return self.total > 0

    def sorted(self) -> list[UploadProblem]:
        """File-level problems first, then by row (reading and validation find them apart)."""
        return sorted(self.items, key=lambda p: (p.row is not None, p.row or 0, p.line or 0))


@dataclass(frozen=True)
class _Parts:
    prompt: str
    response: str
    history: tuple[dict[str, str], ...] = ()
    system: str | None = None


# ---------------------------------------------------------------------- control tokens

class _TokenScanner:
    """Finds (and defuses) control tokens in text with one compiled pattern."""

    def __init__(self, tokens: frozenset[str]):
        if not tokens:
            raise ValueError("a scanner needs at least one token (an empty pattern matches anywhere)")
        self.pattern = re.compile(_trie_pattern(tokens))
        self.family = {t: ", ".join(f for f, ts in CONTROL_TOKENS.items() if t in ts)
                       or "model special token" for t in tokens}

    def find(self, text: str) -> list[str]:
        """The distinct tokens in ``text``, in order of first appearance."""
        return list(dict.fromkeys(self.pattern.findall(text)))

    def escape(self, text: str) -> str:
        """``text`` with a space after the first character of every control token.

        Repeated a few times because defusing one token can leave another intact when
        the caller's tokens overlap (``<|im_start|>`` and ``im_start``); whatever is
        still there afterwards is reported as impossible to escape.
        """
        for _ in range(4):
            text, n = self.pattern.subn(lambda m: m.group()[0] + " " + m.group()[1:], text)
            if not n:
                break
        return text


def _trie_pattern(tokens: Iterable[str]) -> str:
    """A regex matching any of ``tokens``, nested as a trie of their characters.

    A flat alternation makes the regex engine try every token at every position (a
    tokenizer's ~250 reserved tokens made 10,000 rows take seconds); the trie tries
    one branch per character. Greedy optional groups keep the longest token at a
    position, so ``<</SYS>>`` is reported whole rather than as ``</s``-something.
    """
    trie: dict[str, dict] = {}
    for token in tokens:
        node = trie
        for ch in token:
            node = node.setdefault(ch, {})
        node[""] = {}  # a token ends here

    def build(node: dict[str, dict]) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


@functools.lru_cache(maxsize=8)
def _scanner(extra: frozenset[str]) -> _TokenScanner:
    defaults = {t for ts in CONTROL_TOKENS.values() for t in ts}
    return _TokenScanner(frozenset(defaults | extra))


def control_tokens_in(text: str, special_tokens: Iterable[str] = ()) -> list[str]:
    """The control tokens (common templates plus ``special_tokens``) found in ``text``."""
    return _scanner(_extra_tokens(special_tokens)).find(text)


def escape_control_tokens(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Defuse control tokens by inserting a plain space after their first character.

    ``<|im_start|>`` becomes ``< |im_start|>``, ``[INST]`` becomes ``[ INST]``. Tokenizers
    split special tokens out of text by exact string match, so any change inside the
    token stops the match; a plain space is chosen over a zero-width character because
    every tokenizer keeps it (SentencePiece maps it to ``▁``, byte-level BPE to ``Ġ``)
    while some normalizers delete zero-width characters (BERT-style ``clean_text``
    drops format characters), which would reassemble the token, and because a reviewer
    can see it in the training data.
    """
    return _scanner(_extra_tokens(special_tokens)).escape(text)


def _extra_tokens(special_tokens: Iterable[str]) -> frozenset[str]:
    """Caller tokens worth matching: a blank string would match everywhere."""
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a collection of strings, not one string")
    return frozenset(t for t in special_tokens if isinstance(t, str) and t.strip())


# ----------------------------------------------------------------------------- results

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


# ----------------------------------------------------------------------------- reading

def read_upload(path: str | Path, *, max_chars: int = MAX_CHARS,
                max_problems: int = MAX_PROBLEMS, control_tokens: ControlTokenMode = "refuse",
                special_tokens: Iterable[str] = ()) -> UploadResult:
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
    result = UploadResult(file=str(p), sha256=None, format=None, rows_total=0, examples=[],
                          problems=[], problems_total=0, escaped=[], schemas={},
                          control_tokens=control_tokens)

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
        probs.add(None, None, "file is empty" if not data else "file contains only whitespace",
                  kind="file")
        return finish()
    fmt = _detect_format(p, data)
    if fmt is None:
        probs.add(None, None, f"unknown format (suffix '{p.suffix}'): use .jsonl, .json or .csv",
                  kind="file")
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
        key = (parts.system, tuple(tuple(sorted(m.items())) for m in parts.history),
               parts.prompt, parts.response)
        if key in seen:
            first_row, first_line = seen[key]
            at = f" (line {first_line})" if first_line is not None else ""
            probs.add(row, None, f"exact duplicate of row {first_row}{at}", line,
                      other_row=first_row, kind="duplicate")
            continue
        seen[key] = (row, line)
        meta: dict[str, Any] = {"line": line, "format": fmt, "schema": schema}
        if check.escaped:
            meta["escaped"] = check.escaped
            result.escaped.append({"row": row, "line": line, "fields": check.escaped})
        result.examples.append(Example(prompt=parts.prompt, response=parts.response,
                                       source=f"upload/{p.name}", row=row - 1, sha256=result.sha256,
                                       history=parts.history, system=parts.system, meta=meta))
    return finish()


def load_upload(path: str | Path, *, max_chars: int = MAX_CHARS,
                max_problems: int = MAX_PROBLEMS, control_tokens: ControlTokenMode = "refuse",
                special_tokens: Iterable[str] = ()) -> list[Example]:
    """Parse and validate an upload; raise one UploadError listing all problems found.

    The options are those of ``read_upload``; the returned examples carry what
    ``read_upload`` puts in their ``meta`` (including which rows were escaped).
    """
    result = read_upload(path, max_chars=max_chars, max_problems=max_problems,
                         control_tokens=control_tokens, special_tokens=special_tokens)
    if not result.ok:
        raise result.error()
    return result.examples


def validate_upload_report(path: str | Path, *, max_chars: int = MAX_CHARS,
                           max_problems: int = MAX_PROBLEMS,
                           control_tokens: ControlTokenMode = "refuse",
                           special_tokens: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON-serialisable report of an upload (``report["ok"]`` says if it is usable)."""
    return read_upload(path, max_chars=max_chars, max_problems=max_problems,
                       control_tokens=control_tokens, special_tokens=special_tokens).report()


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
            probs.add(row if row_of_line else None, None,
                      f"not valid UTF-8 at byte offset {offset + e.start} "
                      f"(byte 0x{raw[e.start]:02x}); save the file as UTF-8", number,
                      kind="encoding")
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
    if text[i:i + 1] != "[":
        probs.add(None, None, "a .json upload must be a list of objects ([{...}, ...]); "
                  "use .jsonl for one object per line", line_at(i), kind="format")
        return records, 0
    i = skip_ws(i + 1)
    if text[i:i + 1] == "]":
        return records, 0
    row = 0
    while True:
        try:
            obj, end = _JSON.raw_decode(text, i)
        except json.JSONDecodeError as e:
            probs.add(row + 1, None, f"invalid JSON: {e.msg} at column {e.colno}", e.lineno,
                      kind="parse")
            return records, row + 1
        row += 1
        records.append((row, line_at(i), obj))
        i = skip_ws(end)
        if text[i:i + 1] == ",":
            i = skip_ws(i + 1)
            continue
        if text[i:i + 1] == "]":
            rest = skip_ws(i + 1)
            if rest < len(text):
                probs.add(None, None, "unexpected content after the closing ']'", line_at(rest),
                          kind="parse")
            return records, row
        probs.add(row, None, "invalid JSON: expected ',' or ']' after this row", line_at(i),
                  kind="parse")
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
        probs.add(None, None, "CSV header needs columns prompt,response (or prompt,completion, "
                  f"instruction,output, or messages); found {header}", 1, kind="format")
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
            probs.add(row, None, f"has {len(cells)} cells but the header has {len(header)}",
                      start, kind="parse")
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


def _csv_error(e: csv.Error, text: str, lines: list[str], start: int, at: int, row: int | None,
               probs: _Problems) -> None:
    """Explain a csv.Error raised while reading the record that starts at line ``start``.

    An unterminated quote can surface as "unexpected end of data" or, in a long file,
    as "field larger than field limit" long after the quote; rescanning the record
    from its first line finds the line where the quote opened either way.
    """
    offset = sum(len(line) + 1 for line in lines[:start - 1])
    opened = _unclosed_quote(text, offset)
    if opened is not None:
        quote_line = text.count("\n", 0, opened) + 1
        probs.add(row, None, f"unterminated quoted field: the quote opened at line {quote_line} "
                  "is never closed (write a quote inside a quoted field as \"\")", quote_line,
                  kind="csv_quote")
    elif "expected after" in str(e):
        probs.add(row, None, "text after the closing quote of a field (a quoted field must end "
                  "with '\"' then ',' or the end of the line; write a quote inside it as \"\")",
                  at, kind="csv_quote")
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


# -------------------------------------------------------------------------- validation

@dataclass(frozen=True)
class _Settings:
    max_chars: int
    control_tokens: ControlTokenMode
    scanner: _TokenScanner


@dataclass
class _Row:
    """Checks the texts of one record and reports its problems at its row and line."""

    row: int
    line: int | None
    probs: _Problems
    settings: _Settings
    escaped: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, field_name: str | None, message: str, kind: str) -> None:
        self.probs.add(self.row, field_name, message, self.line, kind=kind)

    def text(self, container: dict, key: str, field_name: str, required: bool = True) -> str | None:
        """The checked (and, in escape mode, defused) text, or None after reporting."""
        if key not in container or container[key] is None:
            if required:
                self.problem(field_name, "is missing" if key not in container else "is null",
                             "missing_field")
            return None
        value = container[key]
        if not isinstance(value, str):
            self.problem(field_name, f"must be a string, got {type(value).__name__}", "wrong_type")
            return None
        if required and not value.strip():
            self.problem(field_name, "is empty", "empty")
            return None
        max_chars = self.settings.max_chars
        if len(value) > max_chars:
            self.problem(field_name, f"has {len(value)} characters, more than the limit of "
                         f"{max_chars}", "too_long")
            return None
        clean = True
        bad = _CONTROL_CHARS.search(value)
        if bad:
            self.problem(field_name, f"contains {_describe_char(bad.group())} at character "
                         f"{bad.start() + 1}; control characters are not allowed in training text",
                         "control_char")
            clean = False
        scanner = self.settings.scanner
        found = scanner.find(value)
        if found and self.settings.control_tokens == "escape":
            value = scanner.escape(value)
            left = scanner.find(value)
            if left:
                self.problem(field_name, f"contains control token(s) {_quote(left, scanner)} "
                             "that cannot be escaped", "control_token")
                clean = False
            else:
                self.escaped[field_name] = found
        elif found:
            self.problem(field_name, f"contains chat-template control token(s) "
                         f"{_quote(found, scanner)}: the tokenizer would read them as real turn "
                         "markers, letting the text inject turns (e.g. a system prompt) into "
                         "training; remove them, or ask for control_tokens='escape'",
                         "control_token")
            clean = False
        return value if clean else None

    def messages(self, value: Any, field_name: str) -> list[dict[str, str]] | None:
        """A list of {role, content} objects, each checked; None after reporting."""
        if not isinstance(value, list):
            self.problem(field_name, "must be a list of {role, content} objects, got "
                         f"{type(value).__name__}", "wrong_type")
            return None
        if not value:
            self.problem(field_name, "must be a non-empty list of {role, content} objects", "empty")
            return None
        before = self.probs.total
        out = []
        for i, m in enumerate(value):
            name = f"{field_name}[{i}]"
            if not isinstance(m, dict):
                self.problem(name, f"must be an object, got {type(m).__name__}", "wrong_type")
                continue
            role = m.get("role")
            if role not in ROLES:
                got = "missing" if role is None else repr(role)
                self.problem(f"{name}.role", f"unknown role {got} (expected one of "
                             f"{', '.join(ROLES)})", "role")
            content = self.text(m, "content", f"{name}.content")
            out.append({"role": role, "content": content})
        return out if self.probs.total == before else None


def _describe_char(ch: str) -> str:
    code = f"U+{ord(ch):04X}"
    if ch == "\x00":
        return f"{code} (NUL)"
    if "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069":
        return f"{code} (a bidirectional override, which can hide text from a reviewer)"
    return f"{code} (a control character)"


def _quote(tokens: list[str], scanner: _TokenScanner) -> str:
    return ", ".join(f"'{t}' ({scanner.family[t]})" for t in tokens)


def _schema(obj: dict) -> str | None:
    """Which accepted row format ``obj`` claims to be, from its keys."""
    if "messages" in obj:
        return "chat"
    if "completion" in obj or isinstance(obj.get("prompt"), list):
        chat = isinstance(obj.get("prompt"), list) or isinstance(obj.get("completion"), list)
        return "prompt_completion_chat" if chat else "prompt_completion"
    if "prompt" in obj or "response" in obj:
        return "prompt_response"
    if any(k in obj for k in ("instruction", "input", "output")):
        return "alpaca"
    return None


def _validate(obj: Any, check: _Row) -> tuple[str | None, _Parts | None]:
    """Check one record: its schema, and its parts only when it is clean."""
    if not isinstance(obj, dict):
        check.problem(None, f"must be an object, got {type(obj).__name__}", "wrong_type")
        return None, None
    schema = _schema(obj)
    before = check.probs.total
    if schema == "chat":
        msgs = check.messages(obj["messages"], "messages")
        parts = _chat_parts(msgs, check) if msgs is not None else None
    elif schema == "prompt_completion":
        if "response" in obj:
            check.problem("response", "a row has either 'response' or TRL's 'completion', not "
                          "both", "format")
        prompt = _trl_text(obj, "prompt", check)
        completion = _trl_text(obj, "completion", check)
        parts = _Parts(prompt, completion) if prompt and completion else None
    elif schema == "prompt_completion_chat":
        parts = _trl_chat_parts(obj, check)
    elif schema == "prompt_response":
        prompt = check.text(obj, "prompt", "prompt")
        response = check.text(obj, "response", "response")
        system = check.text(obj, "system", "system", required=False)
        parts = _Parts(prompt, response, (), system or None) if prompt and response else None
    elif schema == "alpaca":
        instruction = check.text(obj, "instruction", "instruction")
        extra = check.text(obj, "input", "input", required=False)
        output = check.text(obj, "output", "output")
        parts = (_Parts(alpaca_prompt(instruction, extra), output)
                 if instruction and output else None)
    else:
        check.problem(None, _unknown_row_hint(obj), "format")
        return None, None
    return schema, parts if check.probs.total == before else None


def _unknown_row_hint(obj: dict) -> str:
    accepted = ("needs prompt/response, prompt/completion (TRL), instruction/output or "
                f"messages fields; found {sorted(obj)}")
    if "chosen" in obj or "rejected" in obj:
        return accepted + " (preference rows with chosen/rejected are not supported: uploads " \
                          "are for supervised fine-tuning)"
    if "text" in obj:
        return accepted + " (TRL language-modeling rows {'text'} have no prompt/response split)"
    return accepted


def _trl_text(obj: dict, key: str, check: _Row) -> str | None:
    """A text field of TRL's standard prompt-completion format, naming both TRL shapes."""
    if key in obj and obj[key] is not None and not isinstance(obj[key], str):
        check.problem(key, "must be a string (standard format) or a list of {role, content} "
                      f"messages (conversational format), got {type(obj[key]).__name__}",
                      "wrong_type")
        return None
    return check.text(obj, key, key)


def _trl_chat_parts(obj: dict, check: _Row) -> _Parts | None:
    """TRL's conversational prompt-completion: a prompt chat and one assistant reply."""
    for key, other in (("prompt", "completion"), ("completion", "prompt")):
        if key not in obj or obj[key] is None:
            check.problem(key, "is missing" if key not in obj else "is null", "missing_field")
            return None
        if not isinstance(obj[key], list):
            check.problem(key, f"must be a list of messages because '{other}' is (conversational "
                          f"format), got {type(obj[key]).__name__}", "wrong_type")
            return None
    prompt = check.messages(obj["prompt"], "prompt")
    completion = check.messages(obj["completion"], "completion")
    if prompt is None or completion is None:
        return None
    before = check.probs.total
    for i, m in enumerate(prompt):
        if m["role"] == "system" and i != 0:
            check.problem(f"prompt[{i}].role", "a system turn is only allowed first", "role")
    if prompt[-1]["role"] != "user":
        check.problem(f"prompt[{len(prompt) - 1}].role", "the prompt must end with a user "
                      "message (the completion answers it)", "role")
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        check.problem("completion", "must be exactly one message with role 'assistant' (the "
                      "response to train on)", "role")
    if check.probs.total != before:
        return None
    system, history, user, response = split_chat(prompt + completion)
    return _Parts(user, response, history, system)


def _chat_parts(msgs: list[dict[str, str]], check: _Row) -> _Parts | None:
    before = check.probs.total
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            check.problem(f"messages[{i}].role", "a system turn is only allowed first", "role")
    last = len(msgs) - 1
    if msgs[last]["role"] != "assistant":
        check.problem(f"messages[{last}].role", "the last message must be from the assistant "
                      "(it is the response to train on)", "role")
    elif last < 1 or msgs[last - 1]["role"] != "user":
        check.problem(f"messages[{max(last - 1, 0)}].role",
                      "the assistant's final answer must follow a user message", "role")
    if check.probs.total != before:
        return None
    system, history, prompt, response = split_chat(msgs)
    return _Parts(prompt, response, history, system)


def split_chat(messages: Iterable[dict[str, Any]]) -> tuple[str | None, tuple[dict[str, str], ...], str, str]:
    """(system, history, prompt, response) of a valid chat ending user -> assistant."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else None
    if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
        raise ValueError("a chat must end with a user turn followed by an assistant turn")
    return system, tuple(msgs[:-2]), msgs[-2]["content"], msgs[-1]["content"]


def alpaca_prompt(instruction: str, extra: str | None) -> str:
    """Alpaca instruction plus optional input, separated by a blank line."""
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


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
        rec: dict[str, Any] = ({"messages": ex.messages()} if ex.history or ex.system
                               else {"prompt": ex.prompt, "response": ex.response})
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    return write_text_atomic(target, "".join(lines))
