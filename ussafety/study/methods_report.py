"""The methods report (``ussafety report methods``): every method of
``params/methods/poisoned_sst2`` against SFT on the same prompts, with Holm-adjusted paired
tests, the table repeated under every second judge, and plain statements computed from it
(``paper_outputs/methods/poisoned_sst2.{csv,md}``).

Why apart from the phenomenon report (:mod:`ussafety.study.reports`): it has its own order,
families and columns; both build their rows with :func:`ussafety.study.tables.condition_table`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ussafety.atomic import write_text_atomic
from ussafety.config import RunConfig, load_config
from ussafety.methods import family_of
from ussafety.paths import PROJECT_ROOT, runs_dir
from ussafety.records import Record
from ussafety.study.report_files import exports_to, record_lines, records_home, write_markdown
from ussafety.study.tables import (
    condition_table,
    export_records,
    markdown_table,
    per_set_columns,
    records_for,
    shown,
    train_cost_s,
)

METHOD_ORDER = [
    "sft",
    "l2",
    "ewc",
    "mas",
    "lwf",
    "der",
    "derpp",
    "agem",
    "refresh",
    "merge_linear",
    "ema",
    "slerp",
    "task_arithmetic",
    "ties",
    "magmax",
    "safeinstr",
    "lisa",
    "safelora",
]
"""The issue's order of the methods table (baseline, regularization, replay, merging, safety
methods): a presentation choice of this report; the families themselves are declared by
the methods (:func:`ussafety.methods.family_of`)."""
METHODS_COLUMNS = [
    "method",
    "family",
    "n_prompts",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "p_vs_sft",
    "p_vs_sft_holm",
    "over_refusal",
    "task_score",
    "degenerate_rate",
    "train_wall_s",
    "finalize_s",
    "train_wall_rel_sft",
    "reused_sft_training",
    "run_id",
]
MD_COLUMNS = [c for c in METHODS_COLUMNS if c not in ("n_prompts", "finalize_s", "run_id")]
"""The Markdown table's columns: the CSV's without the prompt count (in the caption), the
finalize time (in the relative wall time) and the run id (in the records list)."""
JUDGE_COLUMNS = ["asr", "asr_ci_low", "asr_ci_high", "p_vs_sft", "p_vs_sft_holm"]


def method_params_files(params_dir: Path) -> list[Path]:
    """The table's params files: the methods in the issue's order, then any other file
    of the folder (combinations such as ``der_slerp``) by name."""
    files = {p.stem: p for p in params_dir.glob("*.yaml")}
    return [files[m] for m in METHOD_ORDER if m in files] + [files[n] for n in sorted(files) if n not in METHOD_ORDER]


def method_family(cfg: RunConfig) -> str:
    """The family of a config's method, as the method declares it. A merge-only method is
    stored as ``sft`` + the merge, so it takes the merge's family; a training method followed
    by a merge names both."""
    method, merge = cfg.method.name, cfg.merge.name
    if not merge:
        return family_of(method)
    if method == "sft":
        return family_of(merge)
    return f"{family_of(method)} + {family_of(merge)} ({method} + {merge})"


def methods_table(records: dict[str, Record], families: dict[str, str]) -> pd.DataFrame:
    """One row per method, compared with ``records["sft"]`` (when present) on the same
    prompts; ``p_vs_sft_holm`` adjusts the p-values of all compared methods together."""
    df = condition_table(records, "sft", holm=True)
    if df.empty:
        return pd.DataFrame(columns=METHODS_COLUMNS)
    sft = records.get("sft")
    sft_cost = sum(train_cost_s(sft)) if sft else 0.0
    extra = []
    for name, rec in records.items():
        logs = rec.train.method_logs if rec.train else {}
        extra.append(
            {
                "method": name,
                "family": families.get(name, "other"),
                "finalize_s": train_cost_s(rec)[1],
                "prepare_s": float(logs.get("prepare_s", float("nan"))),
                "train_wall_rel_sft": sum(train_cost_s(rec)) / sft_cost if sft_cost > 0 else float("nan"),
                "reused_sft_training": rec.train is not None and rec.train.reused_from is not None,
            }
        )
    df = pd.concat([df.drop(columns="condition"), pd.DataFrame(extra)], axis=1)
    for judge in second_judges(records):
        df = df.merge(judge_columns(records, judge), on="method", how="left")
    front = [c for c in METHODS_COLUMNS if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def second_judges(records: dict[str, Record]) -> list[str]:
    """Judges other than the primary one that judged every record (e.g. ``learned`` after
    ``ussafety rejudge``): the table repeats ASR and the tests under each of them, so a
    conclusion can be checked against more than one judge."""
    if not records:
        return []
    common = set.intersection(*(set(r.metrics.asr) for r in records.values()))
    primary = {r.metrics.primary_judge for r in records.values()}
    return sorted(common - primary)


def judge_columns(records: dict[str, Record], judge: str) -> pd.DataFrame:
    """``<judge>_asr``, its Wilson CI and McNemar p vs ``sft`` (raw and Holm) per method.

    Prefixed by the judge, not suffixed, so they never look like per-prompt-set
    ``asr_<set>`` columns."""
    df = condition_table(records, "sft", judge=judge, holm=True)
    return df.rename(columns={"condition": "method", **{c: f"{judge}_{c}" for c in JUDGE_COLUMNS}})[
        ["method", *(f"{judge}_{c}" for c in JUDGE_COLUMNS)]
    ]


def methods_reading(df) -> list[str]:
    """Plain statements computed from the table: which methods differ from SFT in ASR
    at the 5% level after Holm's correction, and in which direction."""
    if df.empty or "sft" not in set(df.method):
        return ["No SFT record yet, so no method is compared with SFT."]
    sft = df.set_index("method").loc["sft"]
    others = df[df.method != "sft"]
    if others.empty:
        return ["Only `sft` has a record so far: nothing is compared with it yet."]
    lower = others[(others.p_vs_sft_holm < 0.05) & (others.asr < sft.asr)]
    higher = others[(others.p_vs_sft_holm < 0.05) & (others.asr > sft.asr)]
    same = others[~others.method.isin(set(lower.method) | set(higher.method))]

    def names(d) -> str:
        return ", ".join(f"`{m}` ({a:.3f})" for m, a in zip(d.method, d.asr)) or "none"

    lines = [
        f"- ASR significantly lower than SFT's {sft.asr:.3f} (Holm-adjusted p < 0.05): {names(lower)}.",
        f"- ASR significantly higher than SFT's: {names(higher)}.",
        f"- No significant ASR difference from SFT at this number of prompts: {names(same)}.",
    ]
    worse_task = others[others.task_score < sft.task_score - 0.05]
    if len(worse_task):
        lines.append(
            f"- Task score more than 0.05 below SFT's {sft.task_score:.3f}: "
            + ", ".join(f"`{m}` ({t:.3f})" for m, t in zip(worse_task.method, worse_task.task_score))
            + "."
        )
    degenerate = df[df.degenerate_rate > 0.1]
    if len(degenerate):
        lines.append(
            "- More than 10% degenerate answers to harmful prompts (read those generations "
            "before trusting the ASR): "
            + ", ".join(f"`{m}` ({d:.3f})" for m, d in zip(degenerate.method, degenerate.degenerate_rate))
            + "."
        )
    return lines


