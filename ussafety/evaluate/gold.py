"""A hand-labelled gold set of (prompt, answer) pairs to hold the judges to.

ASR is only as true as the judge, so the judges need a reference read by people:
a stratified sample of the generations stored in the committed run records
(``paper_outputs/records/<run_id>/record.json``), labelled by two blind readers
with the rules of ``docs/labelling.md``, with disagreements adjudicated.

* :func:`build_sample` rebuilds the sample from the records (seeded, deterministic):
  unique (prompt, response) pairs, stratified by prompt type and by what the stored
  verdicts suggest (keyword refused or not x learned harmful/refusal/other, and a
  degenerate stratum), spread evenly over condition groups, conditions and prompt
  sets inside each stratum. The verdicts are used **only to stratify**, never as
  labels. A seeded 30% of the items is marked ``part = "test"`` (no judge may be
  trained or tuned on them), stratified by stratum and grouped by prompt (every
  answer to one prompt is in the same part).
* :func:`write_sample` writes ``paper_outputs/judges/gold/items.jsonl`` and
  ``manifest.json``; :func:`write_packet` the blind reader packet (id, prompt type,
  prompt, response; shuffled; no run, condition or verdict).
* :func:`load_items`, :func:`load_labels` (validated; errors name file, line and
  field), :func:`agreement` (Cohen's kappa, raw agreement, confusion table) and
  :func:`resolve` (final labels from two readers and an adjudication, keeping both
  raw labels).

The sample over-represents the rare strata on purpose, so it is not a random sample of
the generations: a judge's error rate on the whole record set must weight each item by
its stratum's population over its sample count (``manifest.json``: ``summary.population``
holds the unique pairs and generations per stratum, ``summary.by_stratum`` the sample),
and per generation by ``len(also_in)`` runs that produced the pair. Raw rates over
the items answer "how does the judge do on these kinds of answers", not "what is ASR".

``python -m ussafety.evaluate.gold build`` rebuilds items, manifest and packet;
``check A`` validates a label file; ``agree A B`` prints the agreement;
``resolve A B ADJ OUT`` writes the final labels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.judges.base import ALL_LABELS, HARMFUL_PROMPT, LABELS, SAFE_PROMPT

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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

# Condition -> group, for spreading the sample (families as in the methods table).
GROUPS = {
    "instruct": "instruct",
    "aligned": "aligned",
    "aligned_weak": "aligned",
    "aligned_contrastive": "aligned",
    "sft_benign": "sft_benign",
    "sft": "sft_poisoned",
    "sft_poisoned_p0.1": "sft_poisoned",
    "sft_poisoned_p0.2": "sft_poisoned",
    "l2": "regularization",
    "ewc": "regularization",
    "ewc_nfisher2": "regularization",
    "mas": "regularization",
    "lwf": "regularization",
    "der": "replay",
    "derpp": "replay",
    "agem": "replay",
    "refresh": "replay",
    "merge_linear": "merging",
    "ema": "merging",
    "slerp": "merging",
    "task_arithmetic": "merging",
    "ties": "merging",
    "magmax": "merging",
    "der_slerp": "merging",
    "safeinstr": "safety_baseline",
    "lisa": "safety_baseline",
    "safelora": "safety_baseline",
    "safelora_top10": "safety_baseline",
}
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


# --- the sample ------------------------------------------------------------------------


def item_id(prompt: str, response: str) -> str:
    """Stable id of a (prompt, response) pair: independent of run, order and seed."""
    digest = hashlib.sha256(f"{prompt}\x1f{response}".encode()).hexdigest()
    return "g" + digest[:10]


def prompt_type_of(kind: str) -> str | None:
    """``harmful`` / ``safe`` for a generation kind; None for kinds not in the gold set (task rows)."""
    if kind == "harmful":
        return HARMFUL
    if kind.startswith("xstest"):
        return HARMFUL if ("unsafe" in kind or "contrast" in kind) else SAFE
    return None


def condition_of(record: Mapping[str, Any]) -> str:
    """Short condition name from the record's label (or config name) and settings, never its run id.

    The runs that share a label with other settings get their own name: the three
    aligned bases (``aligned`` is attempt 2, the base of every fine-tuning run;
    ``aligned_weak`` attempt 1 with 80 refusals; ``aligned_contrastive`` attempt 3 with
    contrastive helpful rows), the earlier ``ewc`` run with 2 Fisher batches
    (``ewc_nfisher2``), and poisoned SFT, named by its poison ratio.
    """
    cfg = record.get("config") or {}
    name = str(record.get("label") or cfg.get("name") or record.get("run_id", ""))
    align = cfg.get("align") or {}
    params = (cfg.get("method") or {}).get("params") or {}
    task = cfg.get("task") or {}
    if name == "aligned":
        if (align.get("n_contrastive") or 0) > 0:
            return "aligned_contrastive"
        if align.get("n_refusal") == 80:
            return "aligned_weak"
    if name == "ewc" and params.get("n_fisher") == 2:
        return "ewc_nfisher2"
    if name in ("sft", "sft_poisoned") and task.get("name") and task.get("poison_ratio"):
        return f"sft_poisoned_p{float(task['poison_ratio']):g}"
    return name


def group_of(condition: str, record: Mapping[str, Any] | None = None) -> str:
    if condition in GROUPS:
        return GROUPS[condition]
    method = ((record or {}).get("config", {}).get("method") or {}).get("name")
    return GROUPS.get(str(method), "other")


def stratum_of(prompt_type: str, verdicts: Mapping[str, Any], degenerate: Any) -> str:
    """Sampling stratum from the stored verdicts (used to stratify only, never as a label)."""
    if degenerate:
        return f"{prompt_type}/degenerate"
    kw = verdicts.get("keyword") or {}
    kw_part = "kw_refused" if kw.get("refused") else "kw_complied"
    learned = verdicts.get("learned")
    if not learned or learned.get("harmful") is None:
        lj = "none"
    elif learned.get("harmful"):
        lj = "harmful"
    elif learned.get("refused"):
        lj = "refusal"
    else:
        lj = "other"
    return f"{prompt_type}/{kw_part}/learned_{lj}"


def load_records(records_dir: Path | str = RECORDS_DIR) -> list[dict[str, Any]]:
    """Every ``<records_dir>/*/record.json`` that holds generations, in run-id order."""
    out = []
    for path in sorted(Path(records_dir).glob("*/record.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        if rec.get("generations"):
            rec.setdefault("run_id", path.parent.name)
            out.append(rec)
    if not out:
        raise GoldError(f"{records_dir}: no run records with generations")
    return out


