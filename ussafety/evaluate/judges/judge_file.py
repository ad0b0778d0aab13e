"""Judge any file of (prompt, response) pairs: ``ussafety judge-file --judge NAME --input FILE``.

Why: the judges were only reachable through run records; a user with answers from any
model (another paper's outputs, a hand-written probe set) should get the same three-way
verdicts and the same rates, with intervals, without building a record.

Input: JSONL (one object per line) or CSV (header row), chosen by the file's suffix
(``.jsonl`` / ``.json`` / ``.ndjson`` vs ``.csv``), with the fields ``prompt`` and
``response`` and optionally ``prompt_type`` (``harmful`` or ``safe``, or a record kind
such as ``xstest_safe``; empty or absent = ``harmful``). Other fields are ignored. Every
row is checked before any judge loads, and all problems are reported together, each
naming the row (1-based, data rows only), its line in the file and the field.

Output (:func:`judge_file`): one entry per row (``label``, ``harmful``, ``refused``,
``score``, ``detail``) and a summary per prompt type with Wilson 95% intervals: on
harmful prompts ASR (share ``harmful``), refusal rate and off-task rate; on safe prompts
compliance, refusal (over-refusal) and off-task rates; verdicts the judge could not give
(label None) are counted as ``undecided`` and left out of the rates' denominators.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.judges.base import (
    COMPLIANCE,
    HARMFUL,
    HARMFUL_PROMPT,
    OFFTASK,
    REFUSAL,
    SAFE_PROMPT,
    Judge,
    Verdict,
    judge_pairs,
    prompt_type_of,
)
from ussafety.stats import wilson_interval

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
MAX_ERRORS = 30
CI_METHOD = "Wilson 95% interval over the decided verdicts of each prompt type"


class JudgeFileError(ValueError):
    """A problem in the input file; the message names each bad row, its line and field."""


def _check_row(row: Any, where: str) -> tuple[dict[str, str] | None, list[str]]:
    if not isinstance(row, dict):
        return None, [f"{where}: not an object with prompt and response fields"]
    errors = []
    for field in ("prompt", "response"):
        value = row.get(field)
        if field not in row or value is None:
            errors.append(f"{where}: field {field!r}: missing")
        elif not isinstance(value, str):
            errors.append(f"{where}: field {field!r}: must be text, got {type(value).__name__}")
        elif field == "prompt" and not value.strip():
            errors.append(f"{where}: field 'prompt': empty")
    ptype = row.get("prompt_type")
    if ptype in (None, ""):
        ptype = HARMFUL_PROMPT
    elif not isinstance(ptype, str):
        errors.append(f"{where}: field 'prompt_type': must be text, got {type(ptype).__name__}")
    else:
        try:
            ptype = prompt_type_of(ptype)
        except ValueError:
            errors.append(f"{where}: field 'prompt_type': {ptype!r} (expected harmful or safe)")
    if errors:
        return None, errors
    return {"prompt": row["prompt"], "response": row["response"], "prompt_type": str(ptype)}, []


def read_pairs(path: Path | str) -> list[dict[str, str]]:
    """The file's rows as ``{"prompt", "response", "prompt_type"}``, or :class:`JudgeFileError`
    listing every bad row (up to :data:`MAX_ERRORS`) with its row number, line and field."""
    path = Path(path)
    if not path.is_file():
        raise JudgeFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    raw: list[tuple[str, Any, str | None]] = []  # (where, row, a problem found while reading)
    if suffix in JSONL_SUFFIXES:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}: row {len(raw) + 1} (line {lineno})"
                try:
                    raw.append((where, json.loads(line), None))
                except json.JSONDecodeError as exc:
                    raw.append((where, None, f"{where}: not valid JSON ({exc.msg})"))
    elif suffix in CSV_SUFFIXES:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [f for f in ("prompt", "response") if f not in header]
            if missing:
                raise JudgeFileError(
                    f"{path}: line 1: the header has no {', '.join(repr(m) for m in missing)} "
                    f"column (found: {', '.join(header) or 'nothing'})"
                )
            try:
                for row in reader:
                    where = f"{path}: row {len(raw) + 1} (line {reader.line_num})"
                    extra = row.pop(None, None)  # cells beyond the header (DictReader restkey)
                    problem = f"{where}: {len(extra) + len(header)} cells but {len(header)} columns" if extra else None
                    raw.append((where, row, problem))
            except csv.Error as exc:
                raise JudgeFileError(f"{path}: line {reader.line_num}: CSV error: {exc}") from None
    else:
        raise JudgeFileError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}: use {', '.join(JSONL_SUFFIXES + CSV_SUFFIXES)}"
        )
    rows: list[dict[str, str]] = []
    errors: list[str] = []
    for where, row, problem in raw:
        if problem:
            errors.append(problem)
        if row is None:
            continue
        checked, problems = _check_row(row, where)
        errors += problems
        if checked is not None:
            rows.append(checked)
    if errors:
        more = f"\n... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise JudgeFileError(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(errors[:MAX_ERRORS]) + more)
    if not rows:
        raise JudgeFileError(f"{path}: no rows to judge")
    return rows


def _rate(count: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(count, n)
    return {
        "rate": count / n if n else None,
        "ci_low": lo if n else None,
        "ci_high": hi if n else None,
        "count": count,
        "n": n,
    }


def summarize(verdicts: Sequence[Verdict], prompt_types: Sequence[str]) -> dict[str, Any]:
    """Rates per prompt type with Wilson intervals (see the module docstring)."""
    out: dict[str, Any] = {}
    names = {
        HARMFUL_PROMPT: (("asr", HARMFUL), ("refusal_rate", REFUSAL), ("offtask_rate", OFFTASK)),
        SAFE_PROMPT: (("compliance_rate", COMPLIANCE), ("refusal_rate", REFUSAL), ("offtask_rate", OFFTASK)),
    }
    for ptype, rates in names.items():
        labels = [v.label for v, t in zip(verdicts, prompt_types) if t == ptype]
        if not labels:
            continue
        decided = [lab for lab in labels if lab is not None]
        out[f"{ptype}_prompts"] = {
            "n": len(labels),
            "undecided": len(labels) - len(decided),
            **{key: _rate(decided.count(label), len(decided)) for key, label in rates},
        }
    return out


def judge_file(judge: Judge, path: Path | str) -> dict[str, Any]:
    """Read, check and judge a file; return the rows' verdicts and the summary (JSON-ready)."""
    rows = read_pairs(path)
    types = [r["prompt_type"] for r in rows]
    verdicts = judge_pairs(judge, [r["prompt"] for r in rows], [r["response"] for r in rows], types)
    return {
        "judge": judge.name,
        "input": str(path),
        "n": len(rows),
        "ci": CI_METHOD,
        "summary": summarize(verdicts, types),
        "rows": [
            {
                "row": i,
                "prompt_type": t,
                "label": v.label,
                "harmful": v.harmful,
                "refused": v.refused,
                "score": v.score,
                "detail": v.detail,
            }
            for i, (v, t) in enumerate(zip(verdicts, types), 1)
        ],
    }
