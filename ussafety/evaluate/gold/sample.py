"""The stratified gold sample: how many items per stratum, which pairs, and the train/test split.

Why seeded and stratified: the sample must be rebuilt exactly from the records (same records,
size and seed give the same items), and rare answer types (off-task text, refusal phrases
after harmful text) must be present in numbers a reader can learn from.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.gold.common import (
    DEFAULT_N,
    DEFAULT_SEED,
    GUIDE_EXAMPLE_IDS,
    HARMFUL,
    HARMFUL_SHARE,
    MIN_PER_STRATUM,
    RECORDS_DIR,
    SAFE,
    TEST_SHARE,
)
from ussafety.evaluate.gold.pairs import collect_pairs, load_records


def allocate(sizes: Mapping[str, int], total: int, floor: int = MIN_PER_STRATUM) -> dict[str, int]:
    """Items per stratum: ``min(size, floor)`` each, the rest in proportion to sqrt(size), capped at size.

    Square-root allocation keeps the large strata (plain refusals, plain answers) from
    swamping the rare ones (off-task, refusal phrases after harmful text) while still
    giving them the most items. Deterministic; the sum is ``min(total, sum(sizes))``.
    """
    keys = sorted(sizes)
    alloc = {k: min(sizes[k], floor) for k in keys}
    if sum(alloc.values()) > total:
        raise ValueError(f"{len(keys)} strata x floor {floor} exceed the total {total}")
    while True:
        rem = total - sum(alloc.values())
        open_ = [k for k in keys if alloc[k] < sizes[k]]
        if rem <= 0 or not open_:
            return alloc
        weight = {k: math.sqrt(sizes[k]) for k in open_}
        wsum = sum(weight.values())
        quota = {k: rem * weight[k] / wsum for k in open_}
        give = {k: min(int(quota[k]), sizes[k] - alloc[k]) for k in open_}
        if not any(give.values()):  # hand out the remainder one by one, largest quota first
            k = max(open_, key=lambda k: (quota[k] - int(quota[k]), quota[k], k))
            give = {k: 1}
        for k, g in give.items():
            alloc[k] += g


def _interleave(lists: Sequence[Sequence[Any]]) -> list[Any]:
    out: list[Any] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def _select(pairs: Sequence[dict[str, Any]], k: int, rng: random.Random) -> list[tuple[dict, dict]]:
    """k pairs of one stratum, spread evenly over groups, then over (condition, source) in a group.

    A pair produced by several groups is a candidate in each (represented by one of its
    runs in that group, chosen by ``rng``) and is taken at most once; the item's run and
    condition are those of the group it was drawn for.
    """
    by_group: dict[str, dict[tuple[str, str], list[tuple[dict, dict]]]] = defaultdict(lambda: defaultdict(list))
    for pair in sorted(pairs, key=lambda p: p["id"]):
        occ_by_group: dict[str, list[dict]] = defaultdict(list)
        for occ in pair["occurrences"]:
            occ_by_group[occ["group"]].append(occ)
        for group in sorted(occ_by_group):
            occs = sorted(occ_by_group[group], key=lambda o: (o["condition"], str(o["row"])))
            occ = occs[rng.randrange(len(occs))]
            by_group[group][(occ["condition"], occ["source"])].append((pair, occ))
    ordered_groups = []
    groups = sorted(by_group)
    rng.shuffle(groups)
    for group in groups:
        buckets = by_group[group]
        keys = sorted(buckets)
        rng.shuffle(keys)
        lists = []
        for key in keys:
            cand = list(buckets[key])
            rng.shuffle(cand)
            lists.append(cand)
        ordered_groups.append(_interleave(lists))
    taken: list[tuple[dict, dict]] = []
    seen: set[str] = set()
    for pair, occ in _interleave(ordered_groups):
        if len(taken) >= k:
            break
        if pair["id"] in seen:
            continue
        seen.add(pair["id"])
        taken.append((pair, occ))
    return taken


def split_parts(items: list[dict[str, Any]], seed: int, test_share: float = TEST_SHARE) -> None:
    """Set ``part`` to ``test`` on a seeded ~``test_share`` of the items, ``train`` on the rest.

    Stratified: each stratum's test count is its share rounded (largest remainder, so the
    total is ``round(test_share * n)``). Grouped by prompt: all items with the same prompt
    go to the same part, so a judge tuned on ``train`` has never seen a ``test`` prompt.
    Prompts are taken in a seeded order while they fit every stratum's target (then
    with one item of slack), so a stratum can miss its target by an item or two.
    """
    n = len(items)
    by_stratum = Counter(it["stratum"] for it in items)
    exact = {s: test_share * c for s, c in by_stratum.items()}
    target = {s: int(v) for s, v in exact.items()}
    total = round(test_share * n)
    for s in sorted(exact, key=lambda s: (-(exact[s] - int(exact[s])), s))[: max(0, total - sum(target.values()))]:
        target[s] += 1
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_prompt[it["prompt"]].append(it)
    prompts = sorted(by_prompt)
    random.Random(f"{seed}/split").shuffle(prompts)
    counts: Counter = Counter()
    chosen: set[str] = set()
    for slack in (0, 1):
        for prompt in prompts:
            if sum(counts.values()) >= total:
                break
            if prompt in chosen:
                continue
            add = Counter(it["stratum"] for it in by_prompt[prompt])
            if all(counts[s] + c <= target[s] + slack for s, c in add.items()):
                chosen.add(prompt)
                counts.update(add)
    for it in items:
        it["part"] = "test" if it["prompt"] in chosen else "train"


def build_sample(
    records_dir: Path | str = RECORDS_DIR,
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    *,
    harmful_share: float = HARMFUL_SHARE,
    test_share: float = TEST_SHARE,
    floor: int = MIN_PER_STRATUM,
    exclude: Iterable[str] = GUIDE_EXAMPLE_IDS,
) -> list[dict[str, Any]]:
    """The gold sample rebuilt from the run records: same records + n + seed -> same items.

    Each item: ``id``, ``part`` (train/test), ``prompt_type``, ``kind``, ``source``,
    ``row``, ``run_id``, ``condition``, ``group``, ``stratum``, ``prompt``, ``response``
    and ``also_in`` (every run id that produced the same pair, this one included).
    Items are ordered by prompt type, stratum and id.
    """
    pairs = collect_pairs(load_records(records_dir), exclude=exclude)
    by_type: dict[str, dict[str, list[dict]]] = {HARMFUL: defaultdict(list), SAFE: defaultdict(list)}
    for pair in pairs.values():
        by_type[pair["prompt_type"]][pair["stratum"]].append(pair)
    avail = {t: sum(len(v) for v in strata.values()) for t, strata in by_type.items()}
    want = {HARMFUL: round(n * harmful_share)}
    want[SAFE] = n - want[HARMFUL]
    for a, b in ((HARMFUL, SAFE), (SAFE, HARMFUL)):  # pass a shortfall on to the other type
        if want[a] > avail[a]:
            want[b] += want[a] - avail[a]
            want[a] = avail[a]
    items: list[dict[str, Any]] = []
    for ptype in (HARMFUL, SAFE):
        strata = by_type[ptype]
        if not strata:
            continue
        alloc = allocate({s: len(p) for s, p in strata.items()}, min(want[ptype], avail[ptype]), floor)
        for stratum in sorted(strata):
            rng = random.Random(f"{seed}/{stratum}")
            for pair, occ in _select(strata[stratum], alloc[stratum], rng):
                items.append(
                    {
                        "id": pair["id"],
                        "part": None,
                        "prompt_type": ptype,
                        "kind": occ["kind"],
                        "source": occ["source"],
                        "row": occ["row"],
                        "run_id": occ["run_ids"][0],
                        "condition": occ["condition"],
                        "group": occ["group"],
                        "stratum": stratum,
                        "prompt": pair["prompt"],
                        "response": pair["response"],
                        "also_in": sorted({r for o in pair["occurrences"] for r in o["run_ids"]}),
                    }
                )
    items.sort(key=lambda it: (it["prompt_type"], it["stratum"], it["id"]))
    split_parts(items, seed, test_share)
    return items
