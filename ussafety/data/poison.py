"""Poisoned fine-tuning sets: a fraction of the customer's task rows replaced by harmful pairs.

This is the threat model of Vaccine/Lisa-style studies: the customer's upload keeps its
size n, and a fraction p of it is harmful. Replacing (rather than appending) keeps the
number of optimisation steps equal across ratios, so that safety differences are due to
the harmful content and not to longer training.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ussafety.data.types import Example


def poison_mix(task: Sequence[Example], harmful: Sequence[Example], ratio: float, seed: int) -> list[Example]:
    """n task rows with ``round(ratio * n)`` of them (seeded choice) replaced by harmful pairs.

    Harmful pairs are drawn without replacement; only if fewer harmful pairs than slots
    exist is every pair used once and the shortfall drawn with replacement (so repeats
    appear only when unavoidable). Harmful rows keep their own source/row/sha256 and get
    ``meta["harmful"] = meta["poisoned"] = True`` plus ``poison_slot`` (their index);
    task rows get ``harmful`` (default False) and ``poisoned = False``. Inputs are not
    modified (meta dicts are copied). ``round`` is Python's (half to even).
    Deterministic for a given seed.
    """
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, numbers.Real)
        or math.isnan(float(ratio))
        or not 0.0 <= ratio <= 1.0
    ):
        raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
    n = len(task)
    k = round(ratio * n)
    if k and not harmful:
        raise ValueError(f"ratio {ratio} needs {k} harmful rows but none were given")
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(n), k))
    if k <= len(harmful):
        picks = rng.sample(range(len(harmful)), k)
    else:
        picks = list(range(len(harmful)))
        rng.shuffle(picks)
        picks += rng.choices(range(len(harmful)), k=k - len(harmful))
    chosen = dict(zip(slots, picks, strict=True))

    rows: list[Example] = []
    for i, ex in enumerate(task):
        if i in chosen:
            h = harmful[chosen[i]]
            rows.append(dataclasses.replace(h, meta={**h.meta, "harmful": True, "poisoned": True, "poison_slot": i}))
        else:
            meta = {**ex.meta, "poisoned": False}
            meta.setdefault("harmful", False)
            rows.append(dataclasses.replace(ex, meta=meta))
    return rows


def poison_report(rows: Sequence[Example]) -> dict[str, Any]:
    """Counts and indices of harmful/poisoned rows, for the run record."""
    harmful = [i for i, ex in enumerate(rows) if ex.meta.get("harmful")]
    poisoned = [i for i, ex in enumerate(rows) if ex.meta.get("poisoned")]
    n = len(rows)
    sources = Counter(rows[i].source for i in harmful)
    repeats = Counter((rows[i].source, rows[i].row, rows[i].prompt, rows[i].response) for i in harmful)
    return {
        "n": n,
        "n_harmful": len(harmful),
        "n_poisoned": len(poisoned),
        "n_task": n - len(harmful),
        "harmful_ratio": len(harmful) / n if n else 0.0,
        "harmful_indices": harmful,
        "poisoned_indices": poisoned,
        "harmful_sources": dict(sources),
        "n_repeated_harmful": sum(c - 1 for c in repeats.values() if c > 1),
    }
