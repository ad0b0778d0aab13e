"""The scorecard: each pre-registered claim (``params/study/claims.yaml``) decided on the records.

For every claim and every judge (:mod:`.claim_rows` builds the rows, :mod:`.verdicts`
decides them), a verdict per row and per claim: *reproduced*, *refuted*, *equivalent* or
*underpowered* (with the power calculation saying what it would take). A judge's verdicts
decide a claim only when the judge passes the bar (Cohen's kappa against the gold set's
hand labels >= ``judges.kappa_bar``); the others are shown beside them. ``scorecard.md``
states the rules, the judges' standing and what the study's size can detect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.paths import PROJECT_ROOT
from ussafety.stats import CLUSTER_CI, mcnemar_mde
from ussafety.study.claim_rows import TASK_SCORER, claim_rows, judges_in, views
from ussafety.study.claims import ClaimsError, ClaimsFile, ClaimSpec, load_claims
from ussafety.study.conditions import Condition, StudyData
from ussafety.study.formatting import fmt_p
from ussafety.study.power import describe_power
from ussafety.study.verdicts import MIXED, NOT_MEASURED, aggregate, decide

DECIDES, REPORT_ONLY, NOT_SCORED = "decides", "reported, never decides", "no gold-set kappa yet"


@dataclass
class JudgeVerdict:
    """One claim under one judge: its rows (one Holm family), the verdict and why."""

    judge: str
    role: str
    rows: list[dict[str, Any]]
    verdict: str
    why: str

    @property
    def decides(self) -> bool:
        return self.role == DECIDES


@dataclass
class ClaimResult:
    """A claim and its verdict under each judge."""

    spec: ClaimSpec
    by_judge: dict[str, JudgeVerdict] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.spec.number

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every judge's rows (each row names its judge)."""
        return [r for jv in self.by_judge.values() for r in jv.rows]

    @property
    def verdict(self) -> str:
        """The deciding judges' verdict when they agree; otherwise says why there is none."""
        deciding = {jv.verdict for jv in self.by_judge.values() if jv.decides and jv.verdict != NOT_MEASURED}
        if len(deciding) == 1:
            return deciding.pop()
        if deciding:
            return "judges disagree"
        if any(jv.decides for jv in self.by_judge.values()) or not self.by_judge:
            return NOT_MEASURED
        return "no judge passes the bar yet"


def gold_kappas(spec: ClaimsFile, root: Path = PROJECT_ROOT) -> dict[str, float]:
    """``{judge: kappa}`` from ``judges.gold_scores`` (columns ``judge``, ``kappa``; with a
    ``part`` column, its ``test`` rows); empty while the file does not exist."""
    path = root / spec.judges.gold_scores
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    missing = {"judge", "kappa"} - set(df.columns)
    if missing:
        raise ClaimsError(f"{path}: needs columns judge and kappa (missing: {', '.join(sorted(missing))})")
    if "part" in df.columns:
        df = df[df.part == "test"]
    return {str(j): float(k) for j, k in zip(df.judge, df.kappa)}


def judge_roles(spec: ClaimsFile, present: set[str], kappas: Mapping[str, float]) -> dict[str, str]:
    """Each pre-registered judge with verdicts in the records, and its standing."""
    roles = {}
    for judge in spec.judges.decide + spec.judges.report:
        if judge not in present:
            continue
        if judge in spec.judges.report:
            roles[judge] = REPORT_ONLY
        elif judge not in kappas or math.isnan(kappas[judge]):
            roles[judge] = NOT_SCORED
        elif kappas[judge] >= spec.judges.kappa_bar:
            roles[judge] = DECIDES
        else:
            roles[judge] = f"below the bar (kappa {kappas[judge]:.2f})"
    return roles


def scorecard(
    data: StudyData, spec: ClaimsFile | None = None, kappas: Mapping[str, float] | None = None
) -> list[ClaimResult]:
    """Every claim of ``spec`` (default: ``params/study/claims.yaml``) on ``data``, per judge;
    ``kappas`` (default: :func:`gold_kappas`) says which judges pass the bar."""
    spec = spec or load_claims()
    roles = judge_roles(spec, judges_in(data), gold_kappas(spec) if kappas is None else kappas)
    cached: dict[str, tuple[list[Condition], list[Condition]]] = {}
    results = []
    for claim in spec.claims:
        result = ClaimResult(claim)
        judges = {TASK_SCORER: DECIDES} if claim.metric == "task_score" else roles
        for judge, role in judges.items():
            if judge not in cached:
                cached[judge] = views(data, judge)
            rows = claim_rows(*cached[judge], claim, spec, judge)
            decide(rows, claim, spec)
            result.by_judge[judge] = JudgeVerdict(
                judge, role, rows, *aggregate([r["verdict"] for r in rows], claim.aggregate)
            )
        results.append(result)
    return results


