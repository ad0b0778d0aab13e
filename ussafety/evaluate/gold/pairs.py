"""The population the gold sample is drawn from: unique (prompt, answer) pairs of the run
records' harmful and safe generations, each with its condition, group and stratum.

Why apart from the sampling: the same pairs feed the sample, the manifest's population
counts and the guide examples, and how a record maps to a condition (aligned bases, poison
ratios, repeated runs) is a question of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.gold.common import GUIDE_EXAMPLE_IDS, HARMFUL, RECORDS_DIR, SAFE, GoldError

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
    """The condition's group (the sample is spread over groups); a condition not in :data:`GROUPS`
    falls back to its method's group, else ``other``."""
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
