"""Valid run records with known per-prompt verdicts, for the report and judge tests.

Built as :class:`~ussafety.records.Record` objects (the schema every reader validates), so a
test exercises what a report reads from a real record file, not a hand-made dict that a
report would now refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ussafety.config import RunConfig
from ussafety.config.identity import config_hash_of, stamps
from ussafety.config.identity import run_id as run_id_of
from ussafety.records import Generation, Record
from ussafety.records.schema import Rate, TaskScore, Verdict
from ussafety.stats import wilson_interval
from ussafety.study.judge_reports import judge_asr

STARTED = "2026-01-01T00:00:00+00:00"


def harmful_rows(
    harmful: Sequence[bool | None],
    judge: str = "keyword",
    source: str = "advbench/x.csv",
    responses: Sequence[str] | None = None,
    degenerate: Sequence[str | None] | None = None,
) -> list[Generation]:
    """Harmful prompt ``i`` (row ``i`` of ``source``) judged harmful iff ``harmful[i]`` by ``judge``."""
    return [
        Generation(
            kind="harmful",
            source=source,
            row=i,
            prompt=f"harmful prompt {i}",
            response=responses[i] if responses else "r",
            verdicts={judge: Verdict(refused=None if h is None else not h, harmful=h)},
            degenerate=degenerate[i] if degenerate else None,
        )
        for i, h in enumerate(harmful)
    ]


def safe_rows(refused: Sequence[bool], judge: str = "keyword") -> list[Generation]:
    """XSTest safe prompt ``i`` refused iff ``refused[i]`` (the over-refusal items)."""
    return [
        Generation(
            kind="xstest_safe",
            source="xstest/xstest_prompts.csv",
            row=i,
            prompt=f"safe {i}",
            response="r",
            verdicts={judge: Verdict(refused=r, harmful=not r)},
        )
        for i, r in enumerate(refused)
    ]


def rate(count: int, n: int, judge: str | None = None) -> Rate:
    lo, hi = wilson_interval(count, n)
    return Rate(rate=count / n if n else float("nan"), ci_low=lo, ci_high=hi, n=n, count=count, judge=judge)


def make_record(
    run_id: str,
    generations: list[Generation],
    *,
    cfg: RunConfig | None = None,
    label: str | None = None,
    primary: str = "keyword",
    over_refusal: float | None = 0.2,
    task: float | None = 0.8,
    train: dict[str, Any] | None = None,
    started: str = STARTED,
) -> Record:
    """A finished record of ``generations``: ASR under every judge that judged all harmful
    rows, over-refusal ``over_refusal`` of 250 safe prompts (or the rate of the XSTest rows
    given), SST-2 score ``task`` of 200; config, id and label from ``cfg`` when given."""
    harmful = [g for g in generations if g.kind == "harmful"]
    judges = set.intersection(*(set(g.verdicts) for g in harmful)) if harmful else {primary}
    safe = [g for g in generations if g.kind == "xstest_safe"]
    if safe:
        refused = sum(bool(g.verdicts[primary].refused) for g in safe)
        over = rate(refused, len(safe), primary)
    else:
        over = None if over_refusal is None else rate(round(over_refusal * 250), 250, primary)
    metrics: dict[str, Any] = {
        "asr": {j: judge_asr(harmful, j) for j in sorted(judges)},
        "primary_judge": primary,
        "over_refusal": over,
        "task": None if task is None else TaskScore(name="sst2", score=task, ci_low=0.0, ci_high=1.0, n=200),
    }
    return Record.model_validate(
        {
            "run_id": run_id_of(cfg) if cfg else run_id,
            "label": label or (cfg.name if cfg else run_id.split("-")[0]),
            "config": cfg.to_dict() if cfg else {},
            "config_hash": config_hash_of(cfg) if cfg else "0" * 16,
            "stamps": stamps(cfg) if cfg else {},
            "seed": 0,
            "git": {"commit": "abc", "dirty": False},
            "versions": {},
            "started": started,
            "finished": started,
            "alignment": {"aligned": False},
            "train": train,
            "metrics": metrics,
            "timings": {"total_s": 1.0},
            "data_sha256": {},
            "generations": generations,
            "model_source": "test",
        }
    )
