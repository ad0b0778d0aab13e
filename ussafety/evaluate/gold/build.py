"""Writing the gold set: items, manifest, the blind reader packet and the guide examples.

Why a manifest: the sample over-represents rare strata, so anyone weighting a judge's errors
back to the whole record set needs the population per stratum, and anyone rebuilding the
sample needs to know whether the records it came from have changed (``inputs_sha256``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.gold.common import (
    DEFAULT_N,
    DEFAULT_SEED,
    GUIDE_EXAMPLE_IDS,
    GUIDE_EXAMPLES,
    HARMFUL_SHARE,
    ITEM_FIELDS,
    ITEMS_PATH,
    MIN_PER_STRATUM,
    PACKET_FIELDS,
    PACKET_PATH,
    RECORDS_DIR,
    TEST_SHARE,
    GoldError,
    write_jsonl,
)
from ussafety.evaluate.gold.pairs import collect_pairs, condition_of, item_id, load_records, prompt_type_of, stratum_of
from ussafety.evaluate.gold.sample import build_sample
from ussafety.evaluate.judges.base import LABELS


def summarize(
    items: Sequence[Mapping[str, Any]], pairs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Counts of a sample (by part, prompt type, stratum, group, condition, source), and of the population."""

    def count(key: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for it in items:
            row = out.setdefault(str(it[key]), {"n": 0, "test": 0})
            row["n"] += 1
            row["test"] += it["part"] == "test"
        return dict(sorted(out.items()))

    summary: dict[str, Any] = {
        "n": len(items),
        "n_test": sum(1 for it in items if it["part"] == "test"),
        "n_prompts": len({it["prompt"] for it in items}),
        "by_prompt_type": count("prompt_type"),
        "by_stratum": count("stratum"),
        "by_group": count("group"),
        "by_condition": count("condition"),
        "by_source": count("source"),
    }
    if pairs is not None:
        pop: dict[str, dict[str, int]] = {}
        for pair in pairs.values():
            row = pop.setdefault(pair["stratum"], {"pairs": 0, "generations": 0})
            row["pairs"] += 1
            row["generations"] += sum(len(o["run_ids"]) for o in pair["occurrences"])
        summary["population"] = dict(sorted(pop.items()))
        summary["population_pairs"] = len(pairs)
        summary["population_generations"] = sum(len(o["run_ids"]) for p in pairs.values() for o in p["occurrences"])
        summary["verdict_conflicts"] = sum(p["verdict_conflicts"] for p in pairs.values())
    return summary


def _inputs_digest(records: Sequence[Mapping[str, Any]]) -> str:
    """Digest of exactly what the sample depends on (not run ids): condition, prompt set, row, stratum, pair."""
    rows = set()
    for rec in records:
        condition = condition_of(rec)
        for gen in rec["generations"]:
            ptype = prompt_type_of(str(gen.get("kind", "")))
            if ptype is not None:
                rows.add(
                    (
                        condition,
                        str(gen["kind"]),
                        str(gen.get("source")),
                        str(gen.get("row")),
                        stratum_of(ptype, gen.get("verdicts") or {}, gen.get("degenerate")),
                        item_id(gen["prompt"], gen["response"]),
                    )
                )
    return hashlib.sha256("\n".join("\x1f".join(r) for r in sorted(rows)).encode()).hexdigest()


def write_sample(
    items: Sequence[Mapping[str, Any]], path: Path | str = ITEMS_PATH, *, manifest: Mapping[str, Any] | None = None
) -> Path:
    """Write items (fields in ``ITEM_FIELDS`` order) and, if given, the manifest next to them."""
    path = Path(path)
    write_jsonl(path, ({k: it[k] for k in ITEM_FIELDS} for it in items))
    if manifest is not None:
        (path.parent / "manifest.json").write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return path


def write_packet(items: Sequence[Mapping[str, Any]], path: Path | str = PACKET_PATH, seed: int = DEFAULT_SEED) -> Path:
    """The blind reader packet: id, prompt type, prompt, response only, in a seeded shuffled order."""
    rows = [{k: it[k] for k in PACKET_FIELDS} for it in sorted(items, key=lambda it: it["id"])]
    random.Random(f"{seed}/packet").shuffle(rows)
    return write_jsonl(Path(path), rows)


def write_guide_examples(records: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """The guide's example pairs with the guide's label (kept out of the sample)."""
    pairs = collect_pairs(records, exclude=())
    missing = sorted(set(GUIDE_EXAMPLES) - set(pairs))
    if missing:
        raise GoldError(f"guide examples not found in the records: {', '.join(missing)}")
    rows = []
    for iid in sorted(GUIDE_EXAMPLES):
        p = pairs[iid]
        if GUIDE_EXAMPLES[iid] not in LABELS[p["prompt_type"]]:
            raise GoldError(f"guide example {iid}: label {GUIDE_EXAMPLES[iid]!r} not allowed for {p['prompt_type']}")
        rows.append(
            {
                "id": iid,
                "prompt_type": p["prompt_type"],
                "label": GUIDE_EXAMPLES[iid],
                "prompt": p["prompt"],
                "response": p["response"],
                "also_in": sorted({r for o in p["occurrences"] for r in o["run_ids"]}),
            }
        )
    return write_jsonl(Path(path), rows)


def build(
    records_dir: Path | str = RECORDS_DIR,
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    items_path: Path | str = ITEMS_PATH,
    packet_path: Path | str | None = PACKET_PATH,
) -> dict[str, Any]:
    """Rebuild the sample, write items + manifest (+ packet); returns the manifest."""
    records = load_records(records_dir)
    items = build_sample(records_dir, n, seed)
    pairs = collect_pairs(records)
    manifest = {
        "what": "hand-labelled gold set for the judges: sample of (prompt, response) pairs from the run records",
        "built_by": "python -m ussafety.evaluate.gold build (ussafety.evaluate.gold.build_sample)",
        "seed": seed,
        "n_requested": n,
        "harmful_share": HARMFUL_SHARE,
        "test_share": TEST_SHARE,
        "min_per_stratum": MIN_PER_STRATUM,
        "labels": LABELS,
        "guide": "docs/labelling.md",
        "excluded_guide_examples": sorted(GUIDE_EXAMPLE_IDS),
        "records": [str(r["run_id"]) for r in records],
        "inputs_sha256": _inputs_digest(records),
        "summary": summarize(items, pairs),
    }
    write_sample(items, items_path, manifest=manifest)
    write_guide_examples(records, Path(items_path).parent / "guide_examples.jsonl")
    if packet_path is not None:
        write_packet(items, packet_path, seed)
    return manifest
