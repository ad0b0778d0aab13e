"""Judges compared on finished runs: agreement between judges, ASR under each, and audit
samples. Everything in ``paper_outputs/judges`` comes from here, :mod:`ussafety.study.rejudge`
and :mod:`ussafety.study.learned_report`.

:func:`write_judges_report` (``ussafety report judges``) judges in memory (through
:func:`ussafety.study.rejudge.add_verdicts`), leaves the records untouched, and writes the
agreement tables plus one ``audit.md`` next to each record. The re-judging and learned-judge
names are re-exported here, where the CLI and older callers import them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from ussafety.atomic import write_text_atomic
from ussafety.evaluate.judges import Judge
from ussafety.evaluate.judges.metrics import agreement
from ussafety.records import Generation, Record, read_record
from ussafety.study.learned_report import heldout_tables, write_learned_heldout
from ussafety.study.rejudge import (
    JUDGED_KINDS,
    OUT_DIR,
    add_verdicts,
    build_judges,
    judge_asr,
    record_paths,
    refusal_rate,
    rejudge_dir,
)
from ussafety.study.tables import markdown_table, shown

__all__ = [
    "AUDIT_FILE",
    "JUDGED_KINDS",
    "OUT_DIR",
    "Judged",
    "add_verdicts",
    "agreement_rows",
    "asr_rows",
    "build_judges",
    "heldout_tables",
    "judge_asr",
    "judged_records",
    "record_paths",
    "refusal_rate",
    "rejudge_dir",
    "write_audit",
    "write_judges_report",
    "write_learned_heldout",
]

AUDIT_FILE = "audit.md"


# --- agreement ------------------------------------------------------------------------


@dataclass
class Judged:
    """A record judged in memory (a copy: the file is untouched) and where it lives."""

    record: Record
    path: Path

    @property
    def harmful(self) -> list[Generation]:
        return [g for g in self.record.generations if g.kind == "harmful"]


def judged_records(runs: Path, judges: list[Judge]) -> list[Judged]:
    """The records under ``runs`` with harmful-prompt generations, every judge's verdicts
    added in memory (the files are not modified)."""
    out = []
    for path in record_paths(runs):
        record = read_record(path)
        if any(g.kind == "harmful" for g in record.generations):
            add_verdicts(record, judges, kinds=("harmful",))
            out.append(Judged(record, path))
    return out


def agreement_rows(judged: list[Judged], names: list[str]) -> list[dict[str, Any]]:
    """One row per run and judge pair on the harmful prompts, plus pooled rows (``run_id = all``)."""
    rows = []
    pooled: dict[tuple[str, str], tuple[list, list]] = {}
    for j in judged:
        gens = j.harmful
        for a, b in combinations(names, 2):
            va = [g.verdicts[a].harmful for g in gens]
            vb = [g.verdicts[b].harmful for g in gens]
            pa, pb = pooled.setdefault((a, b), ([], []))
            pa += va
            pb += vb
            rows.append(
                {
                    "run_id": j.record.run_id,
                    "condition": j.record.label,
                    "judge_a": a,
                    "judge_b": b,
                    **agreement(va, vb),
                }
            )
    for (a, b), (va, vb) in pooled.items():
        rows.append({"run_id": "all", "condition": "pooled", "judge_a": a, "judge_b": b, **agreement(va, vb)})
    return rows


def asr_rows(judged: list[Judged], names: list[str]) -> list[dict[str, Any]]:
    """ASR of each run under each judge (Wilson 95% CI), undecided and degenerate counts."""
    rows = []
    for j in judged:
        gens = j.harmful
        for name in names:
            m = judge_asr(gens, name)
            rows.append(
                {
                    "run_id": j.record.run_id,
                    "condition": j.record.label,
                    "judge": name,
                    "n": m.n,
                    "asr": m.asr,
                    "asr_ci_low": m.asr_ci_low,
                    "asr_ci_high": m.asr_ci_high,
                    "undecided": sum(1 for g in gens if g.verdicts[name].harmful is None),
                    "degenerate_rate": m.degenerate_rate,
                    "asr_excluding_degenerate": m.asr_excluding_degenerate,
                }
            )
    return rows


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit] + " ..."
    return text.replace("|", "\\|")


def write_audit(record: Record, names: list[str], path: Path, n: int = 20, seed: int = 0) -> Path:
    """A readable sample of ``n`` harmful-prompt generations with every judge's verdict.

    The sample is seeded by position, so runs evaluated on the same prompt list show
    the same prompts and can be read side by side.
    """
    gens = [g for g in record.generations if g.kind == "harmful"]
    idx = sorted(random.Random(seed).sample(range(len(gens)), min(n, len(gens))))
    lines = [
        f"# Audit sample: {record.run_id}",
        "",
        f"{len(idx)} of {len(gens)} harmful-prompt generations (seed {seed}), with every "
        "judge's verdict: **H** harmful (attack succeeded), **-** not harmful, **?** undecided. "
        "Generated by `ussafety report judges`; do not edit by hand.",
        "",
    ]
    for k, i in enumerate(idx, 1):
        g = gens[i]
        calls = []
        for name in names:
            v = g.verdicts.get(name)
            mark = "n/a" if v is None else {True: "H", False: "-", None: "?"}[v.harmful]
            detail = f" ({v.detail})" if v and v.detail else ""
            calls.append(f"`{name}`: **{mark}**{detail}")
        lines += [
            f"## {k}. {g.source} row {g.row}",
            "",
            f"**Prompt:** {_cell(g.prompt)}",
            "",
            f"**Response:** {_cell(g.response, 1200) or '(empty)'}",
            "",
            f"Degenerate: {g.degenerate or 'no'}. " + "; ".join(calls),
            "",
        ]
    write_text_atomic(path, "\n".join(lines))
    return path


def _disagreement_degenerate(judged: list[Judged], a: str, b: str) -> tuple[int, int]:
    """How many responses that only ``a`` (resp. only ``b``) calls harmful are degenerate."""
    only_a = only_b = 0
    for j in judged:
        for g in j.harmful:
            va, vb = g.verdicts[a].harmful, g.verdicts[b].harmful
            if g.degenerate and va is not None and vb is not None:
                only_a += va and not vb
                only_b += vb and not va
    return only_a, only_b


def _confusion_md(row: dict[str, Any]) -> list[str]:
    a, b = row["judge_a"], row["judge_b"]
    return [
        f"| | `{b}` harmful | `{b}` not harmful |",
        "|---|---|---|",
        f"| `{a}` harmful | {row['n11']} | {row['n10']} |",
        f"| `{a}` not harmful | {row['n01']} | {row['n00']} |",
    ]


def write_judges_report(runs: Path, specs: list[str], out_dir: Path | None = None, audit: bool = True) -> Path:
    """``agreement.{csv,md}`` and ``asr_by_judge.csv`` for the records under ``runs``,
    and an ``audit.md`` beside each record; the records themselves are not modified."""
    out_dir = out_dir or OUT_DIR
    judges = build_judges(specs)
    names = [j.name for j in judges]
    judged = judged_records(runs, judges)
    if not judged:
        raise FileNotFoundError(f"no run records with harmful-prompt generations under {runs}")
    agree = pd.DataFrame(agreement_rows(judged, names))
    asr = pd.DataFrame(asr_rows(judged, names))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "agreement.csv", agree.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out_dir / "asr_by_judge.csv", asr.to_csv(index=False, float_format="%.4f"))
    lines = [
        "# Agreement between judges",
        "",
        f"Generated by `ussafety report judges --runs {shown(runs)} --judges {','.join(specs)}` "
        "from the stored generations of the run records (nothing regenerated); do not edit by hand.",
        "",
        f"Judges: {', '.join(f'`{n}`' for n in names)} (see `docs/judges.md`). "
        "Items are the harmful-prompt generations of each run; a judge's undecided verdicts "
        "are left out of its pairs (`n_undecided`). Cohen's kappa: agreement beyond chance "
        "(1 = perfect, 0 = chance level).",
        "",
        "## Agreement per run and pooled",
        "",
        markdown_table(
            agree,
            [
                "run_id",
                "condition",
                "judge_a",
                "judge_b",
                "n",
                "n11",
                "n10",
                "n01",
                "n00",
                "agreement",
                "kappa",
                "asr_a",
                "asr_b",
            ],
        ),
        "",
        "`n11`: both judges call the response harmful; `n10`: only `judge_a`; `n01`: only `judge_b`; `n00`: neither.",
        "",
    ]
    for row in agree[agree.run_id == "all"].to_dict("records"):
        a, b = row["judge_a"], row["judge_b"]
        only_a, only_b = _disagreement_degenerate(judged, a, b)
        lines += [
            f"### Pooled confusion matrix: `{a}` vs `{b}`",
            "",
            *_confusion_md(row),
            "",
            f"Agreement {row['agreement']:.3f}, Cohen's kappa {row['kappa']:.3f} over "
            f"{row['n']} responses. Degenerate responses among those only `{a}` calls harmful: "
            f"{only_a} of {row['n10']}; among those only `{b}` calls harmful: {only_b} of {row['n01']}.",
            "",
        ]
    lines += [
        "## ASR of each run under each judge",
        "",
        markdown_table(
            asr,
            [
                "run_id",
                "condition",
                "judge",
                "n",
                "asr",
                "asr_ci_low",
                "asr_ci_high",
                "undecided",
                "degenerate_rate",
                "asr_excluding_degenerate",
            ],
        ),
        "",
        "Intervals are Wilson 95%. `degenerate_rate`: share of responses the degenerate-output "
        "detector flags (empty, repetition loop, non-language); `asr_excluding_degenerate` counts "
        "those as failed attacks.",
        "",
    ]
    if audit:
        lines += ["## Audit samples", ""]
        for j in judged:
            path = write_audit(j.record, names, j.path.parent / AUDIT_FILE)
            lines.append(f"- `{j.record.run_id}`: `{shown(path)}`")
        lines.append("")
    write_text_atomic(out_dir / "agreement.md", "\n".join(lines))
    return out_dir / "agreement.md"
