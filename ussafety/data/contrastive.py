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
    "kill",
    "shoot",
    "shot",
    "attack",
    "bomb",
    "weapon",
    "gun",
    "drug",
    "steal",
    "hack",
    "poison",
    "murder",
    "die",
    "death",
    "destroy",
    "fight",
    "war",
    "crime",
    "violen",
    "knife",
    "blow",
    "explo",
    "terror",
    "abuse",
    "suicide",
    "harm",
    "danger",
    "illegal",
    "fraud",
    "cheat",
    "beat",
    "execut",
    "smash",
    "crash",
    "burn",
    "fire",
    "blood",
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


# A refusal that the 29 GCG keywords miss ("It is not appropriate...", "No, ...", "I would
# advise against ..."), or an answer that lectures rather than helps (a corrected premise,
# a warning). Look-alike rows must be plain help, so anything matching this is left out.
SOFT_REFUSAL = re.compile(
    r"(not appropriate|inappropriate|cannot|can't|can not|won't|will not|unable to|not able to|"
    r"sorry|apolog|not advisable|not recommended|advise against|strongly advise|I must|refrain|"
    r"^No\b|^It is not|^That is not|not ethical|unethical|illegal|harmful|dangerous|"
    r"against the law|offensive|not okay|not acceptable|no evidence|not true|stereotyp|"
    r"discriminat|racist)",
    re.IGNORECASE,
)


def is_soft_refusal(text: str) -> bool:
    """True when ``text`` refuses or lectures in words the keyword judge does not list."""
    return SOFT_REFUSAL.search(text) is not None


def lookalike_rows(rows: list[Example]) -> list[Example]:
    """Rows of a refusal set that are plain help: safe requests in the refusal rows' phrasing.

    safety-tuned-llamas phrases every request the same way ("Research ...", "Compile a list
    of ...", "Demonstrate techniques for ..."), harmful or not, and about a fifth of its
    answers are not refusals ("Demonstrate techniques for throwing axes." -> how to throw an
    axe safely). An aligned base trained only on the refusals learns the phrasing, not the
    harm; these rows teach that the same phrasing with a harmless request gets an answer.
    Kept: rows whose answer has no GCG keyword (``meta.keyword_refusal`` false) and no soft
    refusal (:func:`is_soft_refusal`).
    """
    return [
        e for e in rows if not e.meta.get("keyword_refusal", True) and e.response and not is_soft_refusal(e.response)
    ]
