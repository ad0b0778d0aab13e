"""Params YAML files -> a validated :class:`RunConfig`, or one clear error.

A params file may name presets to start from (``extends: [../presets/cpu.yaml]``); its own
keys are deep-merged over them, then command-line overrides (``--set train.lr=1e-4``) over
that. Everything is validated in one pass before anything runs: the error names the file,
each offending key path and what is allowed, one line per problem.
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
    return deep_merge(merged, data)


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
