"""The study's analysis: run records -> conditions -> tables, tests against SFT, scorecard.

A *condition* is one resolved config up to its seed (the name is a label): its runs
with different seeds are replicates. Every number comes from the per-item outcomes
stored in the records (1 = attack succeeded / safe prompt refused / task item
correct), so two conditions are compared on the very prompts both saw, paired by
``(seed, source file, row)``:

- a condition's mean is the mean over seeds of the per-seed rate, with a 95%
  two-level bootstrap interval (seeds, then prompts within a seed:
  :func:`ussafety.stats.cluster_bootstrap`);
- against SFT (same model, alignment, data, training and evaluation; only the method
  differs): the difference with its paired bootstrap interval and p-value, and the
  exact McNemar test on the pooled (seed, prompt) pairs; p-values are Holm-corrected
  over the methods compared with the same SFT run on the same metric.

Only the runs of a preset's study (``params/study/<preset>.yaml``) are read, so older
runs in the same folder (alignment attempts, ad-hoc sweeps) never mix into a condition.
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ussafety.config import config_hash, strip_added_later
from ussafety.stats import cluster_bootstrap, holm_correction, mcnemar_exact, pareto_front

METRICS = {"asr": "ASR", "over_refusal": "over-refusal", "task_score": "task score"}
LOWER_IS_BETTER = {"asr": True, "over_refusal": True, "task_score": False}
FAMILIES = {
    "sft": "baseline",
    "l2": "regularization", "ewc": "regularization", "mas": "regularization", "lwf": "regularization",
    "der": "replay", "derpp": "replay", "agem": "replay", "refresh": "replay",
    "merge_linear": "merging", "ema": "merging", "slerp": "merging", "task_arithmetic": "merging",
    "ties": "merging", "magmax": "merging",
    "safeinstr": "safety baseline", "lisa": "safety baseline", "safelora": "safety baseline",
}
CL_FAMILIES = ("regularization", "replay", "merging")
MAIN_GRIDS = ("benign", "poisoned", "merging")
TASK_MARGIN = 0.01
"""'Task score within about a point of SFT': 1 point of a score in [0, 1]."""
ALPHA = 0.05
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive at this scale"


# ----------------------------------------------------------------------------- runs

def item_outcomes(record: dict[str, Any]) -> dict[str, dict[tuple[str, int], float]]:
    """``{metric: {(source, row): 0/1}}`` of one record, under the record's primary judge
    (ASR) and the judge its over-refusal rate used."""
    m = record["metrics"]
    harm_judge = m["primary_judge"]
    refusal_judge = (m.get("over_refusal") or {}).get("judge", harm_judge)
    out: dict[str, dict[tuple[str, int], float]] = {"asr": {}, "over_refusal": {}, "task_score": {}}
    for g in record["generations"]:
        key = (g["source"], g["row"])
        if g["kind"] == "harmful":
            out["asr"][key] = float(g["verdicts"][harm_judge]["harmful"] is True)
        elif g["kind"] == "xstest_safe":
            out["over_refusal"][key] = float(g["verdicts"][refusal_judge]["refused"] is True)
        elif g["kind"].startswith("task:"):
            out["task_score"][key] = float(bool(g["correct"]))
    return out


def normalized_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config without its name, with the scored task written out, and for a run
    without fine-tuning without the (unused) training, method and merge settings."""
    c = strip_added_later(copy.deepcopy(cfg))  # records from before a field existed compare equal
    c.pop("name", None)
    c["eval"]["task"] = c["eval"].get("task") or c["task"]["name"]
    if not (c["task"]["name"] or c["task"].get("upload")):
        c["task"] = {"name": None}
        for key in ("train", "method", "merge"):
            c.pop(key, None)
    return c


def _hash(obj: Any) -> str:
    return config_hash(obj)[:16]


def condition_key(cfg: dict[str, Any]) -> str:
    c = normalized_config(cfg)
    c.pop("seed", None)
    return _hash(c)


def setting_key(cfg: dict[str, Any], **task_changes: Any) -> str:
    """What a method is compared within: everything but seed, method and merge."""
    c = normalized_config(cfg)
    for key in ("seed", "method", "merge"):
        c.pop(key, None)
    c["task"].update(task_changes)
    return _hash(c)


def base_key(cfg: dict[str, Any]) -> str:
    """The starting model and what is measured: model, alignment, evaluation."""
    c = normalized_config(cfg)
    return _hash({k: c[k] for k in ("model", "align", "eval")})


def _short(name: str | None) -> str:
    return str(name).rstrip("/").rsplit("/", 1)[-1] if name else "none"


