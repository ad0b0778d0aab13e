"""The safety-alignment stage: instruct model -> aligned base.

SmolLM2-135M-Instruct complies with harmful requests as shipped, so the study first
aligns it: LoRA on harmful-instruction -> refusal pairs mixed with helpful answers
(so it does not learn "refuse everything"), then merged into the weights. The result
is cached under ``<cache>/aligned/<hash>`` keyed by the model and the alignment
config, so every run of a study shares one aligned base and a rerun costs nothing.

Options for separating harmful requests from merely scary ones (issue 13, item 1; the sweep
is in ``params/foundation/align_sweep`` and ``docs/phenomenon.md``): look-alike rows (harmless
requests in the refusal rows' own phrasing, ``n_lookalike``), full-parameter training instead
of LoRA (``full_finetune``), and a DPO stage after SFT (``pref_pairs``; the loss is the
20-line sigmoid DPO of Rafailov et al. written here, on the model's own response-only
log-probabilities, rather than TRL's trainer, which would add a dependency and its own
chat formatting and masking).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ussafety.atomic import write_text_atomic
from ussafety.config import AlignConfig, RunConfig, align_key
from ussafety.config.identity import canonical
from ussafety.data import load
from ussafety.data.contrastive import lookalike_rows, split_sensitive
from ussafety.data.types import Example
from ussafety.methods import TrainContext, make_method
from ussafety.models.chat import IGNORE, collate, encode_train
from ussafety.models.loading import LoadedModel, add_lora, load_model, model_dir_for, save_merged
from ussafety.models.losses import response_logits
from ussafety.paths import cache_dir
from ussafety.progress import progress
from ussafety.train.trainer import fine_tune

log = logging.getLogger(__name__)


def refusal_pool(cfg: AlignConfig) -> list[Example]:
    """The refusal set in its seeded order (keyword refusals only, if asked)."""
    refusals = load(cfg.refusal_set, seed=cfg.seed)
    if cfg.keyword_refusals_only:
        refusals = [e for e in refusals if e.meta.get("keyword_refusal", True)]
    return refusals


def lookalike_pool(cfg: AlignConfig) -> list[Example]:
    """Plain-help rows of the refusal set in its seeded order (:func:`lookalike_rows`)."""
    return lookalike_rows(load(cfg.refusal_set, seed=cfg.seed))


def alignment_data(cfg: AlignConfig) -> list[Example]:
    """Seeded mix of ``n_refusal`` refusal pairs, ``n_helpful`` helpful answers and
    ``n_lookalike`` look-alike answers (without look-alikes, the mix of before the option)."""
    rows = refusal_pool(cfg)[: cfg.n_refusal] + helpful_rows(cfg)
    if cfg.n_lookalike:
        pool = lookalike_pool(cfg)
        if len(pool) < cfg.n_lookalike:
            raise ValueError(
                f"align.n_lookalike: asked for {cfg.n_lookalike} but {cfg.refusal_set} "
                f"holds only {len(pool)} look-alike rows"
            )
        rows += pool[: cfg.n_lookalike]
    random.Random(cfg.seed).shuffle(rows)
    return rows


def helpful_rows(cfg: AlignConfig) -> list[Example]:
    """``n_helpful`` helpful rows, ``n_contrastive`` of them sensitive-word requests.

    Without contrastive rows this is the first ``n_helpful / len(helpful_sets)`` rows of
    each shuffled set, as before the option existed (so old aligned bases keep their key).
    """
    if cfg.n_contrastive > cfg.n_helpful:
        raise ValueError(
            f"align.n_contrastive ({cfg.n_contrastive}) exceeds align.n_helpful "
            f"({cfg.n_helpful}): contrastive rows are part of the helpful rows"
        )
    if not cfg.n_contrastive:
        helpful: list[Example] = []
        per_set = -(-cfg.n_helpful // max(1, len(cfg.helpful_sets)))
        for name in cfg.helpful_sets:
            helpful += load(name, limit=per_set, seed=cfg.seed)
        return helpful[: cfg.n_helpful]
    pool = [e for name in cfg.helpful_sets for e in load(name, seed=cfg.seed)]
    sensitive, plain = split_sensitive(pool)
    if len(sensitive) < cfg.n_contrastive:
        raise ValueError(
            f"align.n_contrastive: asked for {cfg.n_contrastive} but "
            f"{'+'.join(cfg.helpful_sets)} hold only {len(sensitive)} sensitive-word rows"
        )
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
    t0 = time.perf_counter()
    pairs: list[tuple[Example, Example]] = []
    pref_info: dict[str, Any] = {}
    if cfg.pref_pairs:  # the instruct model's own answers are the rejected side: before SFT
        pairs, pref_info = preference_pairs(cfg, loaded.model, loaded.tokenizer)
    if cfg.full_finetune:
        trainable = loaded.model
        for param in trainable.parameters():
            param.requires_grad_(True)
    else:
        trainable = add_lora(loaded, cfg.train.lora, seed=cfg.seed)
    ctx = TrainContext(
        tokenizer=loaded.tokenizer, max_length=cfg.train.max_length, batch_size=cfg.train.batch_size, seed=cfg.seed
    )
    log.info(
        "aligning %s on %d rows (%s) -> %s", loaded.source, len(rows), "full" if cfg.full_finetune else "LoRA", target
    )
    result = fine_tune(trainable, loaded.tokenizer, rows, cfg.train, [make_method("sft")], ctx, seed=cfg.seed)
    final = result.model
    sft_s = time.perf_counter() - t0
    if pairs:
        merged = final.merge_and_unload() if hasattr(final, "merge_and_unload") else final
        final = add_lora(
            LoadedModel(merged, loaded.tokenizer, loaded.source, loaded.backend), cfg.train.lora, seed=cfg.seed
        )
        pref_info.update(dpo_train(final, loaded.tokenizer, pairs, cfg))
    save_merged(final, loaded.tokenizer, target)
    c = canonical(run)
    used = rows + [e for pair in pairs for e in pair if e.source]
    record = {
        "aligned": True,
        "key": align_key(run),
        "config": c["align"],
        "model": c["model"],
        "source_model": loaded.source,
        "rows": len(rows),
        "data_sha256": sorted({f"{e.source}:{e.sha256}" for e in used}),
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "sft_wall_s": round(sft_s, 1),
        "steps": result.steps,
        "log_history": result.log_history,
    }
    if pref_info:
        record["preference"] = pref_info
    write_text_atomic(target / "alignment.json", json.dumps(record, indent=2))
    return str(target), record


# --------------------------------------------------------------------------- preference stage


def first_sentence(text: str) -> str:
    """``text`` up to and including its first sentence end (all of it when there is none)."""
    m = re.search(r"[.!?](\s|$)", text)
    return text[: m.end()].strip() if m else text.strip()


def preference_pairs(
    cfg: AlignConfig, model: Any, tokenizer: Any
) -> tuple[list[tuple[Example, Example]], dict[str, Any]]:
    """``pref_pairs`` (chosen, rejected) pairs from rows the SFT stage does not use.

    Harmful half: refusal rows after the first ``n_refusal``; chosen is the refusal, rejected
    is ``model``'s (the instruct model's) greedy answer, kept only when it contains no GCG
    keyword (the instruct model complies with almost every such request). Look-alike half:
    look-alike rows after the first ``n_lookalike``; chosen is the answer, rejected is the
    first sentence of a refusal row ("I'm sorry, but I cannot provide ..."), so the pair
    says: this phrasing with this harmless request gets help, not the template refusal.
    """
    from ussafety.data.loaders import refusal_keywords
    from ussafety.evaluate.generate import generate_for

    half = cfg.pref_pairs // 2
    refusals = refusal_pool(cfg)[cfg.n_refusal :]
    looks = lookalike_pool(cfg)[cfg.n_lookalike :]
    if len(looks) < half:
        raise ValueError(
            f"align.pref_pairs: {half} look-alike pairs asked, but only {len(looks)} "
            f"look-alike rows are left after n_lookalike={cfg.n_lookalike}"
        )
    keywords, _ = refusal_keywords()
    candidates = refusals[: half + half // 4 + 8]
    if len(candidates) < half:
        raise ValueError(f"align.pref_pairs: only {len(candidates)} refusal rows are left")
    t0 = time.perf_counter()
    model.eval()
    with progress(total=len(candidates), desc="dpo: rejected answers", unit="prompt") as bar:
        answers = generate_for(
            model, tokenizer, candidates, max_new_tokens=cfg.pref_rejected_tokens, batch_size=32, progress=bar.update
        )
    gen_s = time.perf_counter() - t0
    harmful: list[tuple[Example, Example]] = []
    for ex, answer in zip(candidates, answers):
        if answer.strip() and not any(k in answer for k in keywords):
            harmful.append((ex, replace(ex, response=answer.strip(), source="", sha256="")))
    harmful = harmful[:half]
    openers = [first_sentence(e.response or "") for e in refusals[len(candidates) :]]
    openers = [o for o in openers if any(k in o for k in keywords)]
    rng = random.Random(cfg.seed)
    safe = [(ex, replace(ex, response=rng.choice(openers), source="", sha256="")) for ex in looks[:half]]
    pairs = harmful + safe
    rng.shuffle(pairs)
    info = {
        "pairs": len(pairs),
        "harmful_pairs": len(harmful),
        "lookalike_pairs": len(safe),
        "harmful_candidates": len(candidates),
        "rejected_generation_s": round(gen_s, 1),
        "rejected_examples": [{"prompt": c.prompt, "rejected": r.response} for c, r in harmful[:5]],
    }
    return pairs, info


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of response-token log-probabilities per row, and the response length per row."""
    logits, targets = response_logits(model, batch)
    mask = batch["labels"][:, 1:] != IGNORE
    rows = torch.arange(mask.shape[0]).unsqueeze(1).expand_as(mask)[mask]
    token = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    sums = torch.zeros(mask.shape[0], dtype=token.dtype).index_add(0, rows, token)
    return sums, mask.sum(dim=1)


