"""The study as data: per preset, four grids of runs that expand into RunConfigs.

``params/study/<preset>.yaml`` names the preset file generated runs start from and
lists, per grid (``benign``, ``poisoned``, ``ablations``, ``merging``), entries of
this form::

    - params: ../methods/poisoned_sst2/der.yaml   # a params file (default: the preset)
      set: {task: {poison_ratio: 0.2}}             # overrides, deep-merged over it
      vary: {seed: [0, 1, 2], method.name: [sft, ewc]}   # cartesian product of overrides
      name: "{method.name}_p{task.poison_ratio}_s{seed}" # run name, from resolved values
      sweep: poison_ratio                          # ablations: which curve it belongs to

An entry that only names a params file resolves exactly as ``ussafety run FILE``
does (same name, same hash, same run id), so a grid reuses every run finished from
the command line. An entry that changes its file (``set``/``vary``) must give a
``name`` template: ``{dotted.path}`` is replaced by the resolved value (the last
component of a value with ``/``, as for hub ids), other characters than letters,
digits and ``._+-`` become ``-``. ``overlay`` (study level) names a preset whose own
keys (not what it ``extends``) are merged over every entry: this is how ``cpu-full``
takes the method files written for ``cpu`` to its larger evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ussafety.config import ConfigError, RunConfig, deep_merge, from_dict, read_yaml
from ussafety.paths import PROJECT_ROOT

STUDY_DIR = PROJECT_ROOT / "params" / "study"
GRIDS = ("benign", "poisoned", "ablations", "merging")
ENTRY_KEYS = {"params", "set", "vary", "name", "sweep"}


@dataclass(frozen=True)
class Sweep:
    """One ablation curve: the config value on its x axis (``x``, a dotted path)."""

    name: str
    x: str
    label: str
    log: bool = False


@dataclass
class StudyRun:
    """One run of a grid: its config, the grid, its ablation curve and where it came from."""

    cfg: RunConfig
    grid: str
    sweep: str | None = None
    source: str | None = None

    @property
    def run_id(self) -> str:
        return self.cfg.run_id


@dataclass
class Study:
    """A preset's study file, read (not yet expanded)."""

    preset: str
    path: Path
    preset_file: Path
    description: str
    grids: dict[str, list[dict[str, Any]]]
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    overlay: dict[str, Any] = field(default_factory=dict)

    def grid_names(self) -> list[str]:
        return [g for g in GRIDS if g in self.grids] + [g for g in self.grids if g not in GRIDS]