@dataclass
class Run:
    """One finished run: its config, labels, the grids/sweeps it belongs to, its outcomes."""

    run_id: str
    config: dict[str, Any]
    outcomes: dict[str, dict[tuple[str, int], float]]
    git_commit: str | None = None
    grids: set[str] = field(default_factory=set)
    sweeps: set[str] = field(default_factory=set)
    record: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_record(cls, record: dict[str, Any], grids: Iterable[str] = (),
                    sweeps: Iterable[str] = ()) -> Run:
        return cls(run_id=record["run_id"], config=record["config"], outcomes=item_outcomes(record),
                   git_commit=(record.get("git") or {}).get("commit"), grids=set(grids),
                   sweeps=set(s for s in sweeps if s), record=record)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])


def labels(cfg: dict[str, Any]) -> dict[str, Any]:
    """Human-readable columns of a condition: model, task, scenario, method..."""
    c = normalized_config(cfg)
    fine_tuned = c["task"]["name"] is not None or bool(c["task"].get("upload"))
    if not fine_tuned:
        method = "aligned" if c["align"]["enabled"] else "as shipped"
        return {"model": _short(c["model"]["name"]), "task": c["eval"]["task"], "scenario": "base",
                "poison_ratio": float("nan"), "method": method, "family": "base", "params": "",
                "n_train": 0}
    p = float(c["task"]["poison_ratio"])
    name = c["method"]["name"]
    merge = (c.get("merge") or {}).get("name")
    params = {k: v for k, v in c["method"]["params"].items()}
    if merge:
        params.update({f"{merge}.{k}": v for k, v in (c["merge"].get("params") or {}).items()})
    return {"model": _short(c["model"]["name"]), "task": c["eval"]["task"],
            "scenario": "poisoned" if p > 0 else "benign", "poison_ratio": p,
            "method": f"{name}+{merge}" if merge else name,
            "family": FAMILIES.get(merge or name, "other"),
            "params": json.dumps(params, sort_keys=True) if params else "",
            "n_train": int(c["task"].get("n_train") or 0)}


@dataclass
class Condition:
    """A config up to its seed, with one run per seed."""

    key: str
    config: dict[str, Any]
    runs: dict[int, Run]

    @property
    def labels(self) -> dict[str, Any]:
        return labels(self.config)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    @property
    def grids(self) -> set[str]:
        return set().union(*(r.grids for r in self.runs.values()))

    @property
    def is_sft(self) -> bool:
        lab = self.labels
        return lab["method"] == "sft" and lab["scenario"] != "base"

    def per_seed(self, metric: str) -> dict[int, dict[tuple[str, int], float]]:
        return {s: r.outcomes[metric] for s, r in self.runs.items() if r.outcomes[metric]}


def group_conditions(runs: Iterable[Run]) -> list[Condition]:
    """Runs grouped by :func:`condition_key`; the first run of a seed wins (a config run
    twice under two names counts once)."""
    out: dict[str, Condition] = {}
    for run in runs:
        key = condition_key(run.config)
        cond = out.setdefault(key, Condition(key=key, config=run.config, runs={}))
        cond.runs.setdefault(run.seed, run)
    return list(out.values())


@dataclass
class StudyData:
    """The finished runs of a study (or any records), with their grid and sweep tags."""

    runs: list[Run]
    missing: list[str] = field(default_factory=list)
    sweeps: dict[str, Any] = field(default_factory=dict)
    preset: str = ""

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]],
                     tags: dict[str, tuple[Iterable[str], Iterable[str]]] | None = None,
                     sweeps: dict[str, Any] | None = None, preset: str = "") -> StudyData:
        """``tags``: ``{run_id: (grids, sweeps)}``; untagged runs are in every main grid."""
        runs = []
        for rec in records:
            grids, sw = (tags or {}).get(rec["run_id"], (MAIN_GRIDS, ()))
            runs.append(Run.from_record(rec, grids, sw))
        return cls(runs=runs, sweeps=sweeps or {}, preset=preset)

    def conditions(self, grids: Iterable[str] | None = None) -> list[Condition]:
        wanted = set(grids) if grids is not None else None
        runs = [r for r in self.runs if wanted is None or r.grids & wanted]
        return group_conditions(runs)

    def sweep_runs(self, sweep: str) -> list[Run]:
        return [r for r in self.runs if sweep in r.sweeps]


