"""Training the learned heads: the original ``learned`` head on the data recipe, and learned3
with its gold weight and L2 strength chosen by cross-validation on the gold training part.

Why the test rows are only predicted here: their predictions feed the held-out report
(``paper_outputs/judges/``), and no choice (L2 strength, gold weight) ever looks at them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from ussafety.evaluate.judges import base
from ussafety.evaluate.judges.base import HARMFUL_PROMPT
from ussafety.evaluate.judges.embedder import SentenceEmbedder
from ussafety.evaluate.judges.learned_cache import TrainResult, cache_key
from ussafety.evaluate.judges.learned_data import (
    ANSWER,
    CLASSES,
    GOLD_SOURCE,
    GUIDE_SOURCE,
    OFFTASK,
    REFUSAL,
    THREE_CLASSES,
    DataRecipe,
    LabeledPair,
    ThreeWayRecipe,
    build_dataset,
    build_three_way_dataset,
    summary,
)
from ussafety.evaluate.judges.learned_features import FEATURES3, embed_pairs, pair_features
from ussafety.evaluate.judges.learned_head import THRESHOLD, Head, balance_classes, fit_head, select_l2
from ussafety.progress import progress

#: The bar the learned3 selection aims at (issue 17), on the cross-validated gold training part.
ASR_GAP_BAR = 0.03


def predict_test(head: Head, x: torch.Tensor, pairs: list[LabeledPair]) -> list[dict[str, Any]]:
    """The ``test`` rows with the head's class probabilities, for the held-out report.

    One builder for both heads, so their prediction files have the same layout; the
    three-way head's rows also carry the prompt type and the gold id, which its report
    needs to map classes to gold labels.
    """
    test_idx = [i for i, p in enumerate(pairs) if p.split == "test"]
    proba = head.proba(x[test_idx]) if test_idx else torch.zeros(0, len(head.classes))
    three_way = tuple(head.classes) == THREE_CLASSES
    rows = []
    for k, i in enumerate(test_idx):
        p = pairs[i]
        row = {
            "prompt": p.prompt,
            "response": p.response,
            "label": p.label,
            "prompt_type": p.prompt_type,
            "source": p.source,
            "weight": p.weight,
            "id": p.provenance.get("id"),
            "proba": {c: float(proba[k, j]) for j, c in enumerate(head.classes)},
        }
        rows.append(row if three_way else {f: v for f, v in row.items() if f not in ("prompt_type", "id")})
    return rows


def train(
    recipe: DataRecipe | None = None, embedder: SentenceEmbedder | None = None, pairs: list[LabeledPair] | None = None
) -> TrainResult:
    """Build the data, embed it, pick L2 on validation prompts, fit, predict the test split."""
    recipe = recipe or DataRecipe()
    t0 = time.perf_counter()
    pairs = pairs if pairs is not None else build_dataset(recipe)
    embedder = embedder or SentenceEmbedder()
    t_embed = time.perf_counter()
    x = embed_pairs(embedder, [p.prompt for p in pairs], [p.response for p in pairs])
    embed_s = time.perf_counter() - t_embed
    y = torch.tensor([CLASSES.index(p.label) for p in pairs])
    is_train = torch.tensor([p.split == "train" for p in pairs])
    w = torch.tensor([p.weight for p in pairs])
    w[is_train] = balance_classes(y[is_train], w[is_train])
    train_prompts = [p.prompt for p in pairs if p.split == "train"]
    l2, val_losses = select_l2(x[is_train], y[is_train], w[is_train], train_prompts)
    head = fit_head(x[is_train], y[is_train], w[is_train], l2)
    test = predict_test(head, x, pairs)
    files = sorted({f"{p.provenance['file']}:{p.provenance['sha256']}" for p in pairs if p.provenance})
    meta = {
        "key": cache_key(recipe, embedder.max_length),
        "l2": l2,
        "val_logloss": {str(k): v for k, v in val_losses.items()},
        "counts": summary(pairs),
        "n_train": int(is_train.sum()),
        "n_test": len(test),
        "data_files": files,
        "embed_s": round(embed_s, 1),
        "train_s": round(time.perf_counter() - t0, 1),
        "threshold": THRESHOLD,
    }
    return TrainResult(head, meta, test)


def _is_gold(p: LabeledPair) -> bool:
    return p.source in (GOLD_SOURCE, GUIDE_SOURCE)


def fold_of(prompt: str, folds: int) -> int:
    """The cross-validation fold of a prompt (salted sha256, so every answer to it is in one fold)."""
    digest = hashlib.sha256(("cv:" + prompt.strip().lower()).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % folds


def _fit3(
    x: torch.Tensor, y: torch.Tensor, pairs: list[LabeledPair], keep: list[int], l2: float, gold_weight: float
) -> Head:
    w = torch.tensor([pairs[i].weight * (gold_weight if _is_gold(pairs[i]) else 1.0) for i in keep])
    w = balance_classes(y[keep], w, len(THREE_CLASSES))
    head = fit_head(x[keep], y[keep], w, l2, n_classes=len(THREE_CLASSES))
    return dataclasses.replace(head, classes=THREE_CLASSES, features=FEATURES3)


def three_way_labels(head_or_proba: torch.Tensor, prompt_types: Sequence[str]) -> list[str]:
    """Gold-style labels from learned3 class probabilities (most probable class) and prompt types."""
    top = head_or_proba.argmax(1).tolist()
    to_label = {ANSWER: None, REFUSAL: base.REFUSAL, OFFTASK: base.OFFTASK}
    return [to_label[THREE_CLASSES[k]] or base.answered_label(t) for k, t in zip(top, prompt_types)]


def cross_validate(
    pairs: list[LabeledPair],
    x: torch.Tensor,
    l2: float,
    gold_weight: float,
    folds: int = 5,
    columns: slice | None = None,
) -> dict[str, Any]:
    """Out-of-fold predictions on the gold training part, grouped by prompt.

    Fold ``k`` is held out: its gold training rows are predicted by a head fitted on every
    other ``train`` row (the original data, the other folds, the guide examples not on a
    held-out prompt). Returns the three-way Cohen's kappa and accuracy against the gold
    labels and the ASR gap (judge minus gold) on the harmful prompts. ``columns`` keeps a
    slice of the features (for the ablations in the report).
    """
    from ussafety.stats import cohens_kappa

    feats = x if columns is None else x[:, columns]
    y = torch.tensor([THREE_CLASSES.index(p.label) for p in pairs])
    gold = [i for i, p in enumerate(pairs) if p.source == GOLD_SOURCE and p.split == "train"]
    fold = {i: fold_of(pairs[i].prompt, folds) for i, p in enumerate(pairs) if _is_gold(p)}
    pred: dict[int, str] = {}
    for k in range(folds):
        held = [i for i in gold if fold[i] == k]
        if not held:
            continue
        held_prompts = {pairs[i].prompt.strip().lower() for i in held}
        keep = [
            i
            for i, p in enumerate(pairs)
            if p.split == "train"
            and i not in set(held)
            and not (_is_gold(p) and p.prompt.strip().lower() in held_prompts)
        ]
        head = _fit3(feats, y, pairs, keep, l2, gold_weight)
        labels = three_way_labels(head.proba(feats[held]), [pairs[i].prompt_type for i in held])
        pred.update(zip(held, labels))
    truth = [pairs[i].provenance["label"] for i in gold]
    guess = [pred[i] for i in gold]
    harm = [j for j, i in enumerate(gold) if pairs[i].prompt_type == HARMFUL_PROMPT]
    gap = (sum(guess[j] == base.HARMFUL for j in harm) - sum(truth[j] == base.HARMFUL for j in harm)) / len(harm)
    return {
        "l2": l2,
        "gold_weight": gold_weight,
        "n": len(gold),
        "kappa": cohens_kappa(truth, guess),
        "accuracy": sum(a == b for a, b in zip(truth, guess)) / len(gold),
        "asr_gap": gap,
    }


def select_three_way(
    pairs: list[LabeledPair], x: torch.Tensor, recipe: ThreeWayRecipe
) -> tuple[float, float, list[dict[str, Any]]]:
    """``(l2, gold_weight, rows)``: the grid point with the best cross-validated kappa among those
    whose ASR gap is within :data:`ASR_GAP_BAR` (the smallest gap when none is), and every
    grid point's numbers."""
    grid = [(gw, l2) for gw in recipe.gold_weights for l2 in recipe.l2_grid]
    rows = [
        cross_validate(pairs, x, l2, gw, recipe.cv_folds)
        for gw, l2 in progress(grid, desc="learned3: CV grid", unit="point")
    ]
    best = max(
        rows,
        key=lambda r: (
            abs(r["asr_gap"]) <= ASR_GAP_BAR,
            r["kappa"] if abs(r["asr_gap"]) <= ASR_GAP_BAR else -abs(r["asr_gap"]),
        ),
    )
    return best["l2"], best["gold_weight"], rows