def dpo_loss(
    pol_c: torch.Tensor, pol_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid DPO loss (Rafailov et al. 2023) per pair, and the reward margin."""
    margin = beta * ((pol_c - ref_c) - (pol_r - ref_r))
    return -F.logsigmoid(margin), margin


def dpo_train(model: Any, tokenizer: Any, pairs: list[tuple[Example, Example]], cfg: AlignConfig) -> dict[str, Any]:
    """DPO on ``pairs`` with a fresh LoRA on ``model``; the reference is the model with the
    adapter disabled (the merged SFT model). Adds ``pref_nll`` x the chosen answers' mean
    token NLL. Returns timings and the loss/margin/accuracy log."""
    length, bs = cfg.train.max_length, cfg.train.batch_size
    chosen = [encode_train(tokenizer, c, length) for c, _ in pairs]
    rejected = [encode_train(tokenizer, r, length) for _, r in pairs]
    pad = tokenizer.pad_token_id
    t0 = time.perf_counter()
    ref_c, ref_r = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        for i in progress(range(0, len(pairs), bs), desc="dpo: reference log-probs", unit="batch"):
            batch = collate(chosen[i : i + bs] + rejected[i : i + bs], pad)
            logps, _ = sequence_logps(model, batch)
            n = len(chosen[i : i + bs])
            ref_c[i : i + n], ref_r[i : i + n] = logps[:n], logps[n:]
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.pref_lr, weight_decay=0.0)
    per_epoch = math.ceil(len(pairs) / bs)
    total = max(1, math.ceil(per_epoch * cfg.pref_epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / total)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history: list[dict[str, float]] = []
    model.train()
    for step in progress(range(total), desc="dpo", unit="step"):
        if len(order) < bs:
            more = list(range(len(pairs)))
            rng.shuffle(more)
            order += more
        idx, order = order[:bs], order[bs:]
        batch = collate([chosen[i] for i in idx] + [rejected[i] for i in idx], pad)
        logps, counts = sequence_logps(model, batch)
        n = len(idx)
        loss_pairs, margin = dpo_loss(logps[:n], logps[n:], ref_c[idx], ref_r[idx], cfg.pref_beta)
        nll = (-logps[:n] / counts[:n].clamp(min=1)).mean()
        loss = loss_pairs.mean() + cfg.pref_nll * nll
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        with torch.no_grad():
            history.append(
                {
                    "step": step + 1,
                    "loss": round(float(loss), 4),
                    "dpo": round(float(loss_pairs.mean()), 4),
                    "nll": round(float(nll), 4),
                    "margin": round(float(margin.mean()), 4),
                    "accuracy": round(float((margin > 0).float().mean()), 3),
                }
            )
        log.info("dpo step %d/%d %s", step + 1, total, history[-1])
    model.eval()
    return {"dpo_wall_s": round(time.perf_counter() - t0, 1), "dpo_steps": total, "dpo_log": history}
