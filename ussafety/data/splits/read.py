"""Reading a committed split: its document, sha256, provenance and Examples."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ussafety.data.sources import require_mirror
from ussafety.data.splits.base import (
    HARMFUL,
    NAMES,
    SPLITS,
    SPLITS_DIR,
    TASK_SPLITS,
    XSTEST_SAFE,
    SplitMismatchError,
    SplitName,
    _id,
    canonical_sha256,
)
from ussafety.data.splits.dedup import Fingerprint, prompt_sha256
from ussafety.data.splits.sets import _SPEC_BY_SET, _SPECS, HARMFUL_SETS
from ussafety.data.types import Example


def read_split(name: str, directory: Path = SPLITS_DIR) -> dict[str, Any]:
    """The committed document of split ``name`` (``harmful_v1``, ``sst2_v1``...)."""
    path = directory / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no split {name!r} in {directory}; known: {', '.join(NAMES)}")
    return json.loads(path.read_text(encoding="utf-8"))


def split_sha256(name: str, directory: Path = SPLITS_DIR) -> str:
    """The sha256 a run records for split ``name``: over both parts' ids and prompt hashes.

    Recomputed from the lists, so a hand-edited file that kept its old ``sha256``
    raises SplitMismatchError instead of passing as the original.
    """
    doc = read_split(name, directory)
    sha = canonical_sha256(doc["splits"], doc["items"])
    if sha != doc["sha256"]:
        raise SplitMismatchError(
            f"{name}: recorded sha256 {doc['sha256']} but its ids hash to {sha} (the file was edited; rebuild it)"
        )
    return sha


def split_provenance(name: str, directory: Path = SPLITS_DIR) -> dict[str, Any]:
    """What a run record names for split ``name``: name, version, seed, threshold, the
    split's sha256 and the sha256 of every mirror file its ids point into."""
    doc = read_split(name, directory)
    return {
        "name": name,
        "version": doc["version"],
        "seed": doc["seed"],
        "threshold": doc["near_duplicate"]["threshold"],
        "sha256": split_sha256(name, directory),
        "files": doc["files"],
    }


def split_examples(
    name: str, split: SplitName, sets: Iterable[str] | None = None, directory: Path = SPLITS_DIR
) -> list[Example]:
    """The Examples of one part of split ``name``, in id order ((source, row)).

    Loaded through the mirror's loaders (checksums verified); each prompt's normalised
    sha256 must equal the recorded one. ``meta`` gains ``split_name``, ``split``,
    ``split_id``, ``set`` and ``category`` (per-set and per-category rates need them).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    require_mirror()
    doc = read_split(name, directory)
    wanted = set(sets) if sets is not None else None
    ids = [i for i in doc["splits"][split] if wanted is None or doc["items"][i]["set"] in wanted]
    needed = {doc["items"][i]["set"] for i in ids}
    found: dict[tuple[str, str], Example] = {}
    for spec in _SPECS[name]:
        if spec.name in needed:
            found.update(((spec.name, _id(ex)), ex) for ex in spec.load())
    out = []
    for i in ids:
        rec = doc["items"][i]
        ex = found.get((rec["set"], i))
        if ex is None:
            raise SplitMismatchError(f"{name}: id {i} ({rec['set']}) is not in the mirror")
        if prompt_sha256(_SPEC_BY_SET[rec["set"]].key(ex)) != rec["prompt_sha256"]:
            raise SplitMismatchError(
                f"{name}: the prompt of {i} changed in the mirror (normalised sha256 differs from the recorded one)"
            )
        meta = {
            **ex.meta,
            "split_name": name,
            "split": split,
            "split_id": i,
            "set": rec["set"],
            "category": rec["category"],
        }
        out.append(dataclasses.replace(ex, meta=meta))
    return out


def fingerprint(ex: Example) -> Fingerprint:
    """The Fingerprint of an Example returned by :func:`split_examples` (by its ``meta["set"]``),
    for checking near-duplicates the way the builder does."""
    return _SPEC_BY_SET[ex.meta["set"]].fingerprint(ex)


def harmful_split(split: SplitName, *, include_xstest_unsafe: bool = True) -> list[Example]:
    """Harmful prompts of ``harmful_v1``'s validation or test part.

    With ``include_xstest_unsafe`` (default) XSTest's unsafe contrasts are included
    (``meta["set"] == "xstest_unsafe"``); the behaviour sets alone are fewer than
    1,000 test prompts once deduplicated. The split's sha256 covers both; a record
    should name the flag too.
    """
    sets = None if include_xstest_unsafe else [s.name for s in HARMFUL_SETS if s.name != "xstest_unsafe"]
    return split_examples(HARMFUL, split, sets)


def xstest_safe_split(split: SplitName) -> list[Example]:
    """XSTest safe prompts (over-refusal) of ``xstest_safe_v1``'s validation or test part."""
    return split_examples(XSTEST_SAFE, split)


def task_split(task: str, split: SplitName) -> list[Example]:
    """Task problems (``sst2``, ``gsm8k``, ``humaneval``; ``code`` = humaneval) of one part."""
    task = "humaneval" if task == "code" else task
    if task not in TASK_SPLITS:
        raise KeyError(f"no task split for {task!r}; known: sst2, gsm8k, humaneval (code)")
    return split_examples(TASK_SPLITS[task], split)
