"""How far the two readers agree, and the final labels from their labels and an adjudication.

Why kept here rather than in :mod:`ussafety.stats`: the agreement table is part of the
labelling protocol (``docs/labelling.md``): per prompt type with its own label set, and the
harmful-vs-rest split that ASR counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ussafety.evaluate.gold.common import GOLD_DIR, HARMFUL, GoldError, write_jsonl
from ussafety.evaluate.judges.base import LABELS


def _label_map(labels: Mapping[str, Any]) -> dict[str, str]:
    return {k: (v["label"] if isinstance(v, Mapping) else v) for k, v in labels.items()}


def _note(labels: Mapping[str, Any], iid: str) -> str | None:
    v = labels.get(iid)
    return v.get("note") if isinstance(v, Mapping) else None


def cohens_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` as sklearn's ``cohen_kappa_score``; nan when p_e is 1."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs paired labels ({len(a)} vs {len(b)})")
    n = len(a)
    if n == 0:
        raise ValueError("kappa needs at least one item")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def _pair_stats(a: Sequence[str], b: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, Any]:
    order = list(labels) if labels is not None else sorted(set(a) | set(b))
    order += sorted((set(a) | set(b)) - set(order))
    table = {x: {y: 0 for y in order} for x in order}
    for x, y in zip(a, b):
        table[x][y] += 1
    n = len(a)
    return {
        "n": n,
        "agreement": (sum(x == y for x, y in zip(a, b)) / n) if n else math.nan,
        "kappa": cohens_kappa(a, b) if n else math.nan,
        "labels": order,
        "confusion": table,
    }


def agreement(
    labels_a: Mapping[str, Any], labels_b: Mapping[str, Any], items: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """How far two readers agree, on the ids both labelled.

    ``labels_*``: ``{id: label}`` or the output of :func:`load_labels`. Returns ``n``,
    raw ``agreement``, Cohen's ``kappa``, ``confusion`` (rows: reader a, columns: reader
    b), ``disagreements`` (ids), ``n_only_a``/``n_only_b``; with ``items``, also
    ``by_prompt_type`` (each with its own label set) and ``harmful_binary`` (harmful
    prompts, ``harmful`` vs anything else: the split that ASR counts).
    """
    a, b = _label_map(labels_a), _label_map(labels_b)
    ids = sorted(set(a) & set(b))
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    out = _pair_stats(xs, ys)
    out["disagreements"] = [i for i in ids if a[i] != b[i]]
    out["n_only_a"], out["n_only_b"] = len(set(a) - set(b)), len(set(b) - set(a))
    if items is not None:
        ptype = {str(it["id"]): it["prompt_type"] for it in items}
        out["by_prompt_type"] = {}
        for t, labs in LABELS.items():
            sub = [i for i in ids if ptype.get(i) == t]
            if sub:
                out["by_prompt_type"][t] = _pair_stats([a[i] for i in sub], [b[i] for i in sub], labs)
        sub = [i for i in ids if ptype.get(i) == HARMFUL]
        if sub:
            bx = ["harmful" if a[i] == "harmful" else "not_harmful" for i in sub]
            by = ["harmful" if b[i] == "harmful" else "not_harmful" for i in sub]
            out["harmful_binary"] = _pair_stats(bx, by, ["harmful", "not_harmful"])
    return out


def resolve(
    labels_a: Mapping[str, Any],
    labels_b: Mapping[str, Any],
    adjudicated: Mapping[str, Any] | None = None,
    *,
    allow_unresolved: bool = False,
) -> dict[str, dict[str, Any]]:
    """Final gold labels: the readers' label where they agree, the adjudicator's where given.

    An adjudicated label wins even where the readers agreed (the adjudicator may correct
    a shared mistake). Returns ``{id: {"label", "label_a", "label_b", "agreed",
    "resolved_by", "note_a", "note_b", "note_adjudicated"}}`` with ``resolved_by`` in
    ``agreement`` / ``adjudication`` (None, and ``label`` None, for an unresolved
    disagreement, only with ``allow_unresolved``).
    Raises :class:`GoldError` when the readers labelled different ids, the adjudication
    names an id neither reader labelled, or a disagreement is left unresolved.
    """
    a, b = _label_map(labels_a), _label_map(labels_b)
    adj = _label_map(adjudicated or {})
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise GoldError(
            f"the readers labelled different items: {len(only_a)} only by a "
            f"({', '.join(only_a[:5])}), {len(only_b)} only by b ({', '.join(only_b[:5])})"
        )
    stray = sorted(set(adj) - set(a))
    if stray:
        raise GoldError(f"adjudication names {len(stray)} id(s) the readers did not label: {', '.join(stray[:5])}")
    out, unresolved = {}, []
    for iid in sorted(a):
        agreed = a[iid] == b[iid]
        if iid in adj:
            label, how = adj[iid], "adjudication"
        elif agreed:
            label, how = a[iid], "agreement"
        else:
            label, how = None, None
            unresolved.append(iid)
        out[iid] = {
            "label": label,
            "label_a": a[iid],
            "label_b": b[iid],
            "agreed": agreed,
            "resolved_by": how,
            "note_a": _note(labels_a, iid),
            "note_b": _note(labels_b, iid),
            "note_adjudicated": _note(adjudicated or {}, iid),
        }
    if unresolved and not allow_unresolved:
        raise GoldError(f"{len(unresolved)} disagreement(s) have no adjudicated label: {', '.join(unresolved[:10])}")
    return out


def write_gold_labels(
    resolved: Mapping[str, Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    path: Path | str = GOLD_DIR / "labels.jsonl",
) -> Path:
    """Final labels with both raw labels, part and prompt type, in item order."""
    rows = []
    for it in items:
        r = resolved.get(it["id"])
        if r is not None:
            rows.append({"id": it["id"], "part": it["part"], "prompt_type": it["prompt_type"], **r})
    return write_jsonl(Path(path), rows)
