"""Where a trained learned head lives: its cache key, its folder and the files written there.

Why a key of everything it depends on (the data recipe, the data and gold files' sha256,
the feature and training versions, the embedder): a head is retrained, never silently
reused, when any of them changes, and two recipes never share a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ussafety.atomic import write_text_atomic
from ussafety.evaluate.judges.embedder import DEFAULT_MAX_LENGTH, WHEEL, WHEEL_VERSION
from ussafety.evaluate.judges.learned_data import DataRecipe, ThreeWayRecipe
from ussafety.evaluate.judges.learned_features import FEATURES, FEATURES3
from ussafety.evaluate.judges.learned_head import L2_GRID, Head
from ussafety.paths import cache_dir

TRAINING = "mlr-lbfgs-l2-balanced/v2"
TRAINING3 = "mlr-lbfgs-l2-balanced-3way/v1"
#: Data sets the recipe reads, for the cache key (their mirror files' sha256).
USED_SETS = (
    "beavertails_pairs",
    "hh_rlhf_harmful",
    "refusals",
    "alpaca_safety",
    "dolly_safety",
    "code_alpaca",
    "gsm8k",
)


def _data_fingerprint() -> dict[str, str]:
    """sha256 (from the mirror's MANIFEST.json) of every file the recipe reads."""
    from ussafety.data.loaders import REGISTRY
    from ussafety.data.sources import manifest_entry
    from ussafety.paths import data_dir

    out: dict[str, str] = {}
    root = data_dir()
    for name in USED_SETS:
        for folder, fname in REGISTRY[name].files.values():
            key = f"{folder}/{fname}"
            out[key] = manifest_entry(folder, fname, root)["sha256"] if root else "hub"
    return dict(sorted(out.items()))


def _gold_fingerprint() -> dict[str, str]:
    """sha256 of the gold files learned3 reads (items, final labels, guide examples)."""
    from ussafety.evaluate.gold import GUIDE_PATH, ITEMS_PATH, LABELS_PATH

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ITEMS_PATH, LABELS_PATH, GUIDE_PATH)}


def cache_key(recipe: DataRecipe | ThreeWayRecipe, max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, Any]:
    """Everything the trained head depends on (its hash names the cache folder)."""
    if isinstance(recipe, ThreeWayRecipe):
        return {
            "recipe": dataclasses.asdict(recipe),
            "features": FEATURES3,
            "training": TRAINING3,
            "embedder": f"{WHEEL}=={WHEEL_VERSION}",
            "max_length": max_length,
            "data": _data_fingerprint(),
            "gold": _gold_fingerprint(),
        }
    return {
        "recipe": dataclasses.asdict(recipe),
        "features": FEATURES,
        "training": TRAINING,
        "l2_grid": list(L2_GRID),
        "embedder": f"{WHEEL}=={WHEEL_VERSION}",
        "max_length": max_length,
        "data": _data_fingerprint(),
    }


def artefact_dir(recipe: DataRecipe | ThreeWayRecipe, root: Path | None = None) -> Path:
    key = cache_key(recipe)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    prefix = "learned3" if isinstance(recipe, ThreeWayRecipe) else "learned"
    return (root or cache_dir()) / "judges" / f"{prefix}-{digest}"


def _save_tensor_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class TrainResult:
    """The fitted head, its metadata and the test split's predictions (for the report)."""

    head: Head
    meta: dict[str, Any]
    test: list[dict[str, Any]]


def save(result: TrainResult, folder: Path) -> None:
    """Write ``head.pt``, ``meta.json`` and ``test_predictions.json`` (each atomically)."""
    _save_tensor_atomic(folder / "head.pt", result.head.state())
    write_text_atomic(folder / "meta.json", json.dumps(result.meta, indent=1))
    write_text_atomic(folder / "test_predictions.json", json.dumps(result.test, ensure_ascii=False))
