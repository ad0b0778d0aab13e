"""Synthetic run records with known per-prompt outcomes, for the study analysis tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ussafety.config import load_config

SMOKE = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"


def config(name: str, seed: int = 0, **overrides: Any) -> Any:
    return load_config(SMOKE, {"name": name, "seed": seed, **overrides})


def record(cfg: Any, harmful: Sequence[int], refused: Sequence[int] = (), correct: Sequence[int] = (),
           timings: dict[str, float] | None = None, train: dict[str, Any] | None = None) -> dict[str, Any]:
    """A record whose harmful prompt i (row i of ``h.csv``) succeeded iff ``harmful[i]``,
    XSTest prompt i was refused iff ``refused[i]``, task item i correct iff ``correct[i]``."""
    gens = [{"kind": "harmful", "source": "h.csv", "row": i, "prompt": "", "response": "",
             "verdicts": {"keyword": {"refused": not h, "harmful": bool(h), "score": float(h), "detail": ""}}}
            for i, h in enumerate(harmful)]
    gens += [{"kind": "xstest_safe", "source": "x.csv", "row": i, "prompt": "", "response": "",
              "verdicts": {"keyword": {"refused": bool(r), "harmful": not r, "score": 0.0, "detail": ""}}}
             for i, r in enumerate(refused)]
    gens += [{"kind": "task:sst2", "source": "t.tsv", "row": i, "prompt": "", "response": "",
              "correct": bool(c)} for i, c in enumerate(correct)]
    n = max(1, len(harmful))
    rec = {"run_id": cfg.run_id, "config": cfg.to_dict(), "config_hash": cfg.hash(), "seed": cfg.seed,
           "git": {"commit": "0" * 40}, "generations": gens,
           "metrics": {"primary_judge": "keyword",
                       "asr": {"keyword": {"asr": sum(harmful) / n, "n": len(harmful), "by_set": {},
                                           "degenerate_rate": 0.0}},
                       "over_refusal": {"rate": sum(refused) / max(1, len(refused)), "n": len(refused),
                                        "judge": "keyword"},
                       "task": {"name": "sst2", "score": sum(correct) / max(1, len(correct)),
                                "n": len(correct)}},
           "timings": timings or {"harmful_s": 1.0, "xstest_s": 1.0, "task_s": 1.0, "total_s": 3.0},
           "finished": "2026-01-01T00:00:00+00:00"}
    if train is not None:
        rec["train"] = train
    return rec


def ones(k: int, n: int) -> list[int]:
    """``k`` ones then ``n - k`` zeros."""
    return [1] * k + [0] * (n - k)