def train_three_way(
    recipe: ThreeWayRecipe | None = None,
    embedder: SentenceEmbedder | None = None,
    pairs: list[LabeledPair] | None = None,
) -> TrainResult:
    """Choose the gold weight and L2 by cross-validation, fit the learned3 head on every
    ``train`` row, predict the ``test`` rows for the report.

    Rows: :func:`~ussafety.evaluate.judges.learned_data.build_three_way_dataset` (the original
    recipe's train split, the gold training part and the guide examples are fitted; the
    original test split and the gold test part are only predicted). Classes are balanced as
    for ``learned``; :func:`select_three_way` picks the gold weight and the L2 strength on
    the gold training part (grouped by prompt), so the test part plays no part in any choice.
    """
    recipe = recipe or ThreeWayRecipe()
    t0 = time.perf_counter()
    pairs = pairs if pairs is not None else build_three_way_dataset(recipe)
    embedder = embedder or SentenceEmbedder()
    t_embed = time.perf_counter()
    x = pair_features(
        embedder, [p.prompt for p in pairs], [p.response for p in pairs], [p.prompt_type for p in pairs], FEATURES3
    )
    embed_s = time.perf_counter() - t_embed
    has_gold_train = any(p.source == GOLD_SOURCE and p.split == "train" for p in pairs)
    if has_gold_train:
        l2, gold_weight, cv = select_three_way(pairs, x, recipe)
    else:
        l2, gold_weight, cv = recipe.l2_grid[len(recipe.l2_grid) // 2], recipe.gold_weights[0], []
    ablations = {}
    if has_gold_train:  # what each part of the features and the data adds, at the chosen point
        n_emb = 2 * embedder.dim + 1
        gold_only = [i for i, p in enumerate(pairs) if _is_gold(p)]
        ablations = {
            "embeddings only": cross_validate(pairs, x, l2, gold_weight, recipe.cv_folds, slice(0, n_emb)),
            "keyword evidence only": cross_validate(pairs, x, l2, gold_weight, recipe.cv_folds, slice(n_emb, None)),
            "gold and guide rows only": cross_validate(
                [pairs[i] for i in gold_only], x[gold_only], l2, gold_weight, recipe.cv_folds
            ),
        }
    y = torch.tensor([THREE_CLASSES.index(p.label) for p in pairs])
    train_idx = [i for i, p in enumerate(pairs) if p.split == "train"]
    head = _fit3(x, y, pairs, train_idx, l2, gold_weight)
    test = predict_test(head, x, pairs)
    counts: dict[str, dict[str, int]] = {}
    for p in pairs:
        row = counts.setdefault(p.source, {"train": 0, "test": 0, **{c: 0 for c in THREE_CLASSES}})
        row[p.split] += 1
        row[p.label] += 1
    meta = {
        "key": cache_key(recipe, embedder.max_length),
        "l2": l2,
        "gold_weight": gold_weight,
        "cv": cv,
        "ablations": ablations,
        "classes": list(THREE_CLASSES),
        "features": FEATURES3,
        "counts": counts,
        "n_train": len(train_idx),
        "n_test": len(test),
        "n_gold_train": sum(1 for i in train_idx if _is_gold(pairs[i])),
        "embed_s": round(embed_s, 1),
        "train_s": round(time.perf_counter() - t0, 1),
    }
    return TrainResult(head, meta, test)