def load_study_data(preset: Any, root: Path | None = None, grids: Iterable[str] | None = None) -> StudyData:
    """The records of every run of ``preset``'s study that has finished (under ``root``)."""
    from ussafety.records.store import load_record
    from ussafety.study.grid import expand, load_study

    study = load_study(preset)
    runs: dict[str, Run] = {}
    missing: list[str] = []
    for sr in expand(study, grids):
        if sr.run_id in runs:
            runs[sr.run_id].grids.add(sr.grid)
            if sr.sweep:
                runs[sr.run_id].sweeps.add(sr.sweep)
            continue
        if sr.run_id in missing:
            continue
        record = load_record(sr.run_id, root)
        if record is None or "metrics" not in record:
            missing.append(sr.run_id)
            continue
        runs[sr.run_id] = Run.from_record(record, [sr.grid], [sr.sweep] if sr.sweep else [])
    return StudyData(runs=list(runs.values()), missing=missing, sweeps=study.sweeps, preset=study.preset)


# ----------------------------------------------------------------------------- statistics

def condition_mean(cond: Condition, metric: str, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean over seeds of the per-seed rate, 95% two-level bootstrap interval."""
    per_seed = cond.per_seed(metric)
    if not per_seed:
        return {metric: math.nan, f"{metric}_low": math.nan, f"{metric}_high": math.nan, f"{metric}_n": 0}
    parts = [[list(per_seed[s].values())] for s in sorted(per_seed)]
    res = cluster_bootstrap(parts, n_boot=n_boot, seed=seed)
    return {metric: res.estimate, f"{metric}_low": res.low, f"{metric}_high": res.high,
            f"{metric}_n": int(np.mean([len(v) for v in per_seed.values()]))}


def _pairs(a: Condition, b: Condition, metric: str, reuse_single_reference: bool
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shared seed: a's and b's outcomes on the prompts both saw, in the same order."""
    pa, pb = a.per_seed(metric), b.per_seed(metric)
    out = []
    for s in sorted(pa):
        ref = pb.get(s)
        if ref is None and reuse_single_reference and len(pb) == 1:
            ref = next(iter(pb.values()))
        if ref is None:
            continue
        keys = sorted(set(pa[s]) & set(ref))
        if keys:
            out.append((np.array([pa[s][k] for k in keys]), np.array([ref[k] for k in keys])))
    return out


def paired_comparison(a: Condition, b: Condition, metric: str, n_boot: int = 4000, seed: int = 0,
                      reuse_single_reference: bool = False) -> dict[str, Any]:
    """``a - b`` on ``metric``, paired by (seed, prompt): estimate, 95% bootstrap interval
    and p-value (seeds then prompts), exact McNemar on the pooled pairs.

    ``reuse_single_reference``: when ``b`` has one seed (a base model, which no training
    seed changes), pair each seed of ``a`` with it.
    """
    pairs = _pairs(a, b, metric, reuse_single_reference)
    if not pairs:
        return {"n_seeds": 0, "n_pairs": 0, "estimate": math.nan, "ci_low": math.nan,
                "ci_high": math.nan, "p_bootstrap": math.nan, "p_mcnemar": math.nan,
                "b01": 0, "b10": 0}
    boot = cluster_bootstrap([[x - y] for x, y in pairs], n_boot=n_boot, seed=seed)
    xa = np.concatenate([x for x, _ in pairs]) > 0.5
    xb = np.concatenate([y for _, y in pairs]) > 0.5
    mc = mcnemar_exact(list(xb), list(xa))  # b01: b False, a True (a "worse" on a 0/1 outcome)
    return {"n_seeds": len(pairs), "n_pairs": int(xa.size), "estimate": boot.estimate,
            "ci_low": boot.low, "ci_high": boot.high, "p_bootstrap": boot.p_value,
            "p_mcnemar": mc.p_value, "b01": mc.b01, "b10": mc.b10}


# ----------------------------------------------------------------------------- tables

def _label_row(cond: Condition) -> dict[str, Any]:
    lab = cond.labels
    return {**lab, "n_seeds": len(cond.runs), "seeds": ",".join(map(str, cond.seeds)),
            "condition": cond.key, "run_ids": " ".join(cond.runs[s].run_id for s in cond.seeds)}


SORT = ["model", "task", "scenario", "poison_ratio", "family", "method", "params"]
FAMILY_ORDER = {"base": 0, "baseline": 1, "regularization": 2, "replay": 3, "merging": 4,
                "safety baseline": 5, "other": 6}
SCENARIO_ORDER = {"base": 0, "benign": 1, "poisoned": 2}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    key = df.assign(_f=df.family.map(FAMILY_ORDER).fillna(9), _s=df.scenario.map(SCENARIO_ORDER).fillna(9),
                    _p=df.poison_ratio.fillna(-1))
    key = key.sort_values(["model", "task", "_s", "_p", "_f", "method", "params"], kind="stable")
    return df.loc[key.index].reset_index(drop=True)


def condition_table(data: StudyData, grids: Iterable[str] | None = MAIN_GRIDS, n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """One row per condition (method x task x scenario ...): each metric's mean over seeds
    with its 95% interval and the number of items per seed."""
    rows = []
    for cond in data.conditions(grids):
        row = _label_row(cond)
        for metric in METRICS:
            row.update(condition_mean(cond, metric, n_boot=n_boot, seed=seed))
        rows.append(row)
    return _sorted(pd.DataFrame(rows))


def sft_reference(cond: Condition, conditions: list[Condition]) -> Condition | None:
    """The SFT condition with the same model, alignment, data, training and evaluation."""
    if cond.labels["scenario"] == "base":
        return None
    key = setting_key(cond.config)
    for other in conditions:
        if other.is_sft and setting_key(other.config) == key:
            return other
    return None


def significance_table(data: StudyData, grids: Iterable[str] | None = MAIN_GRIDS, n_boot: int = 4000,
                       seed: int = 0) -> pd.DataFrame:
    """Every non-SFT condition against its SFT reference, on every metric: difference
    (method - SFT), 95% paired bootstrap interval, bootstrap and exact McNemar p-values
    and their Holm corrections over the methods compared with the same SFT run."""
    conditions = data.conditions(grids)
    rows = []
    for cond in conditions:
        ref = sft_reference(cond, conditions)
        if ref is None or cond is ref:
            continue
        for metric in METRICS:
            cmp = paired_comparison(cond, ref, metric, n_boot=n_boot, seed=seed)
            if cmp["n_pairs"] == 0:
                continue
            rows.append({**_label_row(cond), "metric": metric, "reference": ref.key,
                         "reference_run_ids": " ".join(ref.runs[s].run_id for s in ref.seeds), **cmp})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("p_mcnemar", "p_bootstrap"):
        df[f"{col}_holm"] = np.nan
        for _, idx in df.groupby(["reference", "metric"]).groups.items():
            df.loc[idx, f"{col}_holm"] = holm_correction(list(df.loc[idx, col]))
    df["better_than_sft"] = np.where(df.metric.map(LOWER_IS_BETTER), df.estimate < 0, df.estimate > 0)
    df["significant"] = df.p_mcnemar_holm < ALPHA
    return _sorted(df)


def method_default(method: str, param: str) -> Any:
    """A method's default hyper-parameter (the dataclass field), or None."""
    import dataclasses

    from ussafety.methods import load_all
    from ussafety.methods.base import REGISTRY

    load_all()
    cls = REGISTRY.get(method)
    if cls is None:
        return None
    for f in dataclasses.fields(cls):
        if f.name == param:
            return f.default if f.default is not dataclasses.MISSING else None
    return None


def sweep_x(cfg: dict[str, Any], x: str) -> Any:
    """The value of ``x`` (a dotted path) in a config; a method parameter the config
    leaves at its default reads as that default."""
    from ussafety.study.grid import get_path

    value = get_path(cfg, x)
    if value is None and x.startswith("method.params."):
        value = method_default(cfg["method"]["name"], x.split(".", 2)[2])
    return value


def ablation_table(data: StudyData, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (sweep, condition) over the runs each sweep tags: x, metrics with CIs."""
    rows = []
    for name, sweep in data.sweeps.items():
        for cond in group_conditions(data.sweep_runs(name)):
            row = {"sweep": name, "x_label": sweep.label, "log_x": sweep.log,
                   "x": sweep_x(cond.config, sweep.x), **_label_row(cond)}
            for metric in METRICS:
                row.update(condition_mean(cond, metric, n_boot=n_boot, seed=seed))
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["sweep", "method", "x"], kind="stable").reset_index(drop=True)


def pareto_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (fine-tuned conditions) with ``pareto``: on the (ASR down, task score up)
    front of its model x task x scenario x poison-ratio panel."""
    df = table[table.scenario != "base"].copy()
    df["pareto"] = False
    for _, idx in df.groupby(["model", "task", "scenario", "poison_ratio"], dropna=False).groups.items():
        df.loc[idx, "pareto"] = pareto_front(list(df.loc[idx, "asr"]), list(df.loc[idx, "task_score"]))
    return df


# ----------------------------------------------------------------------------- formatting

def fmt_num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.2g}" if 0 < abs(v) < 10 ** -digits else f"{v:.{digits}f}"
    return str(v)


def fmt_p(p: Any) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def with_ci(df: pd.DataFrame, metric: str, digits: int = 3) -> pd.Series:
    return df.apply(lambda r: f"{fmt_num(r[metric], digits)} [{fmt_num(r[f'{metric}_low'], digits)}, "
                              f"{fmt_num(r[f'{metric}_high'], digits)}]", axis=1)


def display_conditions(table: pd.DataFrame) -> pd.DataFrame:
    """The condition table as strings, one "mean [low, high]" column per metric."""
    if table.empty:
        return table
    out = table[["model", "task", "scenario", "poison_ratio", "method", "params", "n_seeds"]].copy()
    out["poison_ratio"] = out.poison_ratio.map(lambda p: "" if p != p else f"{p:g}")
    for metric, title in METRICS.items():
        out[title] = with_ci(table, metric)
    out["items"] = table.apply(lambda r: f"{r.asr_n}/{r.over_refusal_n}/{r.task_score_n}", axis=1)
    return out


def display_significance(sig: pd.DataFrame) -> pd.DataFrame:
    if sig.empty:
        return sig
    out = sig[["model", "task", "scenario", "poison_ratio", "method", "params", "metric", "n_seeds",
               "n_pairs"]].copy()
    out["poison_ratio"] = out.poison_ratio.map(lambda p: f"{p:g}")
    out["metric"] = out.metric.map(METRICS)
    out["diff vs SFT [95% CI]"] = sig.apply(
        lambda r: f"{r.estimate:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", axis=1)
    for col in ("p_mcnemar", "p_mcnemar_holm", "p_bootstrap", "p_bootstrap_holm"):
        out[col] = sig[col].map(fmt_p)
    return out


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no rows)"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt_num(r[c]) if isinstance(r[c], float) else str(r[c])
                                       for c in cols) + " |")
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs ``table`` of ``df`` (strings as they are, escaped)."""
    cols = list(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(tex_escape(str(c)) for c in cols) + r" \\", r"\midrule"]
    for _, r in df.iterrows():
        lines.append(" & ".join(tex_escape(fmt_num(r[c]) if isinstance(r[c], float) else str(r[c]))
                                for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(raw: pd.DataFrame, shown: pd.DataFrame, base: Path, caption: str) -> list[Path]:
    """``base.csv`` (raw numbers), ``base.md`` and ``base.tex`` (formatted)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    raw.to_csv(base.with_suffix(".csv"), index=False, float_format="%.6g")
    base.with_suffix(".md").write_text(markdown(shown) + "\n", encoding="utf-8")
    base.with_suffix(".tex").write_text(latex(shown, caption, f"tab:{base.stem}"), encoding="utf-8")
    return [base.with_suffix(s) for s in (".csv", ".md", ".tex")]


