"""Judges on finished runs, applied to the stored generations of run records, and the ground
the judges reports share (:data:`OUT_DIR`, :data:`JUDGED_KINDS`).

Why re-judging exists: generation is the expensive part of a run and the judges are
cheap (the learned one) or slow but optional (LLM judges), so judges are applied
to the stored generations of a record, never by generating again.
:func:`rejudge_dir` (``ussafety rejudge RUNS --judges keyword,learned``) adds the
verdicts to each ``record.json`` in place, atomically (temp file + rename), through the
record schema: each new verdict beside the others in ``generation.verdicts``, the judge's
ASR in ``metrics.asr``, its over-refusal in ``metrics.over_refusal_by_judge`` and the step
in ``record.rejudged``; everything already in the record stays as it was (a judge's own
verdicts are only replaced with ``--force``, another judge's never). The reports judge in
memory instead (:mod:`ussafety.study.judge_reports`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ussafety.evaluate.judges import OFFTASK, Judge, get_judge, judge_pairs, prompt_type_of
from ussafety.evaluate.suite import asr_metrics
from ussafety.paths import PROJECT_ROOT
from ussafety.progress import progress
from ussafety.records import Generation, Record, read_record, write_record
from ussafety.records.schema import AsrMetrics, Rate, Verdict
from ussafety.records.store import RECORD, git_state
from ussafety.stats import wilson_interval

OUT_DIR = PROJECT_ROOT / "paper_outputs" / "judges"
"""Where the judges reports (agreement, audit index, the learned judge's held-out evaluation) go."""
JUDGED_KINDS = ("harmful", "xstest_safe")


def judge_asr(rows: list[Generation], judge: str) -> AsrMetrics:
    """Pooled and per-set ASR of ``rows`` under ``judge``: the run's own computation
    (:func:`ussafety.evaluate.suite.asr_metrics`), so a re-judged ASR and a judged-at-run-time
    one are the same numbers for the same verdicts."""
    return AsrMetrics.model_validate(asr_metrics([g.model_dump() for g in rows], judge))


def refusal_rate(rows: list[Generation], judge: str) -> Rate | None:
    """Share of ``rows`` that ``judge`` calls refused, with its Wilson 95% interval, over the
    rows it rated (``None`` when it rates no refusal), and, for a judge that gives three-way
    labels, the share it calls off-task (``offtask_rate``) over the same rows."""
    rated = [g for g in rows if g.verdicts[judge].refused is not None]
    if not rated:
        return None
    refused = sum(1 for g in rated if g.verdicts[judge].refused)
    lo, hi = wilson_interval(refused, len(rated))
    offtask = None
    if all(g.verdicts[judge].label is not None for g in rated):
        n_off = sum(1 for g in rated if g.verdicts[judge].label == OFFTASK)
        olo, ohi = wilson_interval(n_off, len(rated))
        offtask = Rate(rate=n_off / len(rated), ci_low=olo, ci_high=ohi, n=len(rated), count=n_off, judge=judge)
    rate = Rate(rate=refused / len(rated), ci_low=lo, ci_high=hi, n=len(rated), count=refused, judge=judge)
    if offtask is not None:  # set only when known, so records written without it stay as they were
        rate.offtask_rate = offtask
    return rate


def add_verdicts(
    record: Record, judges: list[Judge], force: bool = False, kinds: tuple[str, ...] = JUDGED_KINDS
) -> list[str]:
    """Judge the record's stored generations of ``kinds`` in place; return the judges applied.

    A judge whose name already has verdicts on every such row is skipped unless
    ``force``. Adds ``metrics.asr[<judge>]`` (same fields as the run's own ASR) and,
    for judges that rate refusal, ``metrics.over_refusal_by_judge[<judge>]``; other
    judges' verdicts and metrics are left as they are.
    """
    rows = [g for g in record.generations if g.kind in kinds]
    applied = []
    for judge in judges:
        if not force and rows and all(judge.name in g.verdicts for g in rows):
            continue
        verdicts = judge_pairs(
            judge, [g.prompt for g in rows], [g.response for g in rows], [prompt_type_of(g.kind) for g in rows]
        )
        # assigned, not mutated in place, so that writing the fields a record was read
        # with (:func:`ussafety.records.write_record`) includes them
        for g, v in zip(rows, verdicts):
            g.verdicts = {
                **g.verdicts,
                judge.name: Verdict(
                    refused=v.refused, harmful=v.harmful, score=v.score, detail=v.detail, label=v.label
                ),
            }
        metrics = record.metrics
        harmful = [g for g in rows if g.kind == "harmful"]
        if harmful:
            metrics.asr = {**metrics.asr, judge.name: judge_asr(harmful, judge.name)}
        rate = refusal_rate([g for g in rows if g.kind == "xstest_safe"], judge.name)
        if rate is not None:
            metrics.over_refusal_by_judge = {**metrics.over_refusal_by_judge, judge.name: rate}
        applied.append(judge.name)
    return applied


def record_paths(runs: Path) -> list[Path]:
    """Every ``<runs>/*/record.json``, sorted."""
    return sorted(Path(runs).glob(f"*/{RECORD}"))


def build_judges(specs: list[str]) -> list[Judge]:
    """Judges from specs such as ``keyword``, ``learned``, ``llama_guard=/models/lg3``."""
    return [get_judge(s) for s in specs]


def rejudge_dir(runs: Path, specs: list[str], force: bool = False) -> dict[str, list[str]]:
    """Add the judges' verdicts to every record under ``runs``, each written atomically.

    Written as the record was read plus the new verdicts: ``finished`` (when the run
    ended) is not touched, the step is logged in ``record.rejudged`` instead."""
    judges = build_judges(specs)
    done: dict[str, list[str]] = {}
    for path in progress(record_paths(runs), desc=f"rejudge {','.join(j.name for j in judges)}", unit="record"):
        record = read_record(path)
        applied = add_verdicts(record, judges, force=force)
        if applied:
            record.rejudged = [
                *record.rejudged,
                {
                    "judges": applied,
                    "specs": specs,
                    "git": git_state(),
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            ]
            write_record(record, path)
        done[record.run_id] = applied
    return done
