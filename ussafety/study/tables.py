"""From run records to tables: per-condition ASR with Wilson CIs and paired tests.

Paired tests match prompts across runs by ``(source file, row)``, so two runs are
compared only on the prompts both saw. Every number written to ``paper_outputs/``
is computed here from records, never typed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.config import load_config
from ussafety.records.store import load_record
from ussafety.stats import mcnemar_exact, wilson_interval


def primary_judge(record: dict[str, Any]) -> str:
    return record["metrics"]["primary_judge"]


def harmful_outcomes(record: dict[str, Any], judge: str | None = None) -> dict[tuple[str, int], bool]:
    """``{(source, row): attack succeeded}`` for every harmful prompt of a run."""
    judge = judge or primary_judge(record)
    return {(g["source"], g["row"]): g["verdicts"][judge]["harmful"] is True
            for g in record["generations"] if g["kind"] == "harmful"}


def paired_mcnemar(a: dict[tuple[str, int], bool], b: dict[tuple[str, int], bool]) -> tuple[float, int]:
    """Exact McNemar p-value of ``a`` vs ``b`` on their shared prompts, and how many."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return float("nan"), 0
    return mcnemar_exact([a[k] for k in keys], [b[k] for k in keys]).p_value, len(keys)


def condition_row(name: str, record: dict[str, Any], baseline: dict[str, Any] | None,
                  judge: str | None = None, baseline_label: str = "aligned") -> dict[str, Any]:
    """One table row: ASR (Wilson 95% CI), paired p vs the baseline, over-refusal, task score."""
    judge = judge or primary_judge(record)
    outcomes = harmful_outcomes(record, judge)
    hits, n = sum(outcomes.values()), len(outcomes)
    lo, hi = wilson_interval(hits, n)
    p = paired_mcnemar(outcomes, harmful_outcomes(baseline, judge))[0] if baseline else float("nan")
    m = record["metrics"]
    asr_m = m["asr"][judge]
    sets = ", ".join(f"{s} {v['n']}" for s, v in asr_m["by_set"].items())
    per_set = {f"asr_{s}": v["asr"] for s, v in asr_m["by_set"].items()}
    return {"condition": name, "n_prompts": n, "asr": hits / n if n else float("nan"),
            "asr_ci_low": lo, "asr_ci_high": hi, f"p_vs_{baseline_label}": p,
            "over_refusal": m.get("over_refusal", {}).get("rate", float("nan")),
            "task": m.get("task", {}).get("name"), "task_score": m.get("task", {}).get("score", float("nan")),
            "degenerate_rate": asr_m["degenerate_rate"],
            "train_wall_s": record.get("train", {}).get("wall_s", 0.0),
            "judge": judge, "prompt_sets": sets, "run_id": record["run_id"],
            "git_commit": (record.get("git") or {}).get("commit"), **per_set}


def records_for(params_files: Iterable[Path], root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The record of each params file's current config (by its run id), if it exists."""
    out = {}
    for path in params_files:
        cfg = load_config(path)
        record = load_record(cfg.run_id, root)
        if record is None:
            raise FileNotFoundError(f"no run record for {path} (run id {cfg.run_id}); "
                                    f"run: ussafety run {path}")
        out[cfg.name] = record
    return out


def condition_table(records: dict[str, dict[str, Any]], baseline: str,
                    judge: str | None = None, baseline_label: str | None = None) -> pd.DataFrame:
    """A row per condition, in the given order, each compared with ``records[baseline]``."""
    base = records[baseline]
    label = baseline_label or baseline
    rows = [condition_row(name, rec, None if name == baseline else base, judge, label)
            for name, rec in records.items()]
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame, columns: list[str], digits: int = 3) -> str:
    """A plain Markdown table (no extra dependency) of ``columns``."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if v != v else (f"{v:.2g}" if 0 < abs(v) < 10 ** -digits else f"{v:.{digits}f}")
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)