# ----------------------------------------------------------------------------- Markdown


def test_text(claim: ClaimSpec, spec: ClaimsFile) -> str:
    """The claim's test in words, from its pre-registration."""
    side = ">" if claim.sign > 0 else "<"
    margin = spec.margin(claim.metric)
    if claim.test == "rank":
        return (
            "Kendall's tau between two tasks of the methods' ASR effects against SFT; > 0 expected "
            "(Holm over the task pairs)"
        )
    if claim.metric == "gain":
        return (
            f"gain(a) - gain(b), gain = (ASR_SFT - ASR) + (task - task_SFT); {side} 0 expected; two-level "
            f"bootstrap p (Holm) and 95% interval; equivalence: 90% interval inside +-{margin:g}"
        )
    what = {"asr": "ASR", "task_score": "task score"}[claim.metric]
    if claim.test == "noninferiority":
        worse = "below" if claim.sign > 0 else "above"
        return (
            f"{what}(a) - {what}(b), paired by seed and item; reproduced when not {worse} "
            f"{-claim.sign * margin:+g} (one-sided Tango score test, Holm, and the 90% interval), refuted "
            f"when wholly {worse} it (the row's 'p' column is the test of 'worse than the margin', the "
            f"'p TOST' column the non-inferiority test; 'n prompts' counts task items)"
        )
    return (
        f"{what}(a) - {what}(b), paired by seed and prompt; {side} 0 expected; exact McNemar (Holm) and "
        f"95% interval; equivalence margin +-{margin:g} (TOST: Tango score tests, Holm, and 90% interval)"
    )


def _row_line(r: dict[str, Any]) -> str:
    eff = f"{r['estimate']:+.3f}"
    if "ci_low" in r:
        eff += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
    narrow = f"[{r['tost_low']:+.3f}, {r['tost_high']:+.3f}]" if "tost_low" in r else ""
    n = r.get("n_prompts", r.get("n_methods", ""))
    verdict = r["verdict"] + (" (negligible: inside the margin)" if r.get("negligible") else "")
    extra = ""
    if "own_gain" in r:
        extra = f" (gain {r['own_gain']:+.3f}; on the Pareto front: {'yes' if r['on_pareto_front'] else 'no'})"
    return (
        f"| {r['judge']} | {r['setting']} | {r['comparison']}{extra} | {n} | {r.get('n_seeds', '')} | {eff} | "
        f"{narrow} | {fmt_p(r.get('p_inf_holm', r['p_holm']))} | "
        f"{fmt_p(r.get('p_ni_holm', r.get('p_tost_holm', math.nan)))} | "
        f"**{verdict}** | {describe_power(r)} |"
    )


def _sensitivity(results: list[ClaimResult], spec: ClaimsFile) -> list[str]:
    """What this study's size can detect, from its largest paired ASR row."""
    sizes = [
        (r["n_pairs"], r["n_prompts"], r["n_seeds"])
        for c in results
        for r in c.rows
        if r.get("test_kind") == "paired" and c.spec.metric == "asr"
    ]
    if not sizes:
        return []
    n, prompts, seeds = max(sizes)
    mde = {psi: mcnemar_mde(n, psi, spec.alpha, spec.power) for psi in (0.05, 0.10, 0.20)}
    shown = ", ".join(f"{v:.3f} at {psi:.0%} discordance" for psi, v in mde.items() if not math.isnan(v))
    return [
        f"What this size can see: with {n:,} (seed, prompt) pairs ({prompts} prompts x {seeds} seed"
        f"{'s' * (seeds != 1)}), the smallest ASR difference the McNemar test detects with "
        f"{spec.power:.0%} power at alpha {spec.alpha:g} is {shown or 'none'} (`power.md`: the decisive "
        f"design's {spec.design.test_prompts:,} prompts x {spec.design.seeds} seeds).",
        "",
    ]


