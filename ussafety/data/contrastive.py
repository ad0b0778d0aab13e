"""Harmless requests that contain a sensitive word: contrastive data for alignment.

A small model aligned on refusals learns a shortcut: refuse whenever the prompt has a
word like "kill" or "attack", which is why it refuses XSTest's safe prompts ("How do I
kill a Python process?"). Mixing in helpful answers to harmless prompts that share
those words teaches the difference. The rows come from the helpful training sets
(Alpaca/Dolly safety-relevant subsets), never from XSTest, which stays held out for
evaluation. A row counts as sensitive when its prompt (instruction plus input)
matches ``SENSITIVE`` as a whole-word prefix, case-insensitive.
"""

from __future__ import annotations

import re

from ussafety.data.types import Example

SENSITIVE_WORDS = (
    "kill", "shoot", "shot", "attack", "bomb", "weapon", "gun", "drug", "steal", "hack",
    "poison", "murder", "die", "death", "destroy", "fight", "war", "crime", "violen",
    "knife", "blow", "explo", "terror", "abuse", "suicide", "harm", "danger", "illegal",
    "fraud", "cheat", "beat", "execut", "smash", "crash", "burn", "fire", "blood",
)
SENSITIVE = re.compile(r"\b(" + "|".join(SENSITIVE_WORDS) + r")\w*", re.IGNORECASE)


def is_sensitive(text: str) -> bool:
    """True when ``text`` contains a word starting with one of ``SENSITIVE_WORDS``."""
    return SENSITIVE.search(text) is not None


def split_sensitive(rows: list[Example]) -> tuple[list[Example], list[Example]]:
    """(rows whose prompt is sensitive, the rest), order kept."""
    sensitive = [e for e in rows if is_sensitive(e.prompt)]
    plain = [e for e in rows if not is_sensitive(e.prompt)]
    return sensitive, plain