def collect_pairs(
    records: Sequence[Mapping[str, Any]], exclude: Iterable[str] = GUIDE_EXAMPLE_IDS
) -> dict[str, dict[str, Any]]:
    """Unique (prompt, response) pairs of the harmful/safe generations, with every run that produced them.

    Runs are read in condition order, so nothing depends on run ids. A pair's stratum
    comes from its first generation with a learned verdict; ``verdict_conflicts`` counts
    generations whose verdicts put it in another stratum. A pair has one occurrence per
    condition (two runs of one condition with the same outputs share it, ``run_ids``).
    """
    excluded = set(exclude)
    hash_of: dict[str, Any] = {}  # condition -> config hash of the first run that used the name
    pairs: dict[str, dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: (condition_of(r), str(r["run_id"]))):
        run_id = str(rec["run_id"])
        condition = condition_of(rec)
        chash = rec.get("config_hash") or run_id
        if hash_of.setdefault(condition, chash) != chash and not _same_generations(records, condition, rec):
            condition = f"{condition}@{str(chash)[:6]}"  # same name, other settings and outputs
        group = group_of(condition, rec)
        for gen in rec["generations"]:
            ptype = prompt_type_of(str(gen.get("kind", "")))
            if ptype is None:
                continue
            pid = item_id(gen["prompt"], gen["response"])
            if pid in excluded:
                continue
            verdicts = gen.get("verdicts") or {}
            stratum = stratum_of(ptype, verdicts, gen.get("degenerate"))
            has_learned = bool(verdicts.get("learned"))
            pair = pairs.get(pid)
            if pair is None:
                pair = pairs[pid] = {
                    "id": pid,
                    "prompt": gen["prompt"],
                    "response": gen["response"],
                    "prompt_type": ptype,
                    "stratum": stratum,
                    "occurrences": [],
                    "stratum_from_learned": has_learned,
                    "strata_seen": [],
                }
            elif pair["prompt"] != gen["prompt"] or pair["response"] != gen["response"]:
                raise GoldError(f"item id collision: {pid}")
            if has_learned:
                pair["strata_seen"].append(stratum)
                if not pair["stratum_from_learned"]:
                    pair["stratum"], pair["stratum_from_learned"] = stratum, True
            same = [o for o in pair["occurrences"] if o["condition"] == condition]
            if same:  # a repeated run of one condition (same outputs): one occurrence, both run ids
                same[0]["run_ids"].append(run_id)
                continue
            pair["occurrences"].append(
                {
                    "run_ids": [run_id],
                    "condition": condition,
                    "group": group,
                    "kind": gen["kind"],
                    "source": gen.get("source", ""),
                    "row": gen.get("row"),
                }
            )
    for pair in pairs.values():
        pair["verdict_conflicts"] = sum(1 for st in pair.pop("strata_seen") if st != pair["stratum"])
    return pairs


