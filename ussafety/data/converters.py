"""Per named data set, how one record of its file becomes :class:`~ussafety.data.types.Example`
fields (or None: the row is dropped).

Why apart from the registry (:mod:`ussafety.data.loaders`): a converter is the one place that
knows a set's columns, and it must accept both the mirror's and the hub copy's names
(:func:`_first`); the registry only says which file and which converter. Provenance
(``source``, ``row``, ``sha256``) is added by the loader, never here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ussafety.data.origins import GCG_REFUSAL_PREFIXES
from ussafety.data.upload import alpaca_prompt, split_chat

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


def gsm8k(rec: Mapping[str, Any], split: str) -> Fields:
    answer = rec["answer"]
    if "####" not in answer:
        raise ValueError("answer has no '#### <number>' line")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", final):
        raise ValueError(f"final answer {final!r} is not a number")
    return _fields(rec["question"], answer, meta={"answer": final, "harmful": False})


def sst2(rec: Mapping[str, Any], split: str) -> Fields:
    label = int(rec["label"])
    if label not in (0, 1):
        raise ValueError(f"label {label} is not 0/1 (unlabelled GLUE test rows cannot be used)")
    sentence = rec["sentence"].strip()
    return _fields(
        SST2_TEMPLATE.format(sentence=sentence),
        ("negative", "positive")[label],
        meta={"label": label, "sentence": sentence, "harmful": False},
    )


def alpaca_like(instruction_key: str, input_key: str, output_key: str, extra_meta: tuple[str, ...] = ()) -> Converter:
    """Instruction (+ optional input) -> output; rows with an empty output are dropped."""

    def convert(rec: Mapping[str, Any], split: str) -> Fields | None:
        output = rec.get(output_key) or ""
        if not output.strip():
            return None
        meta = {k: rec[k] for k in extra_meta if k in rec}
        meta["harmful"] = False
        return _fields(alpaca_prompt(rec[instruction_key], rec.get(input_key)), output, meta=meta)

    return convert


def humaneval(rec: Mapping[str, Any], split: str) -> Fields:
    meta = {k: rec[k] for k in ("task_id", "prompt", "test", "entry_point", "canonical_solution")}
    meta["harmful"] = False
    return _fields(HUMANEVAL_TEMPLATE.format(code=rec["prompt"].rstrip("\n")), meta=meta)


def advbench(rec: Mapping[str, Any], split: str) -> Fields:
    return _fields(_first(rec, "goal", "prompt"), meta={"target": rec.get("target"), "harmful": True})


def harmbench(rec: Mapping[str, Any], split: str) -> Fields | None:
    if rec.get("FunctionalCategory", "standard") != "standard":
        return None
    meta = {"category": _first(rec, "SemanticCategory", "category"), "harmful": True}
    if rec.get("BehaviorID"):
        meta["behavior_id"] = rec["BehaviorID"]
    return _fields(_first(rec, "Behavior", "prompt"), meta=meta)


def strongreject(rec: Mapping[str, Any], split: str) -> Fields:
    return _fields(
        _first(rec, "forbidden_prompt", "prompt"),
        meta={"category": rec.get("category"), "prompt_source": rec.get("source"), "harmful": True},
    )


def xstest(rec: Mapping[str, Any], split: str) -> Fields | None:
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


def beavertails(rec: Mapping[str, Any], split: str) -> Fields | None:
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


def hh_single_turn(rec: Mapping[str, Any]) -> tuple[str, str, str] | None:
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


def hh(which: str) -> Converter:
    def convert(rec: Mapping[str, Any], split: str) -> Fields | None:
        parsed = hh_single_turn(rec)
        if parsed is None:
            return None
        prompt, chosen, rejected = parsed
        harmful = which == "rejected"
        return _fields(prompt, rejected if harmful else chosen, meta={"harmful": harmful, "side": which})

    return convert


def refusal(rec: Mapping[str, Any], split: str) -> Fields:
    output = rec["output"]
    return _fields(
        alpaca_prompt(rec["instruction"], rec.get("input")),
        output,
        meta={"harmful": False, "keyword_refusal": _is_keyword_refusal(output)},
    )


def aoa(rec: Any, split: str) -> Fields:
    messages = rec["messages"] if isinstance(rec, Mapping) else rec
    system, history, prompt, response = split_chat(messages)
    return _fields(prompt, response, history=history, system=system, meta={"harmful": False, "identity_shift": True})
