"""Building the split documents and writing the committed JSON files (rules: :mod:`ussafety.data.splits`)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ussafety.data.sources import require_mirror
from ussafety.data.splits.base import (
    HARMFUL,
    SEED,
    SPLITS,
    SPLITS_DIR,
    TASK_SPLITS,
    THRESHOLD,
    VERSION,
    XSTEST_SAFE,
    _id,
    _id_key,
    canonical_sha256,
)
from ussafety.data.splits.dedup import STOP_WORDS, Fingerprint, similar_pairs
from ussafety.data.splits.sets import (
    HARMFUL_SETS,
    SAFETY_POOLS,
    TASK_POOLS,
    TASK_SETS,
    XSTEST_SAFE_SETS,
    _SetSpec,
)


@dataclass
class _Item:
    id: str
    set: str
    category: str | None
    fp: Fingerprint

    def record(self) -> dict[str, Any]:
        source, row = _id_key(self.id)
        return {
            "set": self.set,
            "source": source,
            "row": row,
            "category": self.category,
            "prompt_sha256": hashlib.sha256(self.fp.norm.encode("utf-8")).hexdigest(),
        }


def _items(specs: Iterable[_SetSpec]) -> tuple[list[_Item], dict[str, str]]:
    """Every candidate of the sets in priority order, and the sha256 of each file used."""
    items, files = [], {}
    for spec in specs:
        for ex in spec.load():
            files[ex.source] = ex.sha256
            items.append(_Item(_id(ex), spec.name, spec.category(ex), spec.fingerprint(ex)))
    return items, dict(sorted(files.items()))


def _training_overlaps(
    items: list[_Item], pools: dict[str, Callable[[], list[tuple[str, str]]]], threshold: float
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """Items within the threshold of (or equal to) a training prompt, with the closest match."""
    hits: dict[int, dict[str, Any]] = {}
    report: dict[str, Any] = {}
    for pool_name, get in pools.items():
        rows = get()
        found: dict[int, tuple[float, str]] = {}
        for i, j, sim in similar_pairs([it.fp for it in items], [Fingerprint.of(t) for _, t in rows], threshold):
            if sim > found.get(i, (-1.0, ""))[0]:
                found[i] = (sim, rows[j][0])
        report[pool_name] = {"rows": len(rows), "overlapping_prompts": len(found)}
        for i, (sim, pid) in found.items():
            if sim > hits.get(i, {}).get("similarity", -1.0):
                hits[i] = {"reason": "training_overlap", "match": pid, "similarity": round(sim, 4)}
    return hits, report


def _dedup(
    items: list[_Item], keep: list[int], threshold: float
) -> tuple[list[int], dict[int, dict[str, Any]], dict[str, dict[str, int]]]:
    """Greedy, in priority order: keep an item unless it equals or is within the
    threshold of one already kept. Greedy (not connected components) so a chain of
    near-duplicates A~B~C does not drop a C that differs from A; it still leaves no
    two kept prompts within the threshold."""
    neighbours: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for a, b, sim in similar_pairs([items[k].fp for k in keep], threshold=threshold):
        neighbours[keep[a]].append((sim, keep[b]))
        neighbours[keep[b]].append((sim, keep[a]))
    kept: list[int] = []
    kept_set: set[int] = set()
    removed: dict[int, dict[str, Any]] = {}
    merged: dict[str, Counter[str]] = defaultdict(Counter)
    for k in keep:
        it = items[k]
        # highest similarity first, then the earliest kept (priority order)
        best = max(((s, -o) for s, o in neighbours[k] if o in kept_set), default=None)
        if best is None:
            kept.append(k)
            kept_set.add(k)
            continue
        sim, match = best[0], -best[1]
        kind = "exact_duplicate" if it.fp.norm == items[match].fp.norm else "near_duplicate"
        removed[k] = {"reason": kind, "match": items[match].id, "similarity": round(sim, 4)}
        merged[f"{items[match].set}+{it.set}"][kind.split("_")[0]] += 1
    return kept, removed, {pair: dict(sorted(c.items())) for pair, c in sorted(merged.items())}


def _components(items: list[_Item], keep: list[int], threshold: float) -> list[list[int]]:
    """Groups of items linked by equality or near-duplication (kept whole in one part)."""
    parent = {k: k for k in keep}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in similar_pairs([items[k].fp for k in keep], threshold=threshold):
        parent[find(keep[b])] = find(keep[a])
    groups: dict[int, list[int]] = defaultdict(list)
    for k in keep:
        groups[find(k)].append(k)
    return sorted(groups.values())


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """``total`` spread over strata in proportion to their sizes (largest remainder,
    ties by name), never more than a stratum holds."""
    n = sum(sizes.values())
    total = min(total, n)
    if n == 0:
        return {s: 0 for s in sizes}
    exact = {s: total * size / n for s, size in sizes.items()}
    out = {s: int(v) for s, v in exact.items()}
    for s in sorted(sizes, key=lambda s: (-(exact[s] - out[s]), s))[: total - sum(out.values())]:
        out[s] += 1
    return out


def _rank(seed: int, name: str, item_id: str) -> str:
    # A hash, not random.shuffle: the order of an id does not depend on the other ids
    # or on Python's generator, so adding a set later leaves the existing choices alone.
    return hashlib.sha256(f"{seed}\0{name}\0{item_id}".encode()).hexdigest()


def _build(
    name: str,
    description: str,
    specs: Sequence[_SetSpec],
    pools: dict[str, Callable[[], list[tuple[str, str]]]],
    *,
    seed: int,
    threshold: float,
    n_validation: int,
    n_test: int | None,
    dedup: bool,
    stratum: Callable[[_Item], str],
) -> dict[str, Any]:
    """The JSON document of one split (see the module docstring for the rules)."""
    items, files = _items(specs)
    excluded, pool_report = _training_overlaps(items, pools, threshold)
    keep = [i for i in range(len(items)) if i not in excluded]
    if dedup:
        kept, removed, merged = _dedup(items, keep, threshold)
        units = [[k] for k in kept]
    else:
        kept, removed, merged = keep, {}, {}
        units = _components(items, keep, threshold)
    removed.update(excluded)

    strata: dict[str, list[list[int]]] = defaultdict(list)
    for unit in units:
        strata[stratum(items[unit[0]])].append(unit)
    sizes = {s: sum(len(u) for u in us) for s, us in sorted(strata.items())}
    want_val = _allocate(n_validation, sizes)
    rest = {s: sizes[s] - want_val[s] for s in sizes}
    want_test = rest if n_test is None else _allocate(n_test, rest)
    chosen: dict[str, list[str]] = {"validation": [], "test": []}
    for s, us in sorted(strata.items()):
        count = {"validation": 0, "test": 0}
        for unit in sorted(us, key=lambda u: _rank(seed, name, items[u[0]].id)):
            part = next(
                (p for p, want in (("validation", want_val[s]), ("test", want_test[s])) if count[p] < want), None
            )
            if part is None:
                break
            chosen[part] += [items[k].id for k in unit]
            count[part] += len(unit)
    splits = {p: sorted(ids, key=_id_key) for p, ids in chosen.items()}

    in_split = {i: p for p, ids in splits.items() for i in ids}
    records = {it.id: it.record() for it in items}
    counts: dict[str, dict[str, int]] = {}
    for k, it in enumerate(items):
        c = counts.setdefault(
            it.set,
            {
                "candidates": 0,
                "training_overlap": 0,
                "exact_duplicate": 0,
                "near_duplicate": 0,
                "validation": 0,
                "test": 0,
                "unused": 0,
            },
        )
        c["candidates"] += 1
        c[removed[k]["reason"] if k in removed else in_split.get(it.id, "unused")] += 1
    return {
        "name": name,
        "version": VERSION,
        "description": description,
        "seed": seed,
        "near_duplicate": {
            "measure": "ussafety.data.splits.similarity: Jaccard of the request's "
            "content words; for two contextual prompts the smaller of "
            "that and the contexts' Jaccard",
            "threshold": threshold,
            "stop_words": sorted(STOP_WORDS),
            "normalisation": "NFKC, casefold, punctuation -> space, whitespace collapsed",
        },
        "files": files,
        "training_pools": pool_report,
        "merged_pairs": merged,
        "counts": counts,
        "sha256": canonical_sha256(splits, records),
        "splits": splits,
        "items": {i: records[i] for p in SPLITS for i in splits[p]},
        "removed": {
            items[k].id: {**records[items[k].id], **info}
            for k, info in sorted(removed.items(), key=lambda kv: _id_key(items[kv[0]].id))
        },
    }


def build_harmful_split(seed: int = SEED, threshold: float = THRESHOLD, n_validation: int = 200) -> dict[str, Any]:
    """Harmful prompts of every behaviour set in the mirror, deduplicated, split by set.

    Sets: AdvBench behaviours, HarmBench standard and contextual behaviours (test and
    val files), StrongREJECT (full), and XSTest's unsafe contrasts as a further set
    (``set == "xstest_unsafe"``). Left out: HarmBench copyright behaviours (a lyrics or
    book-passage request is judged by a hash check, not by refusal), AdvBench
    harmful_strings (target strings to emit, not requests), StrongREJECT small (a subset
    of full) and every training pool. Validation is ``n_validation`` prompts spread over
    the sets in proportion to their size; test is the rest.
    """
    return _build(
        HARMFUL,
        "Harmful prompts for ASR: validation chooses method strengths, test "
        "reports. Deduplicated across sets; xstest_unsafe is a further set that "
        "harmful_split(include_xstest_unsafe=False) leaves out.",
        HARMFUL_SETS,
        SAFETY_POOLS,
        seed=seed,
        threshold=threshold,
        n_validation=n_validation,
        n_test=None,
        dedup=True,
        stratum=lambda it: it.set,
    )


def build_xstest_safe_split(seed: int = SEED, threshold: float = THRESHOLD, n_validation: int = 50) -> dict[str, Any]:
    """XSTest's safe prompts for over-refusal: ``n_validation`` held out (stratified by
    prompt type), the rest for test. Not deduplicated (XSTest is a fixed benchmark whose
    rates are compared with published ones); near-duplicate groups stay in one part."""
    return _build(
        XSTEST_SAFE,
        "XSTest safe prompts (must not be refused): validation for strength selection, test for over-refusal rates.",
        XSTEST_SAFE_SETS,
        SAFETY_POOLS,
        seed=seed,
        threshold=threshold,
        n_validation=n_validation,
        n_test=None,
        dedup=False,
        stratum=lambda it: it.category or "",
    )


# task -> (validation size, test size or None for all the rest, stratify by category?)
TASK_SIZES: dict[str, tuple[int, int | None, bool]] = {
    "sst2": (200, None, True),  # 872 labelled GLUE dev sentences; stratified by label
    "gsm8k": (100, 500, False),  # of 1,319; 256-token answers make every problem costly
    "humaneval": (20, None, False),  # no other executable code set in the mirror
}


def build_task_split(task: str, seed: int = SEED, threshold: float = THRESHOLD) -> dict[str, Any]:
    """A task's evaluation file split into validation and test (sizes in ``TASK_SIZES``),
    minus anything within the threshold of the rows fine-tuning draws from."""
    n_val, n_test, by_category = TASK_SIZES[task]
    return _build(
        TASK_SPLITS[task],
        f"{task} evaluation problems: validation for strength selection, test for the reported task score.",
        TASK_SETS[task],
        TASK_POOLS[task],
        seed=seed,
        threshold=threshold,
        n_validation=n_val,
        n_test=n_test,
        dedup=False,
        stratum=(lambda it: it.category or "") if by_category else (lambda it: ""),
    )


def build_all(seed: int = SEED, threshold: float = THRESHOLD) -> dict[str, dict[str, Any]]:
    """Every split document by name (needs the mirror)."""
    require_mirror()
    docs = {HARMFUL: build_harmful_split(seed, threshold), XSTEST_SAFE: build_xstest_safe_split(seed, threshold)}
    for task in TASK_SPLITS:
        docs[TASK_SPLITS[task]] = build_task_split(task, seed, threshold)
    return docs


_LEAF_OBJECT = re.compile(r"\{\n\s+([^{}\[\]]*?)\n\s*\}")


def dumps(doc: dict[str, Any]) -> str:
    """The file text of a split document: sorted keys, so equal documents are equal bytes;
    objects of plain values (one id's record) on one line, so a diff shows one line per id."""
    text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False)
    return _LEAF_OBJECT.sub(lambda m: "{" + " ".join(p.strip() for p in m.group(1).split("\n")) + "}", text) + "\n"


def write_splits(docs: dict[str, dict[str, Any]], directory: Path = SPLITS_DIR) -> list[Path]:
    """Write each document to ``<directory>/<name>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in docs.items():
        path = directory / f"{name}.json"
        path.write_text(dumps(doc), encoding="utf-8")
        paths.append(path)
    return paths
