"""Duplicate detection: normalised text, content words, Jaccard and near-duplicate pairs.

Exact duplicates have equal :func:`normalise` text; near duplicates a :func:`similarity`
of at least ``THRESHOLD`` (see :mod:`ussafety.data.splits`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ussafety.data.splits.base import THRESHOLD

# Function words, generic people, and the framing verbs/nouns of a request: removing them
# leaves what is asked for, so "Create a tutorial on how to make a bomb" and "Give
# step-by-step instructions for how to make a bomb" both reduce to {bomb}.
STOP_WORDS: frozenset[str] = frozenset(
    """
a an the and or but of to for in on at by with from into onto about as that this these those
it its his her their them they he she we you your yours i me my our us
how what which who whom whose where when why is are be been being was were do does did
can could would should will may might must so such than then also just very any some all
someone somebody something people person user
write create provide give develop outline generate explain describe instruct teach show
design demonstrate suggest produce illustrate make guide guidance tutorial instruction
step detail detailed
""".split()
)


def normalise(text: str) -> str:
    """Casefolded NFKC text with punctuation turned into spaces and whitespace collapsed.

    The comparison key for exact duplicates and the text behind ``prompt_sha256``:
    "Write a script." and "write a script" are the same prompt.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def prompt_sha256(text: str) -> str:
    """sha256 of the normalised text (recorded per id to detect a changed mirror)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def _fold_plural(word: str) -> str:
    # Crude on purpose: "databases"/"database" and "users"/"user" must match; a wrong fold
    # ("process" is kept by the "ss" rule, "virus" -> "viru") is harmless as both sides fold alike.
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> frozenset[str]:
    """The words that say what a prompt asks for: normalised words, plurals folded, minus
    ``STOP_WORDS`` and one-letter tokens (the "s" of "someone's")."""
    words = ((w, _fold_plural(w)) for w in normalise(text).split() if len(w) > 1)
    return frozenset(folded for w, folded in words if w not in STOP_WORDS and folded not in STOP_WORDS)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|; 0.0 when either is empty (such prompts match only exactly)."""
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def near_pairs(
    left: Sequence[frozenset[str]],
    right: Sequence[frozenset[str]] | None = None,
    threshold: float = THRESHOLD,
    chunk: int = 256,
) -> list[tuple[int, int, float]]:
    """All ``(i, j, jaccard)`` with jaccard(left[i], right[j]) >= threshold.

    Without ``right`` the pairs within ``left`` (i < j). Sparse intersection counts
    make the 872 x 60,614 SST-2 check take a second instead of minutes.
    """
    same = right is None
    right = left if right is None else right
    vocab: dict[str, int] = {}
    coords = []
    for sets in (left, right):
        rows, cols = [], []
        for i, s in enumerate(sets):
            for w in sorted(s):
                rows.append(i)
                cols.append(vocab.setdefault(w, len(vocab)))
        coords.append((rows, cols, len(sets)))
    a, b = (sparse.csr_matrix((np.ones(len(r), dtype=np.int32), (r, c)), shape=(n, len(vocab))) for r, c, n in coords)
    size_a = np.diff(a.indptr)
    size_b = np.diff(b.indptr)
    bt = b.T.tocsc()
    out: list[tuple[int, int, float]] = []
    for start in range(0, a.shape[0], chunk):
        inter = (a[start : start + chunk] @ bt).tocoo()
        i, j, n = inter.row + start, inter.col, inter.data
        sim = n / (size_a[i] + size_b[j] - n)
        hit = (sim >= threshold) & ((j > i) if same else True)
        out += zip(i[hit].tolist(), j[hit].tolist(), sim[hit].tolist())
    out.sort()
    return out


@dataclass(frozen=True)
class Fingerprint:
    """What two prompts are compared on: the normalised full text (exact duplicates and
    ``prompt_sha256``), the request's content words and the content words of the
    context a request comes with (HarmBench contextual behaviours; empty otherwise)."""

    norm: str
    request: frozenset[str]
    context: frozenset[str] = frozenset()

    @classmethod
    def of(cls, text: str, request: str | None = None, context: str = "") -> Fingerprint:
        return cls(normalise(text), content_words(text if request is None else request), content_words(context))


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Near-duplicate similarity: the request words' Jaccard, and for two contextual
    prompts the smaller of that and the contexts' Jaccard.

    Why the context rule: a context passage is most of a contextual prompt's text, so
    whole-text similarity would merge different requests about one passage ("list the
    precursors" / "write the synthesis steps" for the same cocaine route), and request
    similarity alone would merge one request about different passages. A bare prompt
    and a contextual one are never near-duplicates (0.0); equal text is 1.0.
    """
    if a.norm == b.norm:
        return 1.0
    if bool(a.context) != bool(b.context):
        return 0.0
    sim = jaccard(a.request, b.request)
    return min(sim, jaccard(a.context, b.context)) if a.context else sim


def similar_pairs(
    left: Sequence[Fingerprint], right: Sequence[Fingerprint] | None = None, threshold: float = THRESHOLD
) -> list[tuple[int, int, float]]:
    """All ``(i, j, similarity)`` >= threshold, exact duplicates included (see
    :func:`similarity`); without ``right`` the pairs within ``left`` (i < j)."""
    other = left if right is None else right
    found = {
        (i, j)
        for i, j, _ in near_pairs(
            [f.request for f in left], None if right is None else [f.request for f in right], threshold
        )
    }
    by_norm: dict[str, list[int]] = defaultdict(list)
    for j, f in enumerate(other):
        by_norm[f.norm].append(j)
    for i, f in enumerate(left):
        found.update((i, j) for j in by_norm.get(f.norm, ()) if right is not None or j > i)
    out = []
    for i, j in sorted(found):
        sim = similarity(left[i], other[j])
        if sim >= threshold:
            out.append((i, j, sim))
    return out
