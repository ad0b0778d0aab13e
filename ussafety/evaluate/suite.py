"""Evaluate one model: ASR on harmful prompts, over-refusal on XSTest, the task score.

Every generation is kept, one row per prompt with its source file and row and every
judge's verdict, so a run record can be re-judged later and paired tests can match
prompts across runs by ``(set, row)``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ussafety.config import EvalConfig
from ussafety.data import load, splits
from ussafety.data.sources import load_prompt_file
from ussafety.data.tasks import get_task
from ussafety.data.types import Example
from ussafety.evaluate.generate import generate_for as _generate_for
from ussafety.evaluate.judges import (
    OFFTASK,
    REFUSAL,
    Judge,
    KeywordJudge,
    get_judge,
    is_degenerate,
    judge_pairs,
    prompt_type_of,
)
from ussafety.evaluate.judges.metrics import label_rate, proportion
from ussafety.evaluate.sandbox import humaneval_check
from ussafety.evaluate.scorers import extract_code, extract_final_number, gsm8k_exact_match, parse_sentiment
from ussafety.progress import progress
from ussafety.stats import wilson_interval


def generate_for(model: Any, tokenizer: Any, examples: list[Example], desc: str = "generate", **kw: Any) -> list[str]:
    """Batched generation with a progress bar (prompts done / total)."""
    with progress(total=len(examples), desc=desc, unit="prompt", mininterval=5) as bar:
        return _generate_for(model, tokenizer, examples, progress=bar.update, **kw)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    generations: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    data_sha256: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)


def harmful_prompts(cfg: EvalConfig) -> list[Example]:
    """The committed split's harmful prompts, or (``split: sample``) ``n_per_harmful_set``
    prompts of each set, seeded shuffle (the same prompts in every run); a user's own
    ``harmful_file`` replaces both."""
    if cfg.harmful_file is not None:
        return load_prompt_file(cfg.harmful_file, cfg.prompt_column)
    if cfg.split != "sample":
        return splits.harmful_split(cfg.split)
    out: list[Example] = []
    for name in cfg.harmful_sets:
        out += load(name, limit=cfg.n_per_harmful_set, seed=cfg.seed)
    return out


def safe_prompts(cfg: EvalConfig) -> list[Example]:
    """XSTest's safe prompts (over-refusal): the split's part, or ``n_xstest`` sampled."""
    if cfg.split != "sample":
        return splits.xstest_safe_split(cfg.split)
    return load("xstest", split="safe", limit=cfg.n_xstest, seed=cfg.seed) if cfg.n_xstest else []


def _row(kind: str, ex: Example, response: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "source": ex.source,
        "row": ex.row,
        "prompt": ex.prompt,
        "response": response,
        "category": ex.meta.get("category"),
    }


def judge_rows(rows: list[dict[str, Any]], judges: list[Judge]) -> None:
    """Attach every judge's verdict (with its three-way label) and the degenerate flag to each row.

    The prompt type each judge is told comes from the row's kind (``harmful`` or
    ``xstest_safe``), so the same judge labels a safe question's answer
    ``safe_compliance`` and a harmful request's answer ``harmful``.
    """
    prompts = [r["prompt"] for r in rows]
    responses = [r["response"] for r in rows]
    types = [prompt_type_of(r["kind"]) for r in rows]
    for judge in judges:
        for r, v in zip(rows, judge_pairs(judge, prompts, responses, types)):
            r.setdefault("verdicts", {})[judge.name] = {
                "refused": v.refused,
                "harmful": v.harmful,
                "score": v.score,
                "detail": v.detail,
                "label": v.label,
            }
    for r in rows:
        r["degenerate"] = is_degenerate(r["response"])


def asr_metrics(rows: list[dict[str, Any]], judge: str) -> dict[str, Any]:
    """Pooled and per-set ASR (with Wilson 95% CI) under one judge, and beside the pooled
    ASR the refusal and off-task rates: ASR alone cannot tell a model that refuses from
    one that no longer answers anything."""

    def rate(sub: list[dict[str, Any]]) -> dict[str, Any]:
        hits = sum(1 for r in sub if r["verdicts"][judge]["harmful"] is True)
        asr, lo, hi = proportion(hits, len(sub))
        return {"asr": asr, "asr_ci_low": lo, "asr_ci_high": hi, "n": len(sub), "successes": hits}

    out = rate(rows)
    out["by_set"] = {
        s: rate([r for r in rows if r["source"].split("/")[0] == s])
        for s in sorted({r["source"].split("/")[0] for r in rows})
    }
    out["degenerate_rate"] = sum(1 for r in rows if r["degenerate"]) / max(1, len(rows))
    hits_clean = sum(1 for r in rows if r["verdicts"][judge]["harmful"] is True and not r["degenerate"])
    out["asr_excluding_degenerate"] = hits_clean / max(1, len(rows))
    if rows:
        out["refusal_rate"] = label_rate(rows, judge, REFUSAL)
        out["offtask_rate"] = label_rate(rows, judge, OFFTASK)
    return out


def degenerate_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Share of degenerate responses (see ``is_degenerate``) per generation kind, with reasons.

    Reported for every run on its own, whatever the judges, so that a model broken by
    fine-tuning (loops, noise, empty answers) is visible and is not read as a
    successful attack. Rows judged by ``judge_rows`` carry the flag already; task rows
    are checked here (numbers or code can be flagged ``non_language``, see there).
    """
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({r["kind"] for r in rows}):
        flags = [
            r["degenerate"] if "degenerate" in r else is_degenerate(r["response"]) for r in rows if r["kind"] == kind
        ]
        reasons = Counter(f for f in flags if f)
        out[kind] = {
            "rate": sum(reasons.values()) / len(flags),
            "n": len(flags),
            "by_reason": dict(sorted(reasons.items())),
        }
    return out


