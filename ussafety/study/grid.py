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
import itertools
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ussafety.config import ConfigError, RunConfig, deep_merge, from_dict, read_yaml, run_id
from ussafety.paths import PROJECT_ROOT
from ussafety.records import Record, load_record

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
        return run_id(self.cfg)


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
                raise ConfigError(
                    f"{path}: grids.{grid}[{i}]: unknown key(s) {sorted(bad)} (known: {', '.join(sorted(ENTRY_KEYS))})"
                )
            if entry.get("sweep") and entry["sweep"] not in sweeps:
                raise ConfigError(f"{path}: grids.{grid}[{i}]: sweep '{entry['sweep']}' is not defined under 'sweeps'")
    return Study(
        preset=path.stem,
        path=path,
        preset_file=(path.parent / data["preset"]).resolve(),
        description=str(data.get("description", "")).strip(),
        grids=grids,
        sweeps=sweeps,
        overlay=overlay,
    )


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


def as_written(cfg: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as a study file spells it: a merge after plain SFT (stored as
    ``method: sft`` + ``merge: slerp``) reads as ``method: slerp`` with the merge's params, so
    name templates and sweep axes such as ``{method.name}`` / ``method.params.t`` mean what
    the study file meant."""
    merge = cfg.get("merge") or {}
    if (cfg.get("method") or {}).get("name") == "sft" and merge.get("name"):
        return {**cfg, "method": {**cfg["method"], "name": merge["name"], "params": merge["params"]}}
    return cfg


def render_name(template: str, cfg: dict[str, Any]) -> str:
    """Fill ``{dotted.path}`` fields from the resolved config (as written, see
    :func:`as_written`); a safe folder name."""
    cfg = as_written(cfg)

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
    return from_dict(data, where=str(path))


def expand_entry(study: Study, grid: str, entry: dict[str, Any]) -> list[StudyRun]:
    """The runs one grid entry stands for."""
    params = (study.path.parent / entry["params"]).resolve() if entry.get("params") else study.preset_file
    if not params.is_file():
        raise ConfigError(f"{study.path}: grids.{grid}: params file {params} does not exist")
    changes = bool(entry.get("set") or entry.get("vary"))
    if changes and not entry.get("name"):
        raise ConfigError(
            f"{study.path}: grids.{grid}: an entry with 'set' or 'vary' needs a "
            f"'name' template (it no longer is {params.name} as written)"
        )
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
            cfg = cfg.model_copy(update={"name": render_name(entry["name"], cfg.to_dict())})
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
        import torch

        return "paper" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class GridError(RuntimeError):
    """Some runs of a grid failed; the others finished and were recorded."""


def run_grid(
    preset: str | Path | Study, grid: str | Iterable[str], root: Path | None = None, out: Any = None
) -> list[Record]:
    """Run every run of ``grid`` that has no record yet; return the records in grid order.

    Prints one line per run (finished ones say so). A failing run does not stop the
    others; the failures are raised together at the end (:class:`GridError`).
    """
    from ussafety.pipeline import run

    out = out or sys.stdout
    runs = unique_runs(expand(preset, grid))
    records: list[Record] = []
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
        except Exception as err:
            failures.append(f"{r.run_id}: {type(err).__name__}: {err}")
            print(f"[{i}/{len(runs)}] {r.run_id}: FAILED: {err}", file=out, flush=True)
            continue
        print(f"[{i}/{len(runs)}] {r.run_id}: done in {time.perf_counter() - t0:.0f} s", file=out, flush=True)
    print(
        f"grid {grid}: {len(records)}/{len(runs)} runs recorded in {time.perf_counter() - t_grid:.0f} s",
        file=out,
        flush=True,
    )
    if failures:
        raise GridError(f"{len(failures)} run(s) of grid {grid} failed:\n" + "\n".join(failures))
    return records
