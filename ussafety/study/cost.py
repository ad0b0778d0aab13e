"""What a grid still costs, estimated from the timings of finished records.

Per run: 0 when its record exists; otherwise alignment (when its aligned base is not cached,
once per base, from a recorded build time), training (rows x epochs x the median seconds per
row-epoch of finished runs with the same model, task, batch, length, LoRA and method; 0 for a
run that reuses a plain SFT training cached or planned earlier in the list) and evaluation
(prompts x the median seconds per prompt of finished runs with the same model and
generation settings). A part with no comparable record is NaN and said so in ``basis``.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.config import RunConfig, align_key, from_dict, training_key
from ussafety.data import splits
from ussafety.paths import cache_dir
from ussafety.records import Record, iter_records, load_record
from ussafety.study.grid import StudyRun, unique_runs

COLUMNS = [
    "run_id",
    "grid",
    "method",
    "merge",
    "seed",
    "status",
    "recorded_s",
    "align_s",
    "train_s",
    "eval_s",
    "est_s",
    "basis",
]


@functools.lru_cache(maxsize=32)
def split_size(name: str, part: str) -> int:
    """Prompts in ``part`` (validation/test) of the committed split ``name``."""
    return len(splits.read_split(name)["splits"][part])


def eval_counts(cfg: RunConfig) -> dict[str, int]:
    """Prompts the evaluation of ``cfg`` generates for: harmful, XSTest safe and task items.
    ``eval.split`` test/validation: every prompt of the committed split files (the suite's
    own list, ``splits.eval_splits``); ``sample``: the ``n_*`` fields."""
    ev = cfg.eval
    task = ev.task_name(cfg.task.name)
    if ev.split == "sample":
        return {
            "harmful": ev.n_per_harmful_set * len(ev.harmful_sets),
            "xstest": ev.n_xstest,
            "task": ev.n_task if task else 0,
        }
    names = splits.eval_splits(ev.split, task)
    task_split = [n for n in names if n not in (splits.HARMFUL, splits.XSTEST_SAFE)]
    return {
        "harmful": split_size(splits.HARMFUL, ev.split),
        "xstest": split_size(splits.XSTEST_SAFE, ev.split),
        "task": split_size(task_split[0], ev.split) if task_split else 0,
    }


def rate_keys(cfg: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What makes per-item timings comparable between two runs."""
    ev, tr, task = cfg["eval"], cfg["train"], cfg["task"]
    scored = ev.get("task") or task["name"]
    gen = (cfg["model"]["name"], cfg["model"].get("dtype"), ev["max_new_tokens"], ev["batch_size"])
    return {
        "harmful": gen,
        "xstest": gen,
        "task": gen + (scored, ev.get("task_max_new_tokens")),
        "train": (
            cfg["model"]["name"],
            cfg["model"].get("dtype"),
            task["name"],
            tr["batch_size"],
            tr["max_length"],
            json.dumps(tr["lora"], sort_keys=True),
            cfg["method"]["name"],
        ),
    }


def timing_rates(records: Iterable[Record]) -> dict[tuple[Any, ...], float]:
    """Median seconds per item from finished records (per harmful prompt, XSTest prompt and
    task item; per training row-epoch). Runs that reused a cached training are left out."""
    samples: dict[tuple[Any, ...], list[float]] = {}
    for rec in records:
        cfg, t = rec.config, rec.timings
        keys, counts = rate_keys(cfg), eval_counts(from_dict(cfg, where=f"record {rec.run_id}"))
        for part, secs in (("harmful", t.harmful_s), ("xstest", t.xstest_s), ("task", t.task_s)):
            if secs is not None and counts[part]:
                samples.setdefault((part,) + keys[part], []).append(secs / counts[part])
        train = rec.train
        if train and train.wall_s and not train.reused_from and cfg["task"]["name"]:
            row_epochs = max(1, train.rows or cfg["task"]["n_train"]) * cfg["train"]["epochs"]
            samples.setdefault(("train",) + keys["train"], []).append(train.wall_s / row_epochs)
    return {k: statistics.median(v) for k, v in samples.items()}


