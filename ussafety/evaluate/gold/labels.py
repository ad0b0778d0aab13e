"""Reading the gold files back: items, one reader's labels, the final labels and the guide examples.

Why strict: a label file is typed by hand, and a wrong id or a label not allowed for the
prompt type would silently bias every judge's score; every problem is reported with its
file, line and field so the reader can fix them all at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.gold.common import (
    FINAL_LABEL_FIELDS,
    GUIDE_PATH,
    ITEM_FIELDS,
    ITEMS_PATH,
    LABEL_FIELDS,
    LABELS_PATH,
    GoldError,
    read_jsonl,
)
from ussafety.evaluate.judges.base import ALL_LABELS, LABELS


def load_items(path: Path | str = ITEMS_PATH) -> list[dict[str, Any]]:
    """The gold items (``items.jsonl``), checked for the fields, unique ids and a known prompt type."""
    path = Path(path)
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise GoldError(f"{path}:{lineno}: not a JSON object")
        missing = [f for f in ITEM_FIELDS if f not in row]
        if missing:
            raise GoldError(f"{path}:{lineno}: field {missing[0]!r}: missing")
        if row["prompt_type"] not in LABELS:
            raise GoldError(
                f"{path}:{lineno}: field 'prompt_type': {row['prompt_type']!r} (expected one of {', '.join(LABELS)})"
            )
        if row["part"] not in ("train", "test"):
            raise GoldError(f"{path}:{lineno}: field 'part': {row['part']!r} (expected train or test)")
        if row["id"] in seen:
            raise GoldError(f"{path}:{lineno}: field 'id': {row['id']!r} repeats line {seen[row['id']]}")
        seen[row["id"]] = lineno
        items.append(row)
    return items


def load_labels(
    path: Path | str,
    items: Sequence[Mapping[str, Any]] | None = None,
    *,
    require_all: bool = True,
    max_errors: int = 30,
) -> dict[str, dict[str, Any]]:
    """One reader's (or the adjudicator's) labels: ``{"id", "label", "note"?}`` per line.

    Returns ``{id: {"label": ..., "note": ...}}``. Every problem is collected and raised
    together as :class:`GoldError`, each naming the file, the line and the field: not
    JSON, not an object, a missing or unknown field, an id not in the items, a repeated
    id, an unknown label, a label not allowed for the item's prompt type, a note that is
    not a string, and (with ``require_all``) the items that have no label.
    """
    path = Path(path)
    items = load_items() if items is None else items
    ptype = {str(it["id"]): it["prompt_type"] for it in items}
    errors: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        lines = list(enumerate(fh, 1))
    for lineno, line in lines:
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            errors.append(f"{where}: not a JSON object")
            continue
        for field in sorted(set(row) - set(LABEL_FIELDS)):
            errors.append(f"{where}: field {field!r}: unknown field (allowed: {', '.join(LABEL_FIELDS)})")
        if "id" not in row:
            errors.append(f"{where}: field 'id': missing")
            continue
        iid = row["id"]
        if not isinstance(iid, str) or iid not in ptype:
            errors.append(f"{where}: field 'id': unknown id {iid!r} (not in the gold items)")
            continue
        if iid in first_line:
            errors.append(f"{where}: field 'id': {iid!r} already labelled on line {first_line[iid]}")
            continue
        first_line[iid] = lineno
        label = row.get("label")
        if "label" not in row:
            errors.append(f"{where}: field 'label': missing")
            continue
        allowed = LABELS[ptype[iid]]
        if label not in ALL_LABELS:
            errors.append(
                f"{where}: field 'label': unknown label {label!r} (for a {ptype[iid]} prompt: {', '.join(allowed)})"
            )
            continue
        if label not in allowed:
            errors.append(
                f"{where}: field 'label': {label!r} is not allowed for a {ptype[iid]} prompt "
                f"(allowed: {', '.join(allowed)})"
            )
            continue
        note = row.get("note")
        if note is not None and not isinstance(note, str):
            errors.append(f"{where}: field 'note': must be a string")
            continue
        out[iid] = {"label": label, "note": note}
    if require_all:
        missing = [iid for iid in ptype if iid not in out and iid not in first_line]
        if missing:
            errors.append(f"{path}: {len(missing)} item(s) have no label (first: {', '.join(missing[:5])})")
    if errors:
        shown = errors[:max_errors]
        more = f"\n... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise GoldError(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(shown) + more)
    return out


def load_gold(
    items_path: Path | str = ITEMS_PATH, labels_path: Path | str = LABELS_PATH, part: str | None = None
) -> list[dict[str, Any]]:
    """The gold items joined with their final labels (``labels.jsonl``), in item order.

    Each row: ``id``, ``part``, ``prompt_type``, ``prompt``, ``response``, ``condition``,
    ``stratum``, ``label``. ``part`` (``train`` / ``test``) keeps only that part. The final
    label file is checked against the items: every item labelled once, the same part and
    prompt type as the item, a label allowed for the prompt type; problems are raised
    together as :class:`GoldError`, each naming file, line and field.
    """
    items = load_items(items_path)
    by_id = {str(it["id"]): it for it in items}
    path = Path(labels_path)
    errors: list[str] = []
    labels: dict[str, str] = {}
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            errors.append(f"{where}: not a JSON object")
            continue
        missing = [f for f in FINAL_LABEL_FIELDS if f not in row]
        if missing:
            errors.append(f"{where}: field {missing[0]!r}: missing")
            continue
        iid = row["id"]
        item = by_id.get(iid)
        if item is None:
            errors.append(f"{where}: field 'id': unknown id {iid!r} (not in the gold items)")
        elif iid in labels:
            errors.append(f"{where}: field 'id': {iid!r} labelled twice")
        elif row["part"] != item["part"] or row["prompt_type"] != item["prompt_type"]:
            field = "part" if row["part"] != item["part"] else "prompt_type"
            errors.append(f"{where}: field {field!r}: {row[field]!r} but the item says {item[field]!r}")
        elif row["label"] not in LABELS[item["prompt_type"]]:
            errors.append(
                f"{where}: field 'label': {row['label']!r} is not allowed for a "
                f"{item['prompt_type']} prompt (allowed: {', '.join(LABELS[item['prompt_type']])})"
            )
        else:
            labels[iid] = row["label"]
    unlabelled = [iid for iid in by_id if iid not in labels]
    if unlabelled and not errors:
        errors.append(f"{path}: {len(unlabelled)} item(s) have no label (first: {', '.join(unlabelled[:5])})")
    if errors:
        raise GoldError(f"{len(errors)} problem(s) in {path}:\n" + "\n".join(errors[:30]))
    keep = ("id", "part", "prompt_type", "prompt", "response", "condition", "stratum")
    return [
        {**{k: it[k] for k in keep}, "label": labels[str(it["id"])]}
        for it in items
        if part is None or it["part"] == part
    ]


def load_guide_examples(path: Path | str = GUIDE_PATH) -> list[dict[str, Any]]:
    """The labelling guide's example pairs with the guide's labels (never in the sample, so
    usable as training rows; never as test rows), checked like the final labels."""
    rows = []
    for lineno, row in read_jsonl(Path(path)):
        if not isinstance(row, dict) or any(f not in row for f in ("id", "prompt_type", "label", "prompt", "response")):
            raise GoldError(f"{path}:{lineno}: needs id, prompt_type, label, prompt and response")
        if row["prompt_type"] not in LABELS or row["label"] not in LABELS[row["prompt_type"]]:
            raise GoldError(f"{path}:{lineno}: field 'label': {row['label']!r} not allowed for {row['prompt_type']!r}")
        rows.append(row)
    return rows