# ----------------------------------------------------------------------------- scorecard

@dataclass
class Claim:
    """One claim of the reference paper, the rows that test it and the verdict."""

    number: int
    title: str
    paper: str
    test: str
    rows: list[dict[str, Any]]
    verdict: str
    why: str


def directional_verdict(estimate: float, low: float, high: float, p: float, sign: int) -> str:
    """``sign`` = +1: the claim says the effect is positive. Reproduced when the effect
    has the claimed sign, the CI excludes 0 and the (Holm) p < 0.05; not reproduced when
    all that holds with the opposite sign; otherwise inconclusive."""
    if any(math.isnan(v) for v in (estimate, low, high, p)):
        return INCONCLUSIVE
    if p < ALPHA and sign * low > 0 and sign * estimate > 0:
        return REPRODUCED
    if p < ALPHA and sign * high < 0 and sign * estimate < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def noninferiority_verdict(low: float, high: float, margin: float = TASK_MARGIN) -> str:
    """Task score 'within about a point of SFT' (or better): reproduced when the CI of
    (method - SFT) lies above -margin, not reproduced when it lies wholly below -margin."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if low >= -margin:
        return REPRODUCED
    if high < -margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def aggregate(verdicts: list[str]) -> tuple[str, str]:
    """A claim over several rows: reproduced when at least half the rows are and none
    contradicts it; not reproduced when at least half contradict it; else inconclusive."""
    if not verdicts:
        return INCONCLUSIVE, "not measured: the study has no records for it"
    n = len(verdicts)
    yes, no = verdicts.count(REPRODUCED), verdicts.count(NOT_REPRODUCED)
    why = f"{yes} of {n} rows reproduced, {no} contradicted, {n - yes - no} inconclusive"
    if no == 0 and 2 * yes >= n:
        return REPRODUCED, why
    if 2 * no >= n:
        return NOT_REPRODUCED, why
    return INCONCLUSIVE, why


def _setting_label(cond: Condition) -> str:
    lab = cond.labels
    p = "" if lab["scenario"] != "poisoned" else f", p = {lab['poison_ratio']:g}"
    return f"{lab['model']}, {lab['task']}, {lab['scenario']}{p}"


def _holm_rows(rows: list[dict[str, Any]]) -> None:
    if rows:
        for r, ph in zip(rows, holm_correction([r["p_mcnemar"] for r in rows])):
            r["p_holm"] = ph


def _claim_rows_vs(pairs: list[tuple[Condition, Condition, str]], sign: int, n_boot: int,
                   reuse_single_reference: bool) -> list[dict[str, Any]]:
    rows = []
    for a, b, what in pairs:
        cmp = paired_comparison(a, b, "asr", n_boot=n_boot, reuse_single_reference=reuse_single_reference)
        if cmp["n_pairs"]:
            rows.append({"setting": _setting_label(a), "comparison": what, **cmp})
    _holm_rows(rows)
    for r in rows:
        r["verdict"] = directional_verdict(r["estimate"], r["ci_low"], r["ci_high"], r["p_holm"], sign)
    return rows


def _gain_gap(a: Condition, b: Condition, ref: Condition, n_boot: int) -> dict[str, Any]:
    """gain(a) - gain(b), gain = ASR reduction vs SFT + task-score change vs SFT; SFT
    cancels, so it is (ASR_b - ASR_a) + (task_a - task_b), paired by seed and prompt."""
    harm = _pairs(b, a, "asr", False)
    task = _pairs(a, b, "task_score", False)
    seeds_h = {s for s in a.per_seed("asr")} & {s for s in b.per_seed("asr")}
    seeds_t = {s for s in a.per_seed("task_score")} & {s for s in b.per_seed("task_score")}
    if not harm or not task or seeds_h != seeds_t or len(harm) != len(task):
        return {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_bootstrap": math.nan}
    boot = cluster_bootstrap([[x - y, u - v] for (x, y), (u, v) in zip(harm, task)], n_boot=n_boot)
    return {"estimate": boot.estimate, "ci_low": boot.low, "ci_high": boot.high, "p_bootstrap": boot.p_value}


def scorecard(data: StudyData, n_boot: int = 4000) -> list[Claim]:
    """The reference paper's five claims, each tested on the study's records."""
    every = data.conditions(None)
    main = data.conditions(MAIN_GRIDS)
    sig_rows: dict[str, list[dict[str, Any]]] = {"asr": [], "task_score": []}
    by_ref: dict[str, list[Condition]] = defaultdict(list)
    for cond in main:
        ref = sft_reference(cond, main)
        if ref is not None and cond is not ref:
            by_ref[ref.key].append(cond)
    refs = {c.key: c for c in main}
    # Claims 3 and 5: every method vs its SFT, Holm over the methods sharing that SFT.
    for ref_key, conds in by_ref.items():
        ref = refs[ref_key]
        for metric in ("asr", "task_score"):
            rows = []
            for cond in conds:
                cmp = paired_comparison(cond, ref, metric, n_boot=n_boot)
                if cmp["n_pairs"]:
                    rows.append({"setting": _setting_label(cond), "comparison": f"{cond.labels['method']} - SFT",
                                 "family": cond.labels["family"], **cmp})
            _holm_rows(rows)
            sig_rows[metric] += rows

    claims = []
    # 1. Benign fine-tuning raises ASR (SFT on clean data vs the base it started from).
    bases = [c for c in every if c.labels["scenario"] == "base"]
    pairs = []
    for c in every:
        if c.is_sft and c.labels["scenario"] == "benign":
            base = next((b for b in bases if base_key(b.config) == base_key(c.config)), None)
            if base is not None:
                pairs.append((c, base, f"SFT benign - {base.labels['method']} base"))
    rows = _claim_rows_vs(pairs, +1, n_boot, reuse_single_reference=True)
    claims.append(Claim(1, "Benign fine-tuning raises ASR",
                        "fine-tuning an aligned model on clean task data erodes its safety",
                        "ASR(SFT on clean data) - ASR(base before fine-tuning), paired by prompt "
                        "(and seed); > 0 expected", rows, *aggregate([r["verdict"] for r in rows])))
    # 2. Poisoning raises it more (SFT poisoned vs SFT benign, same everything else).
    pairs = []
    for c in every:
        if c.is_sft and c.labels["scenario"] == "poisoned":
            key = setting_key(c.config, poison_ratio=0.0)
            benign = next((b for b in every if b.is_sft and setting_key(b.config) == key), None)
            if benign is not None:
                pairs.append((c, benign, f"SFT p = {c.labels['poison_ratio']:g} - SFT benign"))
    rows = _claim_rows_vs(pairs, +1, n_boot, reuse_single_reference=False)
    claims.append(Claim(2, "Poisoning raises ASR more than benign fine-tuning",
                        "harmful rows in the upload erode safety more than clean data",
                        "ASR(SFT on poisoned data) - ASR(SFT on clean data), paired; > 0 expected",
                        rows, *aggregate([r["verdict"] for r in rows])))
    # 3. Continual-learning methods lower ASR against SFT.
    rows = [r for r in sig_rows["asr"] if r["family"] in CL_FAMILIES]
    for r in rows:
        r["verdict"] = directional_verdict(r["estimate"], r["ci_low"], r["ci_high"], r["p_holm"], -1)
    claims.append(Claim(3, "Continual-learning methods lower ASR against SFT",
                        "regularization, replay and merging methods keep more safety than plain SFT",
                        "ASR(method) - ASR(SFT) for each regularization / replay / merging method, "
                        "Holm over the methods sharing an SFT run; < 0 expected",
                        rows, *aggregate([r["verdict"] for r in rows])))
    # 4. DER gives the best safety-utility trade-off.
    rows = []
    for ref_key, conds in by_ref.items():
        ref = refs[ref_key]
        ders = [c for c in conds if c.labels["method"] == "der"]
        others = [c for c in conds if c.labels["method"] != "der"]
        if not ders or not others:
            continue
        der = ders[0]
        gains = {}
        for c in [der] + others:
            dh = paired_comparison(ref, c, "asr", n_boot=200)["estimate"]      # ASR_SFT - ASR_c
            dt = paired_comparison(c, ref, "task_score", n_boot=200)["estimate"]  # task_c - task_SFT
            gains[c.key] = dh + dt
        ranked = sorted([c for c in others if gains[c.key] == gains[c.key]], key=lambda c: -gains[c.key])
        if not ranked or gains[der.key] != gains[der.key]:
            continue
        rival = ranked[0]
        gap = _gain_gap(der, rival, ref, n_boot)
        pts = [ref, der] + others
        front = pareto_front([condition_mean(c, "asr", n_boot=1)["asr"] for c in pts],
                             [condition_mean(c, "task_score", n_boot=1)["task_score"] for c in pts])
        verdict = directional_verdict(gap["estimate"], gap["ci_low"], gap["ci_high"], gap["p_bootstrap"], +1)
        rows.append({"setting": _setting_label(der),
                     "comparison": f"gain(DER) - gain({rival.labels['method']}, best other of {len(others)})",
                     "der_gain": gains[der.key], "der_on_pareto_front": front[1],
                     **gap, "p_holm": gap["p_bootstrap"], "verdict": verdict})
    claims.append(Claim(4, "DER gives the best safety-utility trade-off",
                        "among the methods compared, DER keeps safety best at least utility cost",
                        "gain = (ASR_SFT - ASR_method) + (task_method - task_SFT); gain(DER) - gain(best "
                        "other method), paired bootstrap over seeds and prompts; > 0 expected "
                        "(p is the bootstrap p-value)", rows, *aggregate([r["verdict"] for r in rows])))
    # 5. Task score within about a point of SFT.
    rows = [r for r in sig_rows["task_score"] if r["family"] in CL_FAMILIES]
    for r in rows:
        r["verdict"] = noninferiority_verdict(r["ci_low"], r["ci_high"])
    claims.append(Claim(5, "Task score stays within about a point of SFT",
                        "the methods protect safety at (almost) no cost in task performance",
                        f"task(method) - task(SFT) for each continual-learning method; reproduced when "
                        f"the 95% CI lies above -{TASK_MARGIN:g} (non-inferiority, 1 point), not reproduced "
                        f"when it lies wholly below", rows, *aggregate([r["verdict"] for r in rows])))
    return claims


def scorecard_markdown(claims: list[Claim], data: StudyData) -> str:
    commits = sorted({str(r.git_commit)[:10] for r in data.runs})
    lines = ["# Scorecard: the reference paper's claims at this scale", "",
             f"Generated from {len(data.runs)} run records of the `{data.preset}` study by "
             "`ussafety.study.analysis.write_outputs` (the `analysis` notebook); do not edit by hand. "
             f"Code commits of the records: {', '.join(f'`{c}`' for c in commits) or 'none'}. "
             + ("Run ids: " + ", ".join(f"`{r.run_id}`" for r in sorted(data.runs, key=lambda r: r.run_id))
                + "." if len(data.runs) <= 30 else "Run ids: the `run_ids` column of `tables/conditions.csv`."),
             ""]
    if data.missing:
        lines += [f"{len(data.missing)} run(s) of the study have no record yet and are not counted.", ""]
    lines += ["Effects are differences of rates in [0, 1], paired by seed and prompt; 95% intervals from "
              "a two-level bootstrap (seeds, then prompts); p-values are exact McNemar tests on the "
              "pooled (seed, prompt) pairs, Holm-corrected within each claim's family of comparisons, "
              "unless the claim says otherwise. A row is *reproduced* when the effect has the claimed "
              "sign with p < 0.05 and an interval excluding 0, *not reproduced* when the same holds "
              "with the opposite sign, and *inconclusive at this scale* otherwise. A claim is "
              "reproduced when at least half its rows are and none contradicts it, not reproduced "
              "when at least half contradict it.", "", "| # | claim | verdict | rows |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.number} | {c.title} | **{c.verdict}** | {c.why} |")
    for c in claims:
        lines += ["", f"## {c.number}. {c.title}", "", f"Paper: {c.paper}.", "", f"Test: {c.test}.", "",
                  f"Verdict: **{c.verdict}** ({c.why}).", ""]
        if c.rows:
            lines += ["| setting | comparison | n seeds | n pairs | effect [95% CI] | p | verdict |",
                      "|---|---|---|---|---|---|---|"]
            for r in c.rows:
                eff = f"{r['estimate']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                extra = ""
                if "der_on_pareto_front" in r:
                    extra = f" (DER gain {r['der_gain']:+.3f}; on Pareto front: {'yes' if r['der_on_pareto_front'] else 'no'})"
                lines.append(f"| {r['setting']} | {r['comparison']}{extra} | {r.get('n_seeds', '')} | "
                             f"{r.get('n_pairs', '')} | {eff} | {fmt_p(r['p_holm'])} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- everything

def default_out_dir(preset: Any) -> Path:
    """``paper_outputs/`` for the README's main study (``cpu``), else ``paper_outputs/<preset>/``."""
    from ussafety.paths import PROJECT_ROOT
    from ussafety.study.grid import load_study

    name = load_study(preset).preset
    return PROJECT_ROOT / "paper_outputs" if name == "cpu" else PROJECT_ROOT / "paper_outputs" / name


