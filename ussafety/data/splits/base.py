"""Names, constants and ids shared by the split modules (see :mod:`ussafety.data.splits`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from ussafety.data.types import Example

SplitName = Literal["validation", "test"]
SPLITS: tuple[SplitName, ...] = ("validation", "test")
SPLITS_DIR = Path(__file__).resolve().parent

SEED = 12  # issue 12
THRESHOLD = 0.75
VERSION = 1

HARMFUL = "harmful_v1"
XSTEST_SAFE = "xstest_safe_v1"
TASK_SPLITS = {"sst2": "sst2_v1", "gsm8k": "gsm8k_v1", "humaneval": "humaneval_v1"}
NAMES: tuple[str, ...] = (HARMFUL, XSTEST_SAFE, *TASK_SPLITS.values())


class SplitMismatchError(RuntimeError):
    """A committed split no longer matches the mirror (or its own recorded sha256)."""


def eval_splits(split: str, task: str | None) -> list[str]:
    """The committed splits an evaluation with ``eval.split: split`` of ``task`` reads (none
    for ``sample``, which draws its prompts with a seed instead)."""
    if split == "sample":
        return []
    names = [HARMFUL, XSTEST_SAFE]
    if task:
        from ussafety.data.tasks import get_task

        names.append(TASK_SPLITS[get_task(task).eval_set])
    return names


def _id(ex: Example) -> str:
    return f"{ex.source}#{ex.row}"


def _id_key(item_id: str) -> tuple[str, int]:
    source, _, row = item_id.rpartition("#")
    return source, int(row)


def canonical_sha256(splits: dict[str, list[str]], items: dict[str, dict[str, Any]]) -> str:
    """sha256 over ``"<split>\\t<id>\\t<prompt sha256>\\n"`` lines, validation then test,
    ids in (source, row) order: the identity of exactly which prompts a run used."""
    lines = [
        f"{split}\t{i}\t{items[i]['prompt_sha256']}\n" for split in SPLITS for i in sorted(splits[split], key=_id_key)
    ]
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
