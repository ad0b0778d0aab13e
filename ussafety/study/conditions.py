"""Runs and conditions: which run records are replicates of one computation.

A *condition* is one canonical config (:func:`ussafety.config.identity.canonical`) up to its
seed, with the stamps of the code that computed it: its runs with different seeds are
replicates, and everything the analysis compares (a method against SFT, fine-tuning against
the base) is matched on these keys, never on run names. Every number comes from the
per-item outcomes stored in the records (1 = attack succeeded / safe prompt refused / task
item correct), read as :class:`ussafety.records.Record` objects.

Only the runs of a preset's study (``params/study/<preset>.yaml``) are read by
:func:`load_study_data`, so older runs in the same folder (alignment attempts, ad-hoc
sweeps) never mix into a condition.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ussafety.config import canonical, config_hash
from ussafety.methods import REGISTRY, family_of, load_all
from ussafety.methods.base import param_fields
from ussafety.records import Record, load_record

METRICS = {"asr": "ASR", "over_refusal": "over-refusal", "task_score": "task score"}
LOWER_IS_BETTER = {"asr": True, "over_refusal": True, "task_score": False}
MAIN_GRIDS = ("benign", "poisoned", "merging")
"""The grids of the main tables; the ablation grid has its own table (one curve per sweep)."""

Outcomes = dict[tuple[str, int], float]


def item_outcomes(record: Record) -> dict[str, Outcomes]:
    """``{metric: {(source, row): 0/1}}`` of one record: ASR under the record's primary judge,
    over-refusal under the judge its over-refusal rate used, task items as scored."""
    m = record.metrics
    refusal_judge = (m.over_refusal.judge if m.over_refusal is not None else None) or m.primary_judge
    out: dict[str, Outcomes] = {
        "asr": {k: float(v) for k, v in record.outcomes(m.primary_judge).items()},
        "over_refusal": {},
        "task_score": {},
    }
    for g in record.generations:
        if g.kind == "xstest_safe":
            out["over_refusal"][(g.source, g.row)] = float(g.verdicts[refusal_judge].refused is True)
        elif g.kind.startswith("task:"):
            out["task_score"][(g.source, g.row)] = float(bool(g.correct))
    return out


# ----------------------------------------------------------------------------- keys


def measured_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical config, with the scored task written out (``eval.task: null`` scores the
    fine-tuning task, so a base model scored on SST-2 and an SST-2 fine-tune measure the same).

    ``backend``/``dtype: auto`` resolve as on a CPU machine: the analysis groups records, it
    does not run them, and must group them alike on any machine.
    """
    c = canonical(dict(config), cuda=False)
    if "task" in c:
        c["eval"]["task"] = c["eval"].get("task") or c["task"]["name"]
    return c


def _hash(obj: Any) -> str:
    return config_hash(obj)[:16]


def _stamps(stamps: Mapping[str, int] | None, keep: Callable[[str], bool] = bool) -> dict[str, int]:
    """The stamps (code behaviour versions) whose names ``keep`` accepts; none when unknown."""
    return {k: v for k, v in (stamps or {}).items() if keep(k)}


def condition_key(config: Mapping[str, Any], stamps: Mapping[str, int] | None = None) -> str:
    """Everything but the seed, and the code stamps: runs with equal keys are replicates."""
    c = measured_config(config)
    c.pop("seed", None)
    return _hash({"config": c, "stamps": _stamps(stamps)})


def setting_key(config: Mapping[str, Any], stamps: Mapping[str, int] | None = None, **task_changes: Any) -> str:
    """What a method is compared within: everything but seed, method and merge (and the
    stamps of the method and the merge). ``task_changes`` (e.g. ``poison_ratio=0.0``) name
    another setting: they are applied before the config is made canonical."""
    if task_changes and config.get("task"):
        config = {**config, "task": {**config["task"], **task_changes}}
    c = measured_config(config)
    for key in ("seed", "method", "merge"):
        c.pop(key, None)
    keep = _stamps(stamps, lambda k: not k.startswith(("method:", "merge:")))
    return _hash({"config": c, "stamps": keep})


def base_key(config: Mapping[str, Any], stamps: Mapping[str, int] | None = None) -> str:
    """The starting model and what is measured: model, alignment, evaluation."""
    c = measured_config(config)
    keep = _stamps(stamps, lambda k: k in ("data", "alignment", "evaluation"))
    return _hash({**{k: c[k] for k in ("model", "align", "eval")}, "stamps": keep})


# ----------------------------------------------------------------------------- labels


