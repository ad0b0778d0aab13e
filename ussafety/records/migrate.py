"""Re-key records when the identity scheme or the schema grows, without rerunning anything.

``ussafety runs migrate DIR`` runs :func:`migrate_dir`: every record whose id is not the one
today's code gives its config (an old-format record, or a field added since) is moved to it,
as long as it was made under today's stamps.

A record written before the typed config (PR "core redesign") has ``run_id = <name>-<hash of
the params as written>``, no ``label`` and no ``stamps``. Migrating it resolves its stored
config through today's schema (defaults filled, aliases resolved), computes today's id and
stamps, and moves the record folder (with its audit files) to the new id. The outcome was
computed by the code at stamp 1, so the stamps are 1: bump a stamp only for code changed
*after* this migration.

Two old records can be one computation (a run repeated under a second name): the last
written is kept under the new id (newer code, so it carries every metric the schema has), the
earlier one is dropped and listed in the migration log with whether its generations and
metrics were identical.

:data:`LEGACY` holds, per dotted config path added after records existed, the value that
reproduces what those records did (today's default may differ); it is the only place that
knows about older records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ussafety.config import from_dict, run_id
from ussafety.config.identity import config_hash_of, stamps
from ussafety.records.schema import Record
from ussafety.records.store import RECORD, parse_record, write_json_atomic, write_record

LEGACY: dict[str, Any] = {"eval.split": "sample"}
"""Dotted config path -> the value records made before the field existed computed with."""

LOG = "MIGRATION.json"


def _set_missing(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d.setdefault(last, value)


def is_current(data: dict[str, Any]) -> bool:
    """A record already in today's format (it may still need a new id, see :func:`rekey_data`)."""
    return "stamps" in data and "label" in data


def migrate_data(data: dict[str, Any], where: str) -> Record | None:
    """The record ``data`` (old or current format) under today's id, or None when there is
    nothing to do: its id is already today's, or it was made under other stamps (code that
    computed differently: ``ussafety runs check`` lists it; only a rerun can replace it)."""
    config = json.loads(json.dumps(data["config"]))
    for path, value in LEGACY.items():
        _set_missing(config, path, value)
    current = is_current(data)
    if current:
        config["name"] = data["label"]
    cfg = from_dict(config, where=f"{where} (config)")
    new_id = run_id(cfg)
    if current and (data["stamps"] != stamps(cfg) or (new_id == data["run_id"] and data["config"] == cfg.to_dict())):
        return None
    new = {k: v for k, v in data.items() if k not in ("config", "config_hash")}
    new["metrics"] = _rates_with_intervals(new["metrics"])
    new.update(
        run_id=new_id,
        label=cfg.name,
        config=cfg.to_dict(),
        config_hash=config_hash_of(cfg),
        stamps=stamps(cfg),
        migrated_from=data["run_id"],
    )
    if new.get("alignment", {}).get("aligned"):
        from ussafety.config import align_key

        new["alignment"] = {**new["alignment"], "key": align_key(cfg)}
    return parse_record(new, where)


def _rates_with_intervals(metrics: dict[str, Any]) -> dict[str, Any]:
    """Re-judged over-refusal was stored as ``{rate, n, refused}``: give it the interval every
    other rate has (computed from the same counts, nothing re-judged)."""
    from ussafety.stats import wilson_interval

    out = dict(metrics)
    by_judge = {}
    for judge, r in (metrics.get("over_refusal_by_judge") or {}).items():
        if "refused" in r:
            lo, hi = wilson_interval(r["refused"], r["n"])
            r = {"rate": r["rate"], "ci_low": lo, "ci_high": hi, "n": r["n"], "count": r["refused"], "judge": judge}
        by_judge[judge] = r
    out["over_refusal_by_judge"] = by_judge
    return out


def migrate_dir(root: Path, dry_run: bool = False) -> dict[str, Any]:
    """Re-key every old-format record under ``root``; returns (and writes) the migration log."""
    paths = sorted(root.glob(f"*/{RECORD}"), key=lambda p: json.loads(p.read_text())["started"], reverse=True)
    moved: dict[str, str] = {}
    dropped: list[dict[str, Any]] = []
    kept: dict[str, Record] = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        rec = migrate_data(data, str(path))
        if rec is None:
            continue
        old = data["run_id"]
        if rec.run_id in kept:
            first = kept[rec.run_id]
            dropped.append(
                {
                    "run_id": old,
                    "same_computation_as": first.migrated_from,
                    "new_id": rec.run_id,
                    "identical_metrics": first.metrics == rec.metrics,
                    "identical_generations": first.generations == rec.generations,
                }
            )
            if not dry_run:
                shutil.rmtree(path.parent)
            continue
        kept[rec.run_id] = rec
        moved[old] = rec.run_id
    for rec in kept.values():  # a cached training names the run that made it: follow the rename
        if rec.train and rec.train.trained_by in moved:
            rec.train.trained_by = moved[rec.train.trained_by]
    log = {"moved": moved, "dropped": dropped}
    if dry_run:
        return log
    for rec in kept.values():
        old_dir, new_dir = root / str(rec.migrated_from), root / rec.run_id
        write_record(rec, old_dir / RECORD)
        if old_dir != new_dir:
            old_dir.rename(new_dir)
    if moved or dropped:
        previous = json.loads((root / LOG).read_text()) if (root / LOG).is_file() else {"moved": {}, "dropped": []}
        write_json_atomic(
            root / LOG, {"moved": {**previous["moved"], **moved}, "dropped": previous["dropped"] + dropped}
        )
    return log