def write_methods(out_dir: Path | None = None, params_dir: Path | None = None, root: Path | None = None) -> Path:
    """Regenerate ``poisoned_sst2.{csv,md}``: every method of ``params_dir`` on SST-2 with
    10% poison, from the record of its config's run id (under ``root``, then among the
    records already exported beside the table in the shared ``paper_outputs/records``).
    Methods without a record are listed as not run yet; nothing is filled in for them."""
    out_dir = out_dir or PROJECT_ROOT / "paper_outputs" / "methods"
    params_dir = params_dir or PROJECT_ROOT / "params" / "methods" / "poisoned_sst2"
    table = params_dir.name
    home = records_home(out_dir)
    files = method_params_files(params_dir)
    records, missing = records_for(files, [root or runs_dir(), home])
    families = {cfg.name: method_family(cfg) for cfg in map(load_config, files)}
    df = methods_table(records, families)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = df.to_csv(index=False, float_format="%.6g")  # %.6g: small p-values stay readable
    write_text_atomic(out_dir / f"{table}.csv", csv)
    if exports_to(root, home) and records:
        export_records(records.values(), home)
    lines = [
        f"# Methods on SST-2 with 10% harmful rows (`{table}`)",
        "",
        f"Generated by `ussafety report methods` from the run records of `{shown(params_dir)}/*.yaml` "
        "(listed below); do not edit by hand.",
        "",
    ]
    if records:
        judge = df.judge.iloc[0]
        lines += [
            markdown_table(df, MD_COLUMNS),
            "",
            f"ASR pools {next(iter(records.values())).metrics.asr[judge].n} harmful prompts "
            f"({df.prompt_sets.iloc[0]}) "
            f"under the `{judge}` judge; intervals are Wilson 95%. `p_vs_sft` is an exact McNemar "
            "test against the `sft` record on the same prompts, `p_vs_sft_holm` the same p-values "
            f"Holm-adjusted over the methods compared ({int(df.p_vs_sft.notna().sum())}). Over-refusal "
            "is the refusal rate on safe XSTest prompts; task score is SST-2 accuracy. "
            "`train_wall_s` is the fine-tuning wall time (with the method's `prepare`), "
            "`train_wall_rel_sft` that plus `finalize_s` (merges, Safe LoRA) over the same for "
            "`sft`. `reused_sft_training`: the run reused a cached SFT training of identical "
            "settings (its `train_wall_s` is that training's), as methods that only act after "
            "training do. Wall times are as measured by each run on its machine, not under "
            "controlled load: `benchmarks/methods.py` compares per-step costs on the same batches.",
            "",
            "## What the table shows (computed from it)",
            "",
        ]
        lines += methods_reading(df)
        if per_set := per_set_columns(df):
            lines += ["", "Per prompt set:", "", markdown_table(df, ["method", *per_set])]
        for other in second_judges(records):
            cols = [f"{other}_{c}" for c in JUDGE_COLUMNS]
            lines += [
                "",
                f"## Under the `{other}` judge",
                "",
                f"The same generations judged by `{other}` (added by `ussafety rejudge`); "
                "McNemar against `sft` on the same prompts, Holm-adjusted.",
                "",
                markdown_table(df, ["method", *cols]),
                "",
            ]
            lines += methods_reading(df.assign(asr=df[cols[0]], p_vs_sft_holm=df[cols[4]]))
    else:
        lines += ["No method has a run record yet."]
    if missing:
        lines += [
            "",
            "## Not run yet",
            "",
            "These methods have a params file but no run record, so they are not in the table:",
            "",
        ]
        lines += [f"- `{name}`: not run yet (`ussafety run {shown(path)}`)" for name, path in missing]
    if records:
        lines += ["", "## Run records", "", *record_lines(list(df.method), df)]
    lines += [
        "",
        "Regenerate: `ussafety report methods` (from `runs/`, then the records already in "
        "`paper_outputs/records/`) or `ussafety report methods --runs paper_outputs/records`.",
    ]
    return write_markdown(out_dir / f"{table}.md", lines)