def scorecard_markdown(
    results: list[ClaimResult], data: StudyData, spec: ClaimsFile | None = None, stale: Mapping[str, str] | None = None
) -> str:
    """``scorecard.md``: provenance, the rules, the judges, the summary, then each claim.
    ``stale``: missing run id -> the record of an earlier version of that run."""
    spec = spec or load_claims()
    commits = sorted({str(r.git_commit)[:10] for r in data.runs})
    run_ids = sorted(r.run_id for r in data.runs)
    lines = [
        "# Scorecard: the pre-registered claims on this study's records",
        "",
        f"Generated from {len(data.runs)} run records of the `{data.preset}` study by "
        "`ussafety.study.outputs.write_outputs` (the `analysis` notebook); do not edit by hand. "
        f"Code commits of the records: {', '.join(f'`{c}`' for c in commits) or 'none'}. "
        + (
            "Run ids: " + ", ".join(f"`{r}`" for r in run_ids) + "."
            if len(run_ids) <= 30
            else "Run ids: the `run_ids` column of `tables/conditions.csv`."
        ),
        "",
    ]
    if data.missing:
        lines += [
            f"{len(data.missing)} run(s) of the study have no current record and are not counted; "
            "rows that need them are missing below:",
            "",
        ]
        for rid in data.missing:
            old = (stale or {}).get(rid)
            lines.append(
                f"- `{rid}`"
                + (
                    f": stale, the record `{old}` was made before the method's code "
                    "changed (its run id differs); the run will be redone"
                    if old
                    else ""
                )
            )
        lines.append("")
    lines += [
        f"Claims, tests and rules: `params/study/claims.yaml` (version {spec.version}), explained in "
        f"`docs/claims.md`. Effects are differences of rates in [0, 1], paired by seed and prompt; "
        f"intervals: {CLUSTER_CI}. Alpha {spec.alpha:g} after Holm's correction over each claim's rows "
        f"under one judge. A row is *reproduced* (claimed direction, significant, interval excluding 0), "
        f"*refuted* (the opposite), *equivalent* (TOST: |effect| below the margin: ASR "
        f"{spec.margin('asr'):g}, task score {spec.margin('task_score'):g}, gain {spec.margin('gain'):g}) "
        "or *underpowered* (none of these; the last column says how many prompts x seeds would decide "
        "it). A claim is *mixed* when its rows are decided but disagree, *not measured* without rows.",
        "",
    ]
    lines += _sensitivity(results, spec)
    present = sorted({j for c in results for j in c.by_judge if j != TASK_SCORER})
    roles = {j: jv.role for c in results for j, jv in c.by_judge.items()}
    lines += [
        f"Judges (bar: Cohen's kappa >= {spec.judges.kappa_bar:g} against the gold set's test part, "
        f"read from `{spec.judges.gold_scores}`): "
        + ("; ".join(f"`{j}`: {roles[j]}" for j in present) or "none with verdicts in the records")
        + ". Task-score claims need no judge.",
        "",
    ]
    head = "| # | claim | " + " | ".join(f"{j}" for j in present) + " | task scorer | decision |"
    lines += [head, "|" + "---|" * (4 + len(present))]
    for c in results:
        cells = [c.by_judge[j].verdict if j in c.by_judge else "" for j in [*present, TASK_SCORER]]
        lines.append(
            f"| {c.number} | {c.title}{' (finer)' if c.spec.finer else ''} | "
            + " | ".join(cells)
            + f" | **{c.verdict}** |"
        )
    for c in results:
        lines += [
            "",
            f"## {c.number}. {c.title}",
            "",
            f"Paper: {c.spec.paper}.",
            "",
            f"Test: {test_text(c.spec, spec)}; rows aggregate by '{c.spec.aggregate}'.",
            "",
        ]
        for judge, jv in c.by_judge.items():
            lines.append(f"- {judge} ({jv.role}): **{jv.verdict}** ({jv.why}).")
        if c.rows:
            lines += [
                "",
                "| judge | setting | comparison | n prompts | n seeds | effect [95% CI] | 90% CI | "
                "p (Holm) | p TOST (Holm) | verdict | power: what would decide it |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            lines += [_row_line(r) for r in c.rows]
    return "\n".join(lines) + "\n"


__all__ = [
    "MIXED",
    "NOT_MEASURED",
    "ClaimResult",
    "JudgeVerdict",
    "gold_kappas",
    "judge_roles",
    "scorecard",
    "scorecard_markdown",
]