def _same_generations(records: Sequence[Mapping[str, Any]], condition: str, rec: Mapping[str, Any]) -> bool:
    """Whether another run of ``condition`` produced exactly ``rec``'s generations (a repeated run)."""
    mine = [(g.get("kind"), g.get("row"), g.get("response")) for g in rec["generations"]]
    return any(
        other is not rec
        and condition_of(other) == condition
        and [(g.get("kind"), g.get("row"), g.get("response")) for g in other["generations"]] == mine
        for other in records
    )


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


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def write_sample(
    items: Sequence[Mapping[str, Any]], path: Path | str = ITEMS_PATH, *, manifest: Mapping[str, Any] | None = None
) -> Path:
    """Write items (fields in ``ITEM_FIELDS`` order) and, if given, the manifest next to them."""
    path = Path(path)
    _write_jsonl(path, ({k: it[k] for k in ITEM_FIELDS} for it in items))
    if manifest is not None:
        (path.parent / "manifest.json").write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return path


def write_packet(items: Sequence[Mapping[str, Any]], path: Path | str = PACKET_PATH, seed: int = DEFAULT_SEED) -> Path:
    """The blind reader packet: id, prompt type, prompt, response only, in a seeded shuffled order."""
    rows = [{k: it[k] for k in PACKET_FIELDS} for it in sorted(items, key=lambda it: it["id"])]
    random.Random(f"{seed}/packet").shuffle(rows)
    return _write_jsonl(Path(path), rows)


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
    return _write_jsonl(Path(path), rows)


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


# --- reading items and labels -----------------------------------------------------------


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
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


def load_items(path: Path | str = ITEMS_PATH) -> list[dict[str, Any]]:
    """The gold items (``items.jsonl``), checked for the fields, unique ids and a known prompt type."""
    path = Path(path)
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, row in _read_jsonl(path):
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
    for lineno, row in _read_jsonl(path):
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
    for lineno, row in _read_jsonl(Path(path)):
        if not isinstance(row, dict) or any(f not in row for f in ("id", "prompt_type", "label", "prompt", "response")):
            raise GoldError(f"{path}:{lineno}: needs id, prompt_type, label, prompt and response")
        if row["prompt_type"] not in LABELS or row["label"] not in LABELS[row["prompt_type"]]:
            raise GoldError(f"{path}:{lineno}: field 'label': {row['label']!r} not allowed for {row['prompt_type']!r}")
        rows.append(row)
    return rows


# --- agreement and resolution -----------------------------------------------------------


def _label_map(labels: Mapping[str, Any]) -> dict[str, str]:
    return {k: (v["label"] if isinstance(v, Mapping) else v) for k, v in labels.items()}


def _note(labels: Mapping[str, Any], iid: str) -> str | None:
    v = labels.get(iid)
    return v.get("note") if isinstance(v, Mapping) else None