def non_default_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of method ``name`` that differ from its defaults: configs store every
    default, the tables show what a condition changed."""
    load_all()
    cls = REGISTRY.get(name)
    if cls is None:
        return dict(params)
    defaults: dict[str, Any] = {}
    for f in param_fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif callable(f.default_factory):
            defaults[f.name] = f.default_factory()
    return {k: v for k, v in params.items() if k not in defaults or defaults[k] != v}


def _short(name: str | None) -> str:
    return str(name).rstrip("/").rsplit("/", 1)[-1] if name else "none"


def labels(config: Mapping[str, Any]) -> dict[str, Any]:
    """Human-readable columns of a condition: model, task, scenario, method, family, params.

    A merge applied after plain SFT is named by the merge (``slerp``), after another method
    by both (``der+slerp``); its family is the merge's (:func:`ussafety.methods.family_of`).
    """
    c = measured_config(config)
    if "task" not in c:
        return {
            "model": _short(c["model"]["name"]),
            "task": c["eval"]["task"],
            "scenario": "base",
            "poison_ratio": float("nan"),
            "method": "aligned" if c["align"]["enabled"] else "as shipped",
            "family": "base",
            "params": "",
            "n_train": 0,
        }
    p = float(c["task"]["poison_ratio"])
    method, merge = c["method"]["name"], c["merge"]["name"]
    params = non_default_params(method, c["method"]["params"])
    if merge:
        extra = non_default_params(merge, c["merge"]["params"])
        params.update(extra if method == "sft" else {f"{merge}.{k}": v for k, v in extra.items()})
    return {
        "model": _short(c["model"]["name"]),
        "task": c["eval"]["task"],
        "scenario": "poisoned" if p > 0 else "benign",
        "poison_ratio": p,
        "method": (merge if method == "sft" else f"{method}+{merge}") if merge else method,
        "family": family_of(merge or method),
        "params": json.dumps(params, sort_keys=True) if params else "",
        "n_train": int(c["task"].get("n_train") or 0),
    }


# ----------------------------------------------------------------------------- runs, conditions


@dataclass
class Run:
    """One finished run: its record and the grids/sweeps of the study it belongs to."""

    record: Record = field(repr=False)
    grids: set[str] = field(default_factory=set)
    sweeps: set[str] = field(default_factory=set)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def config(self) -> dict[str, Any]:
        return self.record.config

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def git_commit(self) -> str | None:
        return self.record.git.commit

    @cached_property
    def outcomes(self) -> dict[str, Outcomes]:
        return item_outcomes(self.record)


@dataclass
class Condition:
    """A config up to its seed, with one run per seed."""

    key: str
    config: dict[str, Any]
    runs: dict[int, Run]

    @cached_property
    def labels(self) -> dict[str, Any]:
        return labels(self.config)

    @property
    def stamps(self) -> dict[str, int]:
        return next(iter(self.runs.values())).record.stamps

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    @property
    def run_ids(self) -> list[str]:
        return [self.runs[s].run_id for s in self.seeds]

    @property
    def grids(self) -> set[str]:
        return set().union(*(r.grids for r in self.runs.values()))

    @property
    def is_sft(self) -> bool:
        return self.labels["method"] == "sft" and self.labels["scenario"] != "base"

    def per_seed(self, metric: str) -> dict[int, Outcomes]:
        """``{seed: {(source, row): 0/1}}`` of the seeds that measured ``metric``."""
        return {s: r.outcomes[metric] for s, r in self.runs.items() if r.outcomes[metric]}


def group_conditions(runs: Iterable[Run]) -> list[Condition]:
    """Runs grouped by :func:`condition_key`, in first-seen order; the first run of a seed
    wins (the same record passed twice counts once)."""
    out: dict[str, Condition] = {}
    for run in runs:
        key = condition_key(run.config, run.record.stamps)
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
    def from_records(
        cls,
        records: Iterable[Record],
        tags: Mapping[str, tuple[Iterable[str], Iterable[str]]] | None = None,
        sweeps: dict[str, Any] | None = None,
        preset: str = "",
    ) -> StudyData:
        """``tags``: ``{run_id: (grids, sweeps)}``; untagged runs are in every main grid."""
        runs = []
        for rec in records:
            grids, sw = (tags or {}).get(rec.run_id, (MAIN_GRIDS, ()))
            runs.append(Run(rec, set(grids), {s for s in sw if s}))
        return cls(runs=runs, sweeps=sweeps or {}, preset=preset)

    def conditions(self, grids: Iterable[str] | None = None) -> list[Condition]:
        wanted = set(grids) if grids is not None else None
        return group_conditions(r for r in self.runs if wanted is None or r.grids & wanted)

    def sweep_runs(self, sweep: str) -> list[Run]:
        return [r for r in self.runs if sweep in r.sweeps]


def load_study_data(preset: Any, root: Path | None = None, grids: Iterable[str] | None = None) -> StudyData:
    """The records of every run of ``preset``'s study that has finished (under ``root``);
    the run ids without a record are listed in ``missing`` (nothing is run here)."""
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
        if record is None:
            missing.append(sr.run_id)
            continue
        runs[sr.run_id] = Run(record, {sr.grid}, {sr.sweep} if sr.sweep else set())
    return StudyData(runs=list(runs.values()), missing=missing, sweeps=study.sweeps, preset=study.preset)


def sweep_x(config: Mapping[str, Any], x: str) -> Any:
    """The value of ``x`` (a dotted path, as the study file names it) in a config, read from
    the config as the study file spells it (:func:`ussafety.study.grid.as_written`: the
    ``method.params.t`` of a merge after SFT is its ``merge.params.t``)."""
    from ussafety.study.grid import as_written, get_path

    return get_path(as_written(dict(config)), x)
