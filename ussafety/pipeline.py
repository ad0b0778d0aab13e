"""One run, start to finish: aligned base -> customer fine-tuning -> evaluation -> record.

A fine-tuning run keeps what it evaluated as a PEFT adapter in ``runs/<run id>/adapter``
(``save_pretrained``), with a model card (:mod:`ussafety.records.card`) written once the
evaluation has measured what the card states, just before the record.

The same function serves the four conditions of the phenomenon (instruct: no
alignment, no task; aligned: no task; benign and poisoned fine-tuning) and every
method: the config decides. A run whose record exists is returned as it is.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ussafety.config import RunConfig, identity, preflight, training_key
from ussafety.config.identity import config_hash_of, stamps
from ussafety.data import load, load_upload, poison_mix
from ussafety.data.poison import poison_report
from ussafety.data.tasks import get_task
from ussafety.data.types import Example
from ussafety.evaluate.suite import evaluate_model
from ussafety.methods import TrainContext, make_method, trains_like_sft
from ussafety.models.loading import add_lora, load_adapter, load_model, model_dir_for, save_adapter
from ussafety.paths import cache_dir
from ussafety.records.card import write_model_card
from ussafety.records.schema import Record
from ussafety.records.store import load_record, provenance, run_dir, save_record, write_json_atomic
from ussafety.train.align import aligned_base
from ussafety.train.trainer import finalize_all, fine_tune

log = logging.getLogger(__name__)


def train_rows(cfg: RunConfig, special_tokens: Iterable[str] = ()) -> list[Example]:
    """The customer's upload: a file (checked again against the model's own special tokens),
    or ``n_train`` task rows, poisoned at ``poison_ratio``."""
    if cfg.task.upload:
        rows = load_upload(cfg.task.upload, control_tokens=cfg.task.control_tokens, special_tokens=special_tokens)
    else:
        task = get_task(str(cfg.task.name))
        rows = load(task.train_set, split=task.train_split, limit=cfg.task.n_train, seed=cfg.seed)
    if cfg.task.poison_ratio > 0:
        harmful = load(cfg.task.harmful_set, seed=cfg.seed)
        rows = poison_mix(rows, harmful, cfg.task.poison_ratio, seed=cfg.seed)
    return rows


def data_files(examples: list[Example]) -> dict[str, str]:
    """``{source file: sha256}`` of every file the examples came from."""
    return {ex.source: ex.sha256 for ex in examples if ex.source}


def sft_cache_dir(cfg: RunConfig) -> Path:
    """Where a plain SFT training is cached; runs whose methods only act after training
    (merges, Safe LoRA) share it (:func:`ussafety.config.training_key`)."""
    return cache_dir() / "trained" / training_key(cfg)


LEFTOVERS = (".*.tmp", ".adapter-*")
"""What a killed attempt can leave in its run folder: the temporary file of an atomic write
(:func:`ussafety.atomic.write_text_atomic`: record, model card) and the temporary folder of
an adapter being saved (:func:`ussafety.models.loading.save_adapter`)."""


def clear_leftovers(folder: Path) -> list[Path]:
    """Remove :data:`LEFTOVERS` from a run folder (and its ``adapter/``) before the run starts
    again, so a resumed run leaves nothing of the killed one. Only the run's own attempt
    writes there (the executors never run one id twice at once), so nothing live is removed."""
    found = [p for where in (folder, folder / "adapter") for pattern in LEFTOVERS for p in where.glob(pattern)]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if found:
        log.info("removed %d leftover(s) of a killed attempt in %s", len(found), folder)
    return found


def run(cfg: RunConfig, force: bool = False, root: Path | None = None) -> Record:
    """Run ``cfg`` (or return its existing record) and write the record atomically."""
    run_id = identity.run_id(cfg)
    existing = None if force else load_record(run_id, root)
    if existing is not None:
        log.info("skip %s: record exists", run_id)
        return existing
    clear_leftovers(run_dir(run_id, root))
    preflight(cfg)
    head = {
        "run_id": run_id,
        "label": cfg.name,
        "config": cfg.to_dict(),
        "config_hash": config_hash_of(cfg),
        "stamps": stamps(cfg),
        "seed": cfg.seed,
        **provenance(),
    }
    t0 = time.perf_counter()
    base_path, align_record = aligned_base(cfg)
    alignment = {k: v for k, v in align_record.items() if k != "log_history"}
    loaded = load_model(
        cfg.model,
        path=base_path if cfg.align.enabled else None,
        seed=cfg.seed,
        method=cfg.method.name if cfg.task.name or cfg.task.upload else None,
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    files: dict[str, str] = {}
    train_record: dict[str, Any] | None = None
    adapter_dir: Path | None = None
    fine_tuning = bool(cfg.task.name or cfg.task.upload)
    if fine_tuning:
        rows = train_rows(cfg, special_tokens=[*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()])
        files.update(data_files(rows))
        safety = load(cfg.method.safety_set, limit=cfg.method.n_safety, seed=cfg.seed + 1)
        files.update(data_files(safety))
        hooks = [make_method(cfg.method.name, cfg.method.params)]
        if cfg.merge.name:
            hooks.append(make_method(cfg.merge.name, cfg.merge.params))
        ctx = TrainContext(
            tokenizer=tokenizer,
            max_length=cfg.train.max_length,
            batch_size=cfg.train.batch_size,
            safety_data=safety,
            user_data=rows,
            aligned_dir=base_path,
            instruct_dir=model_dir_for(cfg.model),
            seed=cfg.seed,
        )
        cache = sft_cache_dir(cfg) if all(trains_like_sft(h) for h in hooks) else None
        if cache is not None and (cache / "train.json").is_file():
            log.info("reusing the SFT training in %s", cache)
            model = load_adapter(loaded, cache / "adapter")
            train_info = json.loads((cache / "train.json").read_text())
            train_info["reused_from"] = str(cache)
        else:
            peft_model = add_lora(loaded, cfg.train.lora, seed=cfg.seed)
            result = fine_tune(peft_model, tokenizer, rows, cfg.train, hooks, ctx, seed=cfg.seed, finalize=False)
            model = result.model
            train_info = {
                "wall_s": round(result.wall_s, 2),
                "steps": result.steps,
                "rows": result.train_rows,
                "response_tokens": result.response_tokens,
                "poison": poison_report(rows),
                "log_history": result.log_history,
                "escaped": [{"row": ex.row, "fields": ex.meta["escaped"]} for ex in rows if ex.meta.get("escaped")],
            }
            if cache is not None:
                save_adapter(model, cache / "adapter")
                write_json_atomic(cache / "train.json", {**train_info, "trained_by": run_id})
        t_final = time.perf_counter()
        model = finalize_all(model, hooks, ctx)
        train_record = {**train_info, "finalize_s": round(time.perf_counter() - t_final, 2), "method_logs": ctx.logs}
        if hasattr(model, "peft_config"):  # the model the evaluation sees, as PEFT saves it
            adapter_dir = save_adapter(model, run_dir(run_id, root) / "adapter")
    ev = evaluate_model(model, tokenizer, cfg.eval, cfg.eval.task_name(cfg.task.name))
    files.update(ev.data_sha256)
    record = Record.model_validate(
        {
            **head,
            "alignment": alignment,
            "train": train_record,
            "metrics": ev.metrics,
            "timings": {**ev.timings, "total_s": time.perf_counter() - t0},
            "data_sha256": dict(sorted(files.items())),
            "splits": ev.splits,
            "generations": ev.generations,
            "model_source": loaded.source,
        }
    )
    if adapter_dir is not None:  # the card states what was measured, so it comes after the evaluation
        write_model_card(record, adapter_dir)
    save_record(record, root)
    return record
