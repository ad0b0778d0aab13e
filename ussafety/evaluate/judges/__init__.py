"""Judges: per (prompt, response), a three-way label (answered / refused / off-task) and the
harmful and refused flags that follow from it.

``base`` holds the interface (:class:`Judge`, :class:`Verdict`, the labels, :func:`judge_pairs`)
and the degenerate-text detector; one module per judge (``keyword``, ``learned``, ``llm``);
``registry`` builds a judge from its spec. Judge modules import ``base`` (and the LLM judges
the keyword phrase lists) only, so there is no import cycle.
"""

from ussafety.evaluate.judges.base import (
    ALL_LABELS,
    COMPLIANCE,
    HARMFUL,
    LABELS,
    OFFTASK,
    REFUSAL,
    Judge,
    Verdict,
    is_degenerate,
    judge_pairs,
    label_from_flags,
    prompt_type_of,
)
from ussafety.evaluate.judges.keyword import KeywordJudge, ThreeWayKeywordJudge
from ussafety.evaluate.judges.registry import REGISTRY, get_judge, parse_judge_spec

__all__ = [
    "ALL_LABELS",
    "COMPLIANCE",
    "HARMFUL",
    "LABELS",
    "OFFTASK",
    "REFUSAL",
    "REGISTRY",
    "Judge",
    "KeywordJudge",
    "ThreeWayKeywordJudge",
    "Verdict",
    "get_judge",
    "is_degenerate",
    "judge_pairs",
    "label_from_flags",
    "parse_judge_spec",
    "prompt_type_of",
]
