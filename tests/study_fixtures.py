"""Synthetic run records with known per-prompt outcomes, for the study analysis tests.

They are real :class:`ussafety.records.Record` objects (validated like a record read from
disk), so a test that passes here reads the records the pipeline writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ussafety.config import RunConfig, load_config
from ussafety.config.identity import config_hash_of, run_id, stamps
from ussafety.records import Record
from ussafety.stats import wilson_interval

SMOKE = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"


def config(name: str, seed: int = 0, **overrides: Any) -> RunConfig:
    return load_config(SMOKE, {"name": name, "seed": seed, **overrides})


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(hits, n) if n else (0.0, 0.0)
    return {"rate": hits / n if n else 0.0, "ci_low": lo, "ci_high": hi, "n": n, "count": hits}


def record(
    cfg: RunConfig,
    harmful: Sequence[int],
    refused: Sequence[int] = (),
    correct: Sequence[int] = (),
    timings: dict[str, float] | None = None,
    train: dict[str, Any] | None = None,
    alignment: dict[str, Any] | None = None,
) -> Record:
    """A record whose harmful prompt i (row i of ``h.csv``) succeeded iff ``harmful[i]``,
    XSTest prompt i was refused iff ``refused[i]``, task item i correct iff ``correct[i]``."""
    gens = [
        {
            "kind": "harmful",
            "source": "h.csv",
            "row": i,
            "prompt": "",
            "response": "",
            "verdicts": {"keyword": {"refused": not h, "harmful": bool(h), "score": float(h), "detail": ""}},
        }
        for i, h in enumerate(harmful)
    ]
    gens += [
        {
            "kind": "xstest_safe",
            "source": "x.csv",
            "row": i,
            "prompt": "",
            "response": "",
            "verdicts": {"keyword": {"refused": bool(r), "harmful": not r, "score": 0.0, "detail": ""}},
        }
        for i, r in enumerate(refused)
    ]
    gens += [
        {"kind": "task:sst2", "source": "t.tsv", "row": i, "prompt": "", "response": "", "correct": bool(c)}
        for i, c in enumerate(correct)
    ]
    asr = _rate(sum(harmful), len(harmful))
    task = _rate(sum(correct), len(correct))
    data = {
        "run_id": run_id(cfg),
        "label": cfg.name,
        "config": cfg.to_dict(),
        "config_hash": config_hash_of(cfg),
        "stamps": stamps(cfg),
        "seed": cfg.seed,
        "git": {"commit": "0" * 40, "dirty": False},
        "versions": {},
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:00:00+00:00",
        "alignment": alignment or {"aligned": cfg.align.enabled},
        "metrics": {
            "primary_judge": "keyword",
            "asr": {
                "keyword": {
                    "asr": asr["rate"],
                    "asr_ci_low": asr["ci_low"],
                    "asr_ci_high": asr["ci_high"],
                    "n": asr["n"],
                    "successes": asr["count"],
                    "degenerate_rate": 0.0,
                }
            },
            "over_refusal": {**_rate(sum(refused), len(refused)), "judge": "keyword"},
            "task": {
                "name": "sst2",
                "score": task["rate"],
                "ci_low": task["ci_low"],
                "ci_high": task["ci_high"],
                "n": task["n"],
            },
        },
        "timings": timings or {"harmful_s": 1.0, "xstest_s": 1.0, "task_s": 1.0, "total_s": 3.0},
        "data_sha256": {},
        "generations": gens,
        "model_source": "synthetic",
        "train": train,
    }
    return Record.model_validate(data)


def ones(k: int, n: int) -> list[int]:
    """``k`` ones then ``n - k`` zeros."""
    return [1] * k + [0] * (n - k)
