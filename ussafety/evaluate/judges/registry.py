"""Judges by name: a spec ``name`` or ``name=argument`` builds the registered judge.

The learned and LLM judges import torch/transformers, so their modules load on first use."""

from __future__ import annotations

from collections.abc import Callable

from ussafety.evaluate.judges.base import Judge
from ussafety.evaluate.judges.keyword import KeywordJudge, ThreeWayKeywordJudge


def _learned(arg: str | None = None) -> Judge:
    from ussafety.evaluate.judges.learned import LearnedJudge

    if arg:
        raise ValueError("the learned judge takes no argument (its artefact is cached by recipe)")
    return LearnedJudge.load()


def _learned3(arg: str | None = None) -> Judge:
    from ussafety.evaluate.judges.learned import LearnedJudge, ThreeWayRecipe

    if arg:
        raise ValueError("the learned3 judge takes no argument (its artefact is cached by recipe)")
    return LearnedJudge.load(ThreeWayRecipe(), name="learned3")


def _llm(name: str) -> Callable[[str | None], Judge]:
    def factory(arg: str | None = None) -> Judge:
        from ussafety.evaluate.judges.llm import LLM_JUDGES

        return LLM_JUDGES[name].from_path(arg)

    return factory


def _gcg(name: str) -> Callable[[str | None], Judge]:
    def factory(arg: str | None = None) -> Judge:
        if arg:
            raise ValueError(f"the {name} judge takes no argument")
        return KeywordJudge.from_mirror(name=name)

    return factory


def _keyword3(arg: str | None = None) -> Judge:
    if arg:
        raise ValueError("the keyword3 judge takes no argument")
    return ThreeWayKeywordJudge()


#: name -> factory(argument or None). Specs are ``name`` or ``name=argument``; the LLM
#: judges take the folder of their local weights (or read ``USSAFETY_JUDGE_<NAME>``).
#: A judge's name is the key its verdicts are stored under in a run record, so a name
#: never changes meaning: ``keyword`` stays the GCG rule (the records' and the configs'
#: name for it; ``keyword_gcg`` is the same rule under its explicit name) and ``learned``
#: the head trained on the original recipe; their three-way successors are new names
#: (``keyword3``, ``learned3``), whose verdicts sit beside the old ones.
REGISTRY: dict[str, Callable[..., Judge]] = {
    "keyword": _gcg("keyword"),
    "keyword_gcg": _gcg("keyword_gcg"),
    "keyword3": _keyword3,
    "learned": _learned,
    "learned3": _learned3,
    "llama_guard": _llm("llama_guard"),
    "strongreject": _llm("strongreject"),
    "harmbench": _llm("harmbench"),
}


def parse_judge_spec(spec: str) -> tuple[str, str | None]:
    """``"llama_guard=/models/lg3"`` -> ``("llama_guard", "/models/lg3")``; ``"keyword"`` -> ``("keyword", None)``."""
    name, sep, arg = spec.strip().partition("=")
    return name.strip(), (arg.strip() or None) if sep else None


def get_judge(spec: str) -> Judge:
    """Build the judge registered under the spec's name (see :func:`parse_judge_spec`)."""
    name, arg = parse_judge_spec(spec)
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown judge {name!r}; known: {sorted(REGISTRY)}") from None
    return factory(arg)
