"""Judges: per (prompt, response), did the model refuse, and is the answer harmful.

``base`` holds the interface (:class:`Judge`, :class:`Verdict`) and the degenerate-text
detector; one module per judge (``keyword``, ``learned``, ``llm``); ``registry`` builds a
judge from its spec. Judge modules import ``base`` only, so there is no import cycle.
"""

from ussafety.evaluate.judges.base import Judge, Verdict, is_degenerate
from ussafety.evaluate.judges.keyword import KeywordJudge
from ussafety.evaluate.judges.registry import REGISTRY, get_judge, parse_judge_spec

__all__ = ["REGISTRY", "Judge", "KeywordJudge", "Verdict", "get_judge", "is_degenerate", "parse_judge_spec"]
