"""The safety-alignment stage: instruct model -> aligned base.

SmolLM2-135M-Instruct complies with harmful requests as shipped, so the study first
aligns it: LoRA on harmful-instruction -> refusal pairs mixed with helpful answers
(so it does not learn "refuse everything"), then merged into the weights. The result
is cached under ``<cache>/aligned/<hash>`` keyed by the model and the alignment
config, so every run of a study shares one aligned base and a rerun costs nothing.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from ussafety.atomic import write_text_atomic
from ussafety.config import AlignConfig, RunConfig, align_key
from ussafety.config.identity import canonical
from ussafety.data import load
from ussafety.data.contrastive import split_sensitive
from ussafety.data.types import Example
from ussafety.methods import TrainContext, make_method
from ussafety.models.loading import add_lora, load_model, model_dir_for, save_merged
from ussafety.paths import cache_dir
from ussafety.train.trainer import fine_tune

log = logging.getLogger(__name__)


def alignment_data(cfg: AlignConfig) -> list[Example]:
    """Seeded mix of ``n_refusal`` refusal pairs and ``n_helpful`` helpful answers."""
    refusals = load(cfg.refusal_set, seed=cfg.seed)
    if cfg.keyword_refusals_only:
        refusals = [e for e in refusals if e.meta.get("keyword_refusal", True)]
    refusals = refusals[: cfg.n_refusal]
    rows = refusals + helpful_rows(cfg)
    random.Random(cfg.seed).shuffle(rows)
    return rows


def helpful_rows(cfg: AlignConfig) -> list[Example]:
    """``n_helpful`` helpful rows, ``n_contrastive`` of them sensitive-word requests.

    Without contrastive rows this is the first ``n_helpful / len(helpful_sets)`` rows of
    each shuffled set, as before the option existed (so old aligned bases keep their key).
    """
    if cfg.n_contrastive > cfg.n_helpful:
        raise ValueError(f"align.n_contrastive ({cfg.n_contrastive}) exceeds align.n_helpful "
                         f"({cfg.n_helpful}): contrastive rows are part of the helpful rows")
    if not cfg.n_contrastive:
        helpful: list[Example] = []
        per_set = -(-cfg.n_helpful // max(1, len(cfg.helpful_sets)))
        for name in cfg.helpful_sets:
            helpful += load(name, limit=per_set, seed=cfg.seed)
        return helpful[: cfg.n_helpful]
    pool = [e for name in cfg.helpful_sets for e in load(name, seed=cfg.seed)]
    sensitive, plain = split_sensitive(pool)
    if len(sensitive) < cfg.n_contrastive:
        raise ValueError(f"align.n_contrastive: asked for {cfg.n_contrastive} but "
                         f"{'+'.join(cfg.helpful_sets)} hold only {len(sensitive)} sensitive-word rows")
    rng = random.Random(cfg.seed)
    rng.shuffle(sensitive)
    rng.shuffle(plain)
    return sensitive[: cfg.n_contrastive] + plain[: cfg.n_helpful - cfg.n_contrastive]


def aligned_dir(run: RunConfig) -> Path:
    """The cache folder of ``run``'s aligned base (:func:`ussafety.config.align_key`)."""
    return cache_dir() / "aligned" / align_key(run)


def aligned_base(run: RunConfig, force: bool = False) -> tuple[str, dict[str, Any]]:
    """Path of the aligned base (built on first use) and its build record.

    With ``align.enabled`` false the instruct model itself is the base.
    """
    model, cfg = run.model, run.align
    if not cfg.enabled:
        return model_dir_for(model), {"aligned": False}
    target = aligned_dir(run)
    record_path = target / "alignment.json"
    if record_path.is_file() and not force:
        return str(target), json.loads(record_path.read_text())
    loaded = load_model(model, seed=cfg.seed)
    rows = alignment_data(cfg)
    peft_model = add_lora(loaded, cfg.train.lora, seed=cfg.seed)
    ctx = TrainContext(tokenizer=loaded.tokenizer, max_length=cfg.train.max_length,
                       batch_size=cfg.train.batch_size, seed=cfg.seed)
    log.info("aligning %s on %d rows -> %s", loaded.source, len(rows), target)
    t0 = time.perf_counter()
    result = fine_tune(peft_model, loaded.tokenizer, rows, cfg.train, [make_method("sft")], ctx,
                       seed=cfg.seed)
    save_merged(result.model, loaded.tokenizer, target)
    c = canonical(run)
    record = {"aligned": True, "key": align_key(run), "config": c["align"],
              "model": c["model"], "source_model": loaded.source, "rows": len(rows),
              "data_sha256": sorted({f"{e.source}:{e.sha256}" for e in rows}),
              "train_wall_s": round(time.perf_counter() - t0, 1), "steps": result.steps,
              "log_history": result.log_history}
    write_text_atomic(target / "alignment.json", json.dumps(record, indent=2))
    return str(target), record
