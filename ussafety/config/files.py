"""Params YAML files -> a validated :class:`RunConfig`, or one clear error.

A params file may name presets to start from (``extends: [../presets/cpu.yaml]``); its own
keys are deep-merged over them, then command-line overrides (``--set train.lr=1e-4``) over
that. Everything is validated in one pass before anything runs: the error names the file,
each offending key path and what is allowed, one line per problem.

A relative file path in a params file (``task.upload``, ``eval.harmful_file``, a judge's
folder, a local ``model.name``) is relative to that file, like ``extends``, so a params
file means the same from any working folder; one given with ``--set`` is relative to the
working folder, as on any command line (:func:`resolve_paths`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ussafety.config.schema import RunConfig


class ConfigError(ValueError):
    """A params file or override that cannot make a valid run; names file and key path."""


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key (``params`` dicts too)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


PATH_KEYS = (("task", "upload"), ("eval", "harmful_file"))
"""Config fields that always name a file."""
MODEL_NAMES = ("embedded", "tiny-random")
"""``model.name`` values that are not paths (the others are a hub id or a local folder)."""


def _beside(base: Path, value: str) -> str:
    return value if Path(value).expanduser().is_absolute() else str(base / value)


def _judge_beside(base: Path, spec: Any) -> Any:
    """``llama_guard=<folder>`` with the folder made relative to ``base``; other specs as given."""
    if not isinstance(spec, str) or "=" not in spec:
        return spec
    name, _, arg = spec.partition("=")
    return f"{name}={_beside(base, arg.strip())}" if arg.strip() else spec


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` (one params file's own keys) with its relative file paths made relative to
    the folder ``base`` of that file: the fields of :data:`PATH_KEYS`, the folder of an LLM
    judge (``llama_guard=<folder>``), and ``model.name`` when it names a folder there
    (otherwise it is a hub id, or a folder relative to the working folder, as before)."""
    out = copy.deepcopy(data)
    for section, key in PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = _beside(base, node[key])
    ev = out.get("eval")
    if isinstance(ev, dict) and isinstance(ev.get("judges"), list):
        ev["judges"] = [_judge_beside(base, spec) for spec in ev["judges"]]
    model = out.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if isinstance(model, dict) and isinstance(name, str) and name not in MODEL_NAMES:
        local = _beside(base, name)
        model["name"] = local if Path(local).exists() else name
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a params YAML and resolve its ``extends`` chain (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'extends'")
    if not path.is_file():
        where = f" (extended from {_seen[-1]})" if _seen else ""
        raise ConfigError(f"{path}: no such params file{where}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    parents = data.pop("extends", []) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, read_yaml(path.parent / parent, (*_seen, path)))
    return deep_merge(merged, resolve_paths(data, path.parent))


def parse_override(text: str) -> dict[str, Any]:
    """``train.lr=1e-4`` -> ``{"train": {"lr": "1e-4"}}``: the value is read as YAML and then
    converted to the field's type by the schema (so ``1e-4``, which YAML reads as a string,
    still becomes a float)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, value = text.split("=", 1)
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}': empty key in '{key}'")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return out


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` (a pydantic error location) in :class:`RunConfig`."""
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if model is None or part not in model.model_fields:
            return []
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return sorted(model.model_fields) if model else []


def describe_errors(err: PydanticValidationError) -> list[str]:
    """One line per problem: ``key.path: what is wrong (what is allowed)``."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (known: {', '.join(_known_keys(loc[:-1]))})"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        lines.append(f"{path}: {msg}")
    return lines


def from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    """Validate a resolved mapping; every problem in one :class:`ConfigError`."""
    try:
        return RunConfig.model_validate(data)
    except PydanticValidationError as err:
        problems = describe_errors(err)
        raise ConfigError(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load ``params/<name>.yaml`` (with presets) and apply ``overrides`` on top."""
    data = read_yaml(path)
    if overrides:
        data = deep_merge(data, overrides)
    data.setdefault("name", Path(path).stem)
    return from_dict(data, where=str(path))
