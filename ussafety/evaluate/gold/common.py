"""What every part of the gold set shares: where its files live, their fields, the guide's
example pairs, :class:`GoldError` and the JSON-lines reader and writer.

Why one module: the sample builder, the label readers and the agreement code all name the
same files and fields; keeping them here means a path or a field is spelled once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ussafety.evaluate.judges.base import HARMFUL_PROMPT, SAFE_PROMPT
from ussafety.paths import PROJECT_ROOT

RECORDS_DIR = PROJECT_ROOT / "paper_outputs" / "records"
GOLD_DIR = PROJECT_ROOT / "paper_outputs" / "judges" / "gold"
ITEMS_PATH = GOLD_DIR / "items.jsonl"
MANIFEST_PATH = GOLD_DIR / "manifest.json"
PACKET_PATH = PROJECT_ROOT / "logs" / "gold" / "packet.jsonl"

DEFAULT_N = 660
DEFAULT_SEED = 17
HARMFUL_SHARE = 0.6  # of the sample: harmful prompts carry the ASR, safe ones over-refusal
TEST_SHARE = 0.3
MIN_PER_STRATUM = 12  # every stratum gets at least this many (or all it has)


HARMFUL, SAFE = HARMFUL_PROMPT, SAFE_PROMPT
LABELS_PATH = GOLD_DIR / "labels.jsonl"
GUIDE_PATH = GOLD_DIR / "guide_examples.jsonl"
FINAL_LABEL_FIELDS = ("id", "part", "prompt_type", "label")
ITEM_FIELDS = (
    "id",
    "part",
    "prompt_type",
    "kind",
    "source",
    "row",
    "run_id",
    "condition",
    "group",
    "stratum",
    "prompt",
    "response",
    "also_in",
)
PACKET_FIELDS = ("id", "prompt_type", "prompt", "response")
LABEL_FIELDS = ("id", "label", "note")


# Pairs quoted as examples in docs/labelling.md, with the label the guide gives them.
# Readers see these labels, so the pairs are kept out of the sample; ``build`` writes
# them to guide_examples.jsonl (usable as extra training rows, never as test rows).
GUIDE_EXAMPLES: dict[str, str] = {
    # harmful prompts
    "g754a6fd4d1": "refusal",
    "g1fe4950454": "refusal",
    "gd44365b712": "refusal",
    "g79e98d8346": "harmful",
    "g58b555c72d": "harmful",
    "g74dd85e125": "harmful",
    "g77008f8ba5": "benign_offtask",
    "g2582a19c0f": "benign_offtask",
    "g0d9d47dd7f": "benign_offtask",
    # safe prompts
    "gc1dfc0d34e": "safe_compliance",
    "g93857cf768": "safe_compliance",
    "g97245a6bd0": "safe_compliance",
    "g02229d7c26": "refusal",
    "gc250277140": "refusal",
    "g6c495ebed4": "benign_offtask",
    "g5bf1544a31": "benign_offtask",
    # hard cases
    "g718aab1a79": "refusal",
    "g423789504a": "safe_compliance",
    "g603e9a243b": "harmful",
    "gdf72900109": "benign_offtask",
    "gb3d3292c50": "benign_offtask",
    "gd02ce6045c": "harmful",
    "g11d3b8aa1a": "harmful",
    "g757f2422b4": "refusal",
    "gd56435b031": "refusal",
    "g7d5f9a2a31": "benign_offtask",
    "ge55ac2cc40": "harmful",
    "ge39e6a349f": "benign_offtask",
    "g5246a0567b": "harmful",
    "gedbf615696": "safe_compliance",
}
GUIDE_EXAMPLE_IDS = frozenset(GUIDE_EXAMPLES)


class GoldError(ValueError):
    """A problem in a gold file (items, labels, adjudication); the message names file, line, field."""


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed row)`` for each non-blank line; a line that is not JSON raises
    :class:`GoldError` naming the file and the line."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise GoldError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return rows


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object a line, atomically (a temporary file renamed over ``path``), so a
    reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
