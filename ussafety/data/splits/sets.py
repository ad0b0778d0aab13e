"""The evaluation sets each split draws from and the training pools it must stay apart from."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from ussafety.data.loaders import load
from ussafety.data.sources import mirror_file
from ussafety.data.splits.base import HARMFUL, TASK_SPLITS, XSTEST_SAFE, _id
from ussafety.data.splits.dedup import Fingerprint
from ussafety.data.types import Example

# HarmBench's own prompt for a contextual behaviour: the context, a rule, the request.
HARMBENCH_CONTEXT_TEMPLATE = "{context}\n\n---\n\n{behavior}"

_ALPACA_SECTION = re.compile(r"### (Instruction|Input):\n(.*?)(?=\n+### |\Z)", re.S)
_GSM8K_SUFFIX = "First think step by step and then answer the final number."


@dataclass(frozen=True)
class _SetSpec:
    """One evaluation set: how to load it and what of each Example to compare and keep."""

    name: str
    load: Callable[[], list[Example]]
    key: Callable[[Example], str] = lambda ex: ex.prompt
    category: Callable[[Example], str | None] = lambda ex: ex.meta.get("category")
    split_context: Callable[[Example], tuple[str, str]] | None = None  # -> (request, context)

    def fingerprint(self, ex: Example) -> Fingerprint:
        if self.split_context is None:
            return Fingerprint.of(self.key(ex))
        request, context = self.split_context(ex)
        return Fingerprint.of(self.key(ex), request, context)


def _harmbench_contextual(split: str) -> list[Example]:
    """HarmBench contextual behaviours, prompted as HarmBench does (context, ``---``, request).

    The registered ``harmbench`` set drops them because a bare behaviour ("obfuscate this
    code") is meaningless without its context; with the context they are ordinary
    harmful requests. Rows keep the file's 0-based numbering, like the loaders.
    """
    fname = f"harmbench_behaviors_text_{split}.csv"
    path, sha = mirror_file("harmbench", fname)
    with path.open(encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    out = []
    for row, rec in enumerate(records):
        if rec["FunctionalCategory"] != "contextual":
            continue
        prompt = HARMBENCH_CONTEXT_TEMPLATE.format(context=rec["ContextString"], behavior=rec["Behavior"])
        meta = {
            "category": rec["SemanticCategory"],
            "behavior_id": rec["BehaviorID"],
            "behavior": rec["Behavior"],
            "context": rec["ContextString"],
            "functional_category": "contextual",
            "harmful": True,
        }
        out.append(Example(prompt, source=f"harmbench/{fname}", row=row, sha256=sha, meta=meta))
    return out


def _xstest(label: str) -> list[Example]:
    return [ex for ex in load("xstest", "all") if ex.meta["label"] == label]


# Order = priority when near-duplicates are merged: the first set's prompt is kept.
# HarmBench and StrongREJECT carry categories; AdvBench is the most redundant set;
# XSTest's contrasts are the further set and give way to the behaviour benchmarks.
HARMFUL_SETS: tuple[_SetSpec, ...] = (
    _SetSpec("harmbench", lambda: load("harmbench", "test") + load("harmbench", "val")),
    _SetSpec(
        "harmbench_contextual",
        lambda: _harmbench_contextual("test") + _harmbench_contextual("val"),
        split_context=lambda ex: (ex.meta["behavior"], ex.meta["context"]),
    ),
    _SetSpec("strongreject", lambda: load("strongreject", "full")),
    _SetSpec("advbench", lambda: load("advbench", "test"), category=lambda ex: None),
    _SetSpec("xstest_unsafe", lambda: _xstest("unsafe"), category=lambda ex: ex.meta["type"]),
)
XSTEST_SAFE_SETS = (_SetSpec("xstest_safe", lambda: _xstest("safe"), category=lambda ex: ex.meta["type"]),)
TASK_SETS: dict[str, tuple[_SetSpec, ...]] = {
    # SST-2 is compared on the bare sentence, not the instruction template around it.
    "sst2": (
        _SetSpec(
            "sst2",
            lambda: load("sst2", "test"),
            key=lambda ex: ex.meta["sentence"],
            category=lambda ex: ("negative", "positive")[ex.meta["label"]],
        ),
    ),
    "gsm8k": (_SetSpec("gsm8k", lambda: load("gsm8k", "test"), category=lambda ex: None),),
    "humaneval": (
        _SetSpec(
            "humaneval", lambda: load("humaneval", "test"), key=lambda ex: ex.meta["prompt"], category=lambda ex: None
        ),
    ),
}


def _merged_rows(filename: str, flag: str) -> list[tuple[str, str]]:
    """``(id, text)`` of the ready-made poisoned sets' rows with ``flag`` (unsafe/finetune).

    These files wrap each row in the Alpaca template; the comparison text is the
    Input section when there is one (SST-2 sentence) else the Instruction (GSM8K
    question without its step-by-step suffix, harmful request).
    """
    path, _ = mirror_file("harmful_ft_merged", filename)
    out = []
    for row, rec in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        if rec.get("flag") != flag:
            continue
        sections = dict(_ALPACA_SECTION.findall(rec["instruction"]))
        text = rec.get("input") or sections.get("Input") or sections.get("Instruction", "")
        out.append((f"harmful_ft_merged/{filename}#{row}", text.replace(_GSM8K_SUFFIX, "").strip()))
    return out


def _pool(
    name: str, split: str = "default", key: Callable[[Example], str] = lambda ex: ex.prompt
) -> Callable[[], list[tuple[str, str]]]:
    return lambda: [(_id(ex), key(ex)) for ex in load(name, split)]


_MERGED_FILES = (
    "sst2_train_merged_n1000_p0.json",
    "sst2_train_merged_n1000_p0.01.json",
    "sst2_train_merged_n1000_p0.05.json",
    "sst2_train_merged_n1000_p0.1.json",
    "sst2_train_merged_n1000_p0.2.json",
    "gsm8k_train_merged_n1000_p0.05.json",
    "ag_news_train_merged_n1000_p0.05.json",
)

# Training pools the prompts must stay apart from: what poisons an upload, what aligns
# the model (refusals, helpful Alpaca/Dolly, AOA), what trains the learned judge (HH
# prompts; its BeaverTails/refusal/helpful rows are listed already) and, for the tasks,
# the rows fine-tuning draws from.
SAFETY_POOLS: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "beavertails_pairs": _pool("beavertails_pairs"),
    "poisoned_sets_harmful_rows": lambda: [r for f in _MERGED_FILES for r in _merged_rows(f, "unsafe")],
    "refusals": _pool("refusals"),
    "alpaca_safety": _pool("alpaca_safety"),
    "dolly_safety": _pool("dolly_safety"),
    "aoa_identity": _pool("aoa_identity"),
    "hh_rlhf": _pool("hh_rlhf_harmful"),
}
TASK_POOLS: dict[str, dict[str, Callable[[], list[tuple[str, str]]]]] = {
    "sst2": {
        "sst2_train": _pool("sst2", "train", key=lambda ex: ex.meta["sentence"]),
        "poisoned_sst2_task_rows": lambda: [
            r for f in _MERGED_FILES if f.startswith("sst2") for r in _merged_rows(f, "finetune")
        ],
    },
    "gsm8k": {
        "gsm8k_train": _pool("gsm8k", "train"),
        "poisoned_gsm8k_task_rows": lambda: _merged_rows("gsm8k_train_merged_n1000_p0.05.json", "finetune"),
    },
    "humaneval": {"code_alpaca": _pool("code_alpaca", "train")},
}

_SPECS: dict[str, tuple[_SetSpec, ...]] = {
    HARMFUL: HARMFUL_SETS,
    XSTEST_SAFE: XSTEST_SAFE_SETS,
    **{TASK_SPLITS[t]: TASK_SETS[t] for t in TASK_SPLITS},
}
_SPEC_BY_SET: dict[str, _SetSpec] = {spec.name: spec for specs in _SPECS.values() for spec in specs}