def _train_seconds(cfg: RunConfig, rates: dict[tuple[Any, ...], float], basis: list[str]) -> float:
    key = ("train",) + rate_keys(cfg.to_dict())["train"]
    rate = rates.get(key)
    if rate is not None:
        basis.append("train: method rate")
    else:
        rate = rates.get(key[:-1] + ("sft",), math.nan)
        basis.append(
            "train: no record"
            if math.isnan(rate)
            else "train: sft rate"
            if cfg.method.name == "sft"
            else "train: sft rate (no record of this method)"
        )
    return rate * cfg.task.n_train * cfg.train.epochs


def estimate_cost(runs: list[StudyRun], root: Path | None = None, records: list[Record] | None = None) -> pd.DataFrame:
    """Seconds each run of ``runs`` still needs (see the module docstring), one row per run."""
    records = list(iter_records(root)) if records is None else records
    rates = timing_rates(records)
    align_s = {
        r.alignment.key: float(r.alignment.train_wall_s)
        for r in records
        if r.alignment.aligned and r.alignment.key and r.alignment.train_wall_s
    }
    planned_align: set[str] = set()
    planned_train: set[str] = set()
    rows = []
    for r in unique_runs(runs):
        cfg = r.cfg
        row: dict[str, Any] = {
            "run_id": r.run_id,
            "grid": r.grid,
            "method": cfg.method.name,
            "merge": cfg.merge.name,
            "seed": cfg.seed,
        }
        rec = load_record(r.run_id, root)
        if rec is not None:
            row.update(
                status="finished",
                recorded_s=rec.timings.total_s or math.nan,
                align_s=0.0,
                train_s=0.0,
                eval_s=0.0,
                est_s=0.0,
                basis="record",
            )
            rows.append(row)
            continue
        basis: list[str] = []
        a_s = 0.0
        if cfg.align.enabled:
            key = align_key(cfg)
            cached = (cache_dir() / "aligned" / key / "alignment.json").is_file()
            if not cached and key not in planned_align:
                a_s = align_s.get(key, math.nan)
                basis.append("align: " + ("recorded build" if key in align_s else "no record"))
            planned_align.add(key)
        t_s = 0.0
        if cfg.task.name or cfg.task.upload:
            sft_like = cfg.method.name == "sft"
            tkey = training_key(cfg)
            cached = (cache_dir() / "trained" / tkey / "train.json").is_file()
            if sft_like and (cached or tkey in planned_train):
                basis.append("train: reuses plain training")
            else:
                t_s = _train_seconds(cfg, rates, basis)
            if sft_like:
                planned_train.add(tkey)
        d = cfg.to_dict()
        keys, counts = rate_keys(d), eval_counts(cfg)
        e_s = sum(rates.get((part,) + keys[part], math.nan) * n for part, n in counts.items() if n)
        basis.append("eval: no record" if math.isnan(e_s) else "eval: per-prompt rate")
        row.update(
            status="to run",
            recorded_s=math.nan,
            align_s=a_s,
            train_s=t_s,
            eval_s=e_s,
            est_s=a_s + t_s + e_s,
            basis="; ".join(basis),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def cost_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Totals of :func:`estimate_cost`: runs finished / to run and the estimated minutes."""
    todo = df[df.status == "to run"]
    unknown = int(todo.est_s.isna().sum())
    out: dict[str, Any] = {
        "runs": len(df),
        "finished": int((df.status == "finished").sum()),
        "to_run": len(todo),
        "unknown_cost": unknown,
        "est_minutes": round(float(todo.est_s.sum(skipna=True)) / 60, 1),
        "recorded_minutes": round(float(df.recorded_s.sum(skipna=True)) / 60, 1),
    }
    if unknown:
        out["note"] = (
            f"{unknown} run(s) to run have no comparable finished record (model and "
            "settings): est_minutes leaves them out"
        )
    return out