def study_path(preset: str | Path) -> Path:
    """``params/study/<preset>.yaml``, or ``preset`` itself when it is a file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    path = STUDY_DIR / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))
        raise ConfigError(f"no study for preset '{preset}' ({path}); known: {', '.join(known)}")
    return path


def load_study(preset: str | Path | Study) -> Study:
    if isinstance(preset, Study):
        return preset
    path = study_path(preset)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"preset", "description", "grids", "sweeps", "overlay", "defs"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    if "preset" not in data:
        raise ConfigError(f"{path}: 'preset' (the params file generated runs extend) is required")
    sweeps = {}
    for name, spec in (data.get("sweeps") or {}).items():
        try:
            sweeps[name] = Sweep(name=name, **spec)
        except TypeError as err:
            raise ConfigError(f"{path}: sweeps.{name}: {err}") from err
    overlay: dict[str, Any] = {}
    if data.get("overlay"):
        own = yaml.safe_load((path.parent / data["overlay"]).read_text(encoding="utf-8")) or {}
        own.pop("extends", None)
        overlay = own
    grids = data.get("grids") or {}
    for grid, entries in grids.items():
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: grids.{grid} must be a list of entries")
        for i, entry in enumerate(entries):
            bad = set(entry) - ENTRY_KEYS
            if bad:
                raise ConfigError(f"{path}: grids.{grid}[{i}]: unknown key(s) {sorted(bad)} "
                                  f"(known: {', '.join(sorted(ENTRY_KEYS))})")
            if entry.get("sweep") and entry["sweep"] not in sweeps:
                raise ConfigError(f"{path}: grids.{grid}[{i}]: sweep '{entry['sweep']}' is not "
                                  f"defined under 'sweeps'")
    return Study(preset=path.stem, path=path, preset_file=(path.parent / data["preset"]).resolve(),
                 description=str(data.get("description", "")).strip(), grids=grids, sweeps=sweeps,
                 overlay=overlay)


def get_path(obj: Any, dotted: str) -> Any:
    """``get_path(cfg_dict, "method.params.lam")``; None where a key is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``nested("a.b", 1) == {"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text


def render_name(template: str, cfg: dict[str, Any]) -> str:
    """Fill ``{dotted.path}`` fields from the resolved config; a safe folder name."""
    def field_value(m: re.Match) -> str:
        value = get_path(cfg, m.group(1))
        if value is None and m.group(1).split(".")[0] not in cfg:
            raise ConfigError(f"name template '{template}': unknown field '{m.group(1)}'")
        return _fmt(value)

    name = re.sub(r"\{([A-Za-z0-9_.]+)\}", field_value, template)
    return re.sub(r"[^A-Za-z0-9._+-]", "-", name)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _load_config(path: Path, data: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """``load_config(path, overrides)`` with the file already read (``data``)."""
    data = deep_merge(data, overrides) if overrides else copy.deepcopy(data)
    data.setdefault("name", path.stem)
    try:
        return from_dict(data, where=str(path))
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from err


def expand_entry(study: Study, grid: str, entry: dict[str, Any]) -> list[StudyRun]:
    """The runs one grid entry stands for."""
    params = (study.path.parent / entry["params"]).resolve() if entry.get("params") else study.preset_file
    if not params.is_file():
        raise ConfigError(f"{study.path}: grids.{grid}: params file {params} does not exist")
    changes = bool(entry.get("set") or entry.get("vary"))
    if changes and not entry.get("name"):
        raise ConfigError(f"{study.path}: grids.{grid}: an entry with 'set' or 'vary' needs a "
                          f"'name' template (it no longer is {params.name} as written)")
    if not entry.get("params") and not entry.get("name"):
        raise ConfigError(f"{study.path}: grids.{grid}: an entry without 'params' needs a 'name'")
    vary = entry.get("vary") or {}
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{study.path}: grids.{grid}: vary.{key} must be a non-empty list")
    runs = []
    base = read_yaml(params)  # once per entry: what load_config(params, overrides) starts from
    for combo in itertools.product(*vary.values()) if vary else [()]:
        overrides = deep_merge(study.overlay, entry.get("set") or {})
        for key, value in zip(vary, combo):
            overrides = deep_merge(overrides, nested(key, value))
        cfg = _load_config(params, base, overrides)
        if entry.get("name"):
            cfg = dataclasses.replace(cfg, name=render_name(entry["name"], cfg.to_dict()))
        runs.append(StudyRun(cfg=cfg, grid=grid, sweep=entry.get("sweep"), source=_rel(params)))
    return runs


def expand(preset: str | Path | Study, grids: str | Iterable[str] | None = None) -> list[StudyRun]:
    """Every run of the named grid(s) (default: all, in study order), each run once per grid."""
    study = load_study(preset)
    names = study.grid_names() if grids is None else [grids] if isinstance(grids, str) else list(grids)
    out: list[StudyRun] = []
    for grid in names:
        if grid not in study.grids:
            raise ConfigError(f"{study.path}: no grid '{grid}' (has: {', '.join(study.grid_names())})")
        seen: dict[str, StudyRun] = {}
        for entry in study.grids[grid]:
            for run in expand_entry(study, grid, entry):
                if run.run_id in seen:
                    prev = seen[run.run_id]
                    if run.sweep and prev.sweep and run.sweep != prev.sweep:
                        out.append(run)  # the same run on a second ablation curve
                    continue
                seen[run.run_id] = run
                out.append(run)
    return out


def unique_runs(runs: Iterable[StudyRun]) -> list[StudyRun]:
    """The runs once each (by run id), in first-seen order."""
    seen: dict[str, StudyRun] = {}
    for run in runs:
        seen.setdefault(run.run_id, run)
    return list(seen.values())


def default_preset() -> str:
    """``paper`` when CUDA is present (a Colab GPU), else ``cpu``."""
    try:
        import torch  # noqa: PLC0415

        return "paper" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class GridError(RuntimeError):
    """Some runs of a grid failed; the others finished and were recorded."""


def run_grid(preset: str | Path | Study, grid: str | Iterable[str], root: Path | None = None,
             out: Any = None) -> list[dict[str, Any]]:
    """Run every run of ``grid`` that has no record yet; return the records in grid order.

    Prints one line per run (finished ones say so). A failing run does not stop the
    others; the failures are raised together at the end (:class:`GridError`).
    """
    from ussafety.pipeline import run  # noqa: PLC0415 (imports torch)
    from ussafety.records.store import load_record  # noqa: PLC0415

    out = out or sys.stdout
    runs = unique_runs(expand(preset, grid))
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    t_grid = time.perf_counter()
    for i, r in enumerate(runs, 1):
        existing = load_record(r.run_id, root)
        if existing is not None:
            print(f"[{i}/{len(runs)}] {r.run_id}: finished, skipped", file=out, flush=True)
            records.append(existing)
            continue
        print(f"[{i}/{len(runs)}] {r.run_id}: running ({r.source})", file=out, flush=True)
        t0 = time.perf_counter()
        try:
            records.append(run(r.cfg, root=root))
        except Exception as err:  # noqa: BLE001 (the grid goes on; failures are raised below)
            failures.append(f"{r.run_id}: {type(err).__name__}: {err}")
            print(f"[{i}/{len(runs)}] {r.run_id}: FAILED: {err}", file=out, flush=True)
            continue
        print(f"[{i}/{len(runs)}] {r.run_id}: done in {time.perf_counter() - t0:.0f} s", file=out, flush=True)
    print(f"grid {grid}: {len(records)}/{len(runs)} runs recorded in "
          f"{time.perf_counter() - t_grid:.0f} s", file=out, flush=True)
    if failures:
        raise GridError(f"{len(failures)} run(s) of grid {grid} failed:\n" + "\n".join(failures))
    return records


# ----------------------------------------------------------------------------- cost estimate

def _records_by_model(root: Path | None) -> list[dict[str, Any]]:
    from ussafety.records.store import iter_records  # noqa: PLC0415

    return [r for r in iter_records(root) if r.get("timings") and r.get("config")]


def _eval_counts(cfg: dict[str, Any]) -> dict[str, int]:
    ev = cfg["eval"]
    task = ev.get("task") or cfg["task"]["name"]
    return {"harmful": ev["n_per_harmful_set"] * len(ev["harmful_sets"]), "xstest": ev["n_xstest"],
            "task": ev["n_task"] if task else 0}


def _rate_keys(cfg: dict[str, Any]) -> dict[str, tuple]:
    """What makes per-item timings comparable between two runs."""
    ev, tr = cfg["eval"], cfg["train"]
    task = ev.get("task") or cfg["task"]["name"]
    gen = (cfg["model"]["name"], cfg["model"].get("dtype"), ev["max_new_tokens"], ev["batch_size"])
    return {"harmful": gen, "xstest": gen,
            "task": gen + (task, ev.get("task_max_new_tokens")),
            "train": (cfg["model"]["name"], cfg["model"].get("dtype"), cfg["task"]["name"],
                      tr["batch_size"], tr["max_length"], json.dumps(tr["lora"], sort_keys=True),
                      cfg["method"]["name"])}


def _median(values: list[float]) -> float:
    values = sorted(values)
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def timing_rates(records: Iterable[dict[str, Any]]) -> dict[tuple, float]:
    """Median seconds per item from finished records: per harmful prompt, XSTest prompt,
    task item (keyed by model and generation settings) and per training row-epoch (keyed by
    model, task, batch, length, LoRA and method). Runs that reused a cached training are
    left out of the training rates."""
    samples: dict[tuple, list[float]] = {}
    for rec in records:
        cfg, t = rec["config"], rec["timings"]
        keys, counts = _rate_keys(cfg), _eval_counts(cfg)
        for part, secs in (("harmful", "harmful_s"), ("xstest", "xstest_s"), ("task", "task_s")):
            if t.get(secs) is not None and counts[part]:
                samples.setdefault((part,) + keys[part], []).append(t[secs] / counts[part])
        train = rec.get("train") or {}
        if train.get("wall_s") and not train.get("reused_from") and cfg["task"]["name"]:
            row_epochs = max(1, train.get("rows") or cfg["task"]["n_train"]) * cfg["train"]["epochs"]
            samples.setdefault(("train",) + keys["train"], []).append(train["wall_s"] / row_epochs)
    return {k: _median(v) for k, v in samples.items()}


def _trains_like_sft(cfg: RunConfig) -> bool:
    """Whether the run trains exactly as plain SFT (only a finalize step differs), so the
    trainer reuses a cached SFT training (``ussafety.methods.base.trains_like_sft``)."""
    from ussafety.methods import make_method  # noqa: PLC0415
    from ussafety.methods import base  # noqa: PLC0415

    def trains_like_sft(method: Any) -> bool:
        if hasattr(base, "trains_like_sft"):
            return base.trains_like_sft(method)
        return False  # a trainer without the SFT-training cache trains every run

    hooks = [make_method(cfg.method.name, cfg.method.params)]
    if cfg.merge.name:
        hooks.append(make_method(cfg.merge.name, cfg.merge.params))
    return all(trains_like_sft(h) for h in hooks)


def _sft_training_key(cfg: RunConfig) -> str:
    """``ussafety.pipeline.sft_training_key``: the cache key of a plain SFT training."""
    from ussafety import config as c  # noqa: PLC0415

    d = c.hashable_dict(cfg) if hasattr(c, "hashable_dict") else cfg.to_dict()
    return c.config_hash({k: d[k] for k in ("seed", "model", "align", "task", "train")})[:16]


def estimate_cost(runs: list[StudyRun], root: Path | None = None,
                  records: list[dict[str, Any]] | None = None):  # noqa: ANN201 (DataFrame)
    """Seconds each run of ``runs`` still needs, estimated from finished records' timings.

    Per run: 0 when its record exists (``recorded_s`` is what it took); otherwise
    alignment (when its aligned base is not cached, once per base, from the base's
    recorded build time), training (rows x epochs x the median seconds per row-epoch of
    finished runs of the same model, task, batch, length, LoRA and method; 0 for
    merge-style methods whose plain training is cached or trained earlier in the list)
    and evaluation (prompts x the median seconds per prompt of finished runs with the
    same model and generation settings). ``basis`` says where a number came from; a
    part with no comparable record is NaN (say, a GPU preset before its first run).
    """
    import pandas as pd  # noqa: PLC0415

    from ussafety.train.align import aligned_dir  # noqa: PLC0415
    from ussafety.paths import cache_dir  # noqa: PLC0415
    from ussafety.records.store import load_record  # noqa: PLC0415

    records = _records_by_model(root) if records is None else records
    rates = timing_rates(records)
    align_s: dict[str, float] = {}
    for rec in records:
        al = rec.get("alignment") or {}
        if al.get("aligned") and al.get("train_wall_s") and al.get("key"):
            align_s.setdefault(al["key"], float(al["train_wall_s"]))
    planned_align: set[str] = set()
    planned_train: set[str] = set()
    rows = []
    for r in unique_runs(runs):
        cfg = r.cfg
        d = cfg.to_dict()
        row: dict[str, Any] = {"run_id": r.run_id, "grid": r.grid, "method": cfg.method.name,
                               "merge": cfg.merge.name, "seed": cfg.seed}
        rec = load_record(r.run_id, root)
        if rec is not None:
            row.update(status="finished", recorded_s=(rec.get("timings") or {}).get("total_s", math.nan),
                       align_s=0.0, train_s=0.0, eval_s=0.0, est_s=0.0, basis="record")
            rows.append(row)
            continue
        basis = []
        a_s = 0.0
        if cfg.align.enabled:
            from ussafety.train.align import align_key  # noqa: PLC0415

            key = align_key(cfg.model, cfg.align)
            cached = (aligned_dir(cfg.model, cfg.align) / "alignment.json").is_file()
            if not cached and key not in planned_align:
                a_s = align_s.get(key, math.nan)
                basis.append("align: " + ("recorded build" if key in align_s else "no record"))
            planned_align.add(key)
        t_s = 0.0
        if cfg.task.name or cfg.task.upload:
            sft_like = _trains_like_sft(cfg)
            tkey = _sft_training_key(cfg)
            cached = (cache_dir() / "trained" / tkey / "train.json").is_file()
            if sft_like and (cached or tkey in planned_train):
                basis.append("train: reuses plain training")
            else:
                key = ("train",) + _rate_keys(d)["train"]
                sft_key = key[:-1] + ("sft",)
                rate = rates.get(key)
                if rate is None and sft_like:
                    rate = rates.get(sft_key, math.nan)
                    basis.append("train: sft rate" if rate == rate else "train: no record")
                elif rate is None:
                    rate = rates.get(sft_key, math.nan)
                    basis.append("train: sft rate (no record of this method here)" if rate == rate
                                 else "train: no record")
                else:
                    basis.append("train: method rate")
                t_s = rate * cfg.task.n_train * cfg.train.epochs
            if sft_like:
                planned_train.add(tkey)
        keys, counts = _rate_keys(d), _eval_counts(d)
        e_s = 0.0
        for part in ("harmful", "xstest", "task"):
            if counts[part]:
                e_s += rates.get((part,) + keys[part], math.nan) * counts[part]
        basis.append("eval: per-prompt rate" if e_s == e_s else "eval: no record")
        row.update(status="to run", recorded_s=math.nan, align_s=a_s, train_s=t_s, eval_s=e_s,
                   est_s=a_s + t_s + e_s, basis="; ".join(basis))
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "grid", "method", "merge", "seed", "status",
                                       "recorded_s", "align_s", "train_s", "eval_s", "est_s", "basis"])


def cost_summary(df) -> dict[str, Any]:  # noqa: ANN001
    """Totals of :func:`estimate_cost`: runs finished / to run and the estimated minutes."""
    todo = df[df.status == "to run"]
    unknown = int(todo.est_s.isna().sum())
    out = {"runs": int(len(df)), "finished": int((df.status == "finished").sum()),
           "to_run": int(len(todo)), "unknown_cost": unknown,
           "est_minutes": round(float(todo.est_s.sum(skipna=True)) / 60, 1),
           "recorded_minutes": round(float(df.recorded_s.sum(skipna=True)) / 60, 1)}
    if unknown:
        out["note"] = (f"{unknown} run(s) to run have no comparable finished record (model and "
                       "settings): est_minutes leaves them out")
    return out