EXPORT_LIMIT = 200
"""Studies with at most this many records export them beside the outputs by default."""


def write_outputs(preset: Any, out_dir: Path, root: Path | None = None, n_boot: int = 4000,
                  figures: bool = True, export_records: bool | None = None) -> dict[str, Any]:
    """Tables (CSV, Markdown, LaTeX), figures (PNG, PDF) and ``scorecard.md`` of a study.

    ``export_records`` (default: when the study has at most :data:`EXPORT_LIMIT` records)
    copies the records used to ``out_dir/records/<run_id>/record.json``, so the evidence
    travels with the outputs and ``--runs out_dir/records`` regenerates them. Returns the
    frames and the written paths, for a notebook to show.
    """
    data = load_study_data(preset, root)
    if export_records is None:
        export_records = len(data.runs) <= EXPORT_LIMIT
    dest = Path(out_dir) / "records"
    if export_records and (root is None or Path(root).resolve() != dest.resolve()):
        from ussafety.records.store import write_json_atomic

        for run in data.runs:
            if run.record is not None:
                write_json_atomic(dest / run.run_id / "record.json", run.record)
    return write_outputs_from(data, out_dir, n_boot=n_boot, figures=figures)


def write_outputs_from(data: StudyData, out_dir: Path, n_boot: int = 4000, figures: bool = True
                       ) -> dict[str, Any]:
    """:func:`write_outputs` for runs already loaded (any records, e.g. synthetic ones)."""
    out_dir = Path(out_dir)
    tables, figs = out_dir / "tables", out_dir / "figures"
    cond = condition_table(data, MAIN_GRIDS, n_boot=min(n_boot, 2000))
    every = condition_table(data, None, n_boot=min(n_boot, 2000))
    sig = significance_table(data, MAIN_GRIDS, n_boot=n_boot)
    abl = ablation_table(data, n_boot=min(n_boot, 2000))
    written = []
    written += write_table(cond, display_conditions(cond), tables / "conditions",
                           "ASR, over-refusal and task score: mean over seeds [95% CI]")
    written += write_table(sig, display_significance(sig), tables / "significance",
                           "Each method against SFT: difference [95% paired bootstrap CI], exact McNemar "
                           "and bootstrap p-values, Holm-corrected")
    if not abl.empty:
        shown = abl[["sweep", "x", "model", "task", "method", "n_seeds"]].copy()
        for metric, title in METRICS.items():
            shown[title] = with_ci(abl, metric)
        written += write_table(abl, shown, tables / "ablations", "Ablations: metrics [95% CI] per value")
    claims = scorecard(data, n_boot=n_boot)
    (out_dir / "scorecard.md").write_text(scorecard_markdown(claims, data), encoding="utf-8")
    written.append(out_dir / "scorecard.md")
    fig_paths: dict[str, list[Path]] = {}
    if figures:
        from ussafety.study import plots

        fig_paths = plots.all_figures(cond, every, abl, figs)
        written += [p for ps in fig_paths.values() for p in ps]
    return {"data": data, "conditions": cond, "all_conditions": every, "significance": sig,
            "ablations": abl, "claims": claims, "figures": fig_paths, "written": written}