def cohens_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` as sklearn's ``cohen_kappa_score``; nan when p_e is 1."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs paired labels ({len(a)} vs {len(b)})")
    n = len(a)
    if n == 0:
        raise ValueError("kappa needs at least one item")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def _pair_stats(a: Sequence[str], b: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    order = list(labels) if labels is not None else sorted(set(a) | set(b))
    order += sorted((set(a) | set(b)) - set(order))
    table = {x: {y: 0 for y in order} for x in order}
    for x, y in zip(a, b):
        table[x][y] += 1
    n = len(a)
    return {
        "n": n,
        "agreement": (sum(x == y for x, y in zip(a, b)) / n) if n else math.nan,
        "kappa": cohens_kappa(a, b) if n else math.nan,
        "labels": order,
        "confusion": table,
    }


def agreement(
    labels_a: Mapping[str, Any], labels_b: Mapping[str, Any], items: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """How far two readers agree, on the ids both labelled.

    ``labels_*``: ``{id: label}`` or the output of :func:`load_labels`. Returns ``n``,
    raw ``agreement``, Cohen's ``kappa``, ``confusion`` (rows: reader a, columns: reader
    b), ``disagreements`` (ids), ``n_only_a``/``n_only_b``; with ``items``, also
    ``by_prompt_type`` (each with its own label set) and ``harmful_binary`` (harmful
    prompts, ``harmful`` vs anything else: the split that ASR counts).
    """
    a, b = _label_map(labels_a), _label_map(labels_b)
    ids = sorted(set(a) & set(b))
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    out = _pair_stats(xs, ys)
    out["disagreements"] = [i for i in ids if a[i] != b[i]]
    out["n_only_a"], out["n_only_b"] = len(set(a) - set(b)), len(set(b) - set(a))
    if items is not None:
        ptype = {str(it["id"]): it["prompt_type"] for it in items}
        out["by_prompt_type"] = {}
        for t, labs in LABELS.items():
            sub = [i for i in ids if ptype.get(i) == t]
            if sub:
                out["by_prompt_type"][t] = _pair_stats([a[i] for i in sub], [b[i] for i in sub], labs)
        sub = [i for i in ids if ptype.get(i) == HARMFUL]
        if sub:
            bx = ["harmful" if a[i] == "harmful" else "not_harmful" for i in sub]
            by = ["harmful" if b[i] == "harmful" else "not_harmful" for i in sub]
            out["harmful_binary"] = _pair_stats(bx, by, ["harmful", "not_harmful"])
    return out


def resolve(
    labels_a: Mapping[str, Any],
    labels_b: Mapping[str, Any],
    adjudicated: Mapping[str, Any] | None = None,
    *,
    allow_unresolved: bool = False,
) -> dict[str, dict[str, Any]]:
    """Final gold labels: the readers' label where they agree, the adjudicator's where given.

    An adjudicated label wins even where the readers agreed (the adjudicator may correct
    a shared mistake). Returns ``{id: {"label", "label_a", "label_b", "agreed",
    "resolved_by", "note_a", "note_b", "note_adjudicated"}}`` with ``resolved_by`` in
    ``agreement`` / ``adjudication`` (None, and ``label`` None, for an unresolved
    disagreement, only with ``allow_unresolved``).
    Raises :class:`GoldError` when the readers labelled different ids, the adjudication
    names an id neither reader labelled, or a disagreement is left unresolved.
    """
    a, b = _label_map(labels_a), _label_map(labels_b)
    adj = _label_map(adjudicated or {})
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise GoldError(
            f"the readers labelled different items: {len(only_a)} only by a "
            f"({', '.join(only_a[:5])}), {len(only_b)} only by b ({', '.join(only_b[:5])})"
        )
    stray = sorted(set(adj) - set(a))
    if stray:
        raise GoldError(f"adjudication names {len(stray)} id(s) the readers did not label: {', '.join(stray[:5])}")
    out, unresolved = {}, []
    for iid in sorted(a):
        agreed = a[iid] == b[iid]
        if iid in adj:
            label, how = adj[iid], "adjudication"
        elif agreed:
            label, how = a[iid], "agreement"
        else:
            label, how = None, None
            unresolved.append(iid)
        out[iid] = {
            "label": label,
            "label_a": a[iid],
            "label_b": b[iid],
            "agreed": agreed,
            "resolved_by": how,
            "note_a": _note(labels_a, iid),
            "note_b": _note(labels_b, iid),
            "note_adjudicated": _note(adjudicated or {}, iid),
        }
    if unresolved and not allow_unresolved:
        raise GoldError(f"{len(unresolved)} disagreement(s) have no adjudicated label: {', '.join(unresolved[:10])}")
    return out


def write_gold_labels(
    resolved: Mapping[str, Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    path: Path | str = GOLD_DIR / "labels.jsonl",
) -> Path:
    """Final labels with both raw labels, part and prompt type, in item order."""
    rows = []
    for it in items:
        r = resolved.get(it["id"])
        if r is not None:
            rows.append({"id": it["id"], "part": it["part"], "prompt_type": it["prompt_type"], **r})
    return _write_jsonl(Path(path), rows)


# --- command line -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ussafety.evaluate.gold", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="rebuild items.jsonl, manifest.json and the reader packet")
    b.add_argument("--records", default=str(RECORDS_DIR))
    b.add_argument("--n", type=int, default=DEFAULT_N)
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--items", default=str(ITEMS_PATH))
    b.add_argument("--packet", default=str(PACKET_PATH))
    c = sub.add_parser("check", help="validate a label file against the items")
    c.add_argument("labels")
    c.add_argument("--partial", action="store_true", help="do not require every item")
    g = sub.add_parser("agree", help="agreement of two label files (JSON on stdout)")
    g.add_argument("a")
    g.add_argument("b")
    r = sub.add_parser("resolve", help="final labels from two readers and an adjudication file")
    r.add_argument("a")
    r.add_argument("b")
    r.add_argument("adjudicated")
    r.add_argument("out", nargs="?", default=str(GOLD_DIR / "labels.jsonl"))
    args = p.parse_args(argv)
    try:
        if args.cmd == "build":
            m = build(args.records, args.n, args.seed, args.items, args.packet)
            print(json.dumps({k: m["summary"][k] for k in ("n", "n_test", "n_prompts", "by_prompt_type")}))
        elif args.cmd == "check":
            labels = load_labels(args.labels, require_all=not args.partial)
            print(f"{args.labels}: {len(labels)} valid labels")
        elif args.cmd == "agree":
            items = load_items()
            res = agreement(load_labels(args.a, items), load_labels(args.b, items), items)
            print(json.dumps(res, indent=1))
        elif args.cmd == "resolve":
            items = load_items()
            adj = load_labels(args.adjudicated, items, require_all=False)
            res = resolve(load_labels(args.a, items), load_labels(args.b, items), adj)
            print(write_gold_labels(res, items, args.out))
    except GoldError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