def task_examples(cfg: EvalConfig, task: str) -> list[Example]:
    """The task's evaluation items: the split's part, or ``n_task`` sampled with the seed."""
    spec = get_task(task)
    if cfg.split != "sample":
        return splits.task_split(spec.eval_set, cfg.split)
    return load(spec.eval_set, split=spec.eval_split, limit=cfg.n_task, seed=cfg.seed) if cfg.n_task else []


def score_task(task: str, examples: list[Example], responses: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Task score and per-example rows: SST-2 accuracy, GSM8K exact match, HumanEval pass@1."""
    rows = []
    for ex, resp in zip(examples, responses):
        row = _row(f"task:{task}", ex, resp)
        if task == "sst2":
            pred = parse_sentiment(resp)
            row.update(pred=pred, gold=ex.meta["label"], correct=pred == ex.meta["label"])
        elif task == "gsm8k":
            row.update(
                pred=extract_final_number(resp),
                gold=ex.meta["answer"],
                correct=gsm8k_exact_match(resp, ex.meta["answer"]),
            )
        else:
            program = extract_code(resp, ex.meta["prompt"], ex.meta["entry_point"])
            res = humaneval_check(program, ex.meta["test"], ex.meta["entry_point"])
            row.update(program=program, status=res.status, correct=res.passed)
        rows.append(row)
    return sum(r["correct"] for r in rows) / max(1, len(rows)), rows


def evaluate_model(
    model: Any, tokenizer: Any, cfg: EvalConfig, task: str | None, judges: list[Judge] | None = None
) -> EvalResult:
    """Run the whole evaluation of one model and return metrics plus every generation."""
    judges = judges or [get_judge(name) for name in cfg.judges]
    keyword = next((j for j in judges if isinstance(j, KeywordJudge)), None) or KeywordJudge.from_mirror()
    gen_kw = {"batch_size": cfg.batch_size}
    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    gens: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    harmful = harmful_prompts(cfg)
    files = {ex.source: ex.sha256 for ex in harmful}
    responses = generate_for(model, tokenizer, harmful, "harmful prompts", max_new_tokens=cfg.max_new_tokens, **gen_kw)
    rows = [_row("harmful", ex, r) for ex, r in zip(harmful, responses)]
    judge_rows(rows, judges)
    metrics["asr"] = {j.name: asr_metrics(rows, j.name) for j in judges}
    metrics["primary_judge"] = judges[0].name
    gens += rows
    timings["harmful_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    safe = safe_prompts(cfg)
    if safe:
        files.update({ex.source: ex.sha256 for ex in safe})
        responses = generate_for(model, tokenizer, safe, "XSTest safe", max_new_tokens=cfg.max_new_tokens, **gen_kw)
        xrows = [_row("xstest_safe", ex, r) for ex, r in zip(safe, responses)]
        # Every judge labels the safe answers (prompt type safe): refusal = over-refusal, with
        # the off-task rate beside it. The headline over_refusal stays the GCG keyword rule's.
        judge_rows(xrows, judges if keyword in judges else [*judges, keyword])
        metrics["over_refusal"] = {k: v for k, v in label_rate(xrows, keyword.name, REFUSAL).items() if k != "count"}
        metrics["over_refusal_by_judge"] = {
            j.name: {**label_rate(xrows, j.name, REFUSAL), "offtask_rate": label_rate(xrows, j.name, OFFTASK)}
            for j in judges
            if any(r["verdicts"][j.name]["refused"] is not None for r in xrows)
        }
        gens += xrows
        timings["xstest_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    examples = task_examples(cfg, task) if task else []
    if task and examples:
        files.update({ex.source: ex.sha256 for ex in examples})
        max_new = cfg.task_max_new_tokens or get_task(task).max_new_tokens
        responses = generate_for(model, tokenizer, examples, f"task {task}", max_new_tokens=max_new, **gen_kw)
        score, trows = score_task(task, examples, responses)
        lo, hi = wilson_interval(sum(r["correct"] for r in trows), len(trows))
        metrics["task"] = {"name": task, "score": score, "ci_low": lo, "ci_high": hi, "n": len(trows)}
        gens += trows
        timings["task_s"] = time.perf_counter() - t0
    metrics["degenerate"] = degenerate_rates(gens)
    n_tokens = sum(len(tokenizer(g["response"], add_special_tokens=False)["input_ids"]) for g in gens)
    gen_s = sum(timings.get(k, 0.0) for k in ("harmful_s", "xstest_s", "task_s"))
    timings.update(generated_tokens=n_tokens, tokens_per_s=round(n_tokens / gen_s, 1) if gen_s else 0.0)
    used = {name: splits.split_sha256(name) for name in splits.eval_splits(cfg.split, task)}
    return EvalResult(metrics=metrics, generations=gens, timings=timings, data_sha256=files, splits=used)
