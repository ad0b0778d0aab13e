"""Run identity = what the run computes.

The id of a run is the hash of its *canonical* config plus the behaviour versions
(*stamps*) of the code that computes it:

* canonical: every default filled in (pydantic does that, method parameters included),
  aliases resolved (``method: slerp`` is stored as SFT + merge, see the schema;
  ``backend``/``dtype: auto`` as what this machine runs), sections that cannot act left
  out (no alignment stage -> no align settings; no fine-tuning -> no task, train, method
  or merge; no upload -> no upload settings; an evaluation on a committed split -> no
  sampling settings), an upload named by the sha256 of its content rather than its path,
  and the fields in :data:`EXCLUDED`, which cannot change the outcome, dropped;
* stamps: :data:`STAMPS` per stage and each method's ``version``. A developer bumps one when
  that code's behaviour changes: its runs get new ids, and ``ussafety runs check`` lists
  the records made under the old stamp.

So two spellings of one computation share one id, a changed default or a bumped stamp gives
a new one (a new field does too: ``ussafety runs migrate`` then re-keys the records whose
stamps still match, see :mod:`ussafety.records.migrate`), and cached stages (the aligned
base, an SFT training reused by merges) are keyed the same way by :func:`align_key` and
:func:`training_key`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time imported where needed: the schema's validators import this package
    from ussafety.config.schema import RunConfig

STAMPS: dict[str, int] = {"data": 1, "alignment": 1, "training": 1, "evaluation": 1}
"""Behaviour versions of the stages (data building, alignment, training loop, evaluation)."""

EXCLUDED: dict[str, str] = {
    "name": "a label for people; the same computation under two names is one run",
    "eval.batch_size": "greedy outputs do not depend on the batch: tests/test_generate.py checks "
    "batched decoding against one prompt at a time",
    "train.report_to": "logging only",
    "align.train.report_to": "logging only",
}
"""Dotted config paths left out of the id, each with the reason it cannot change the outcome."""


def config_hash(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), so dict order never changes a hash."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cuda() -> bool:
    """Whether torch sees a CUDA (or ROCm) GPU here: ``backend``/``dtype: auto`` resolve by it.

    A CPU-only build of torch sees none, and says so in its ``version.py``; that file is read
    as text, so ``--dry-run`` and the validation before a run do not import torch (~1.5 s)
    where torch could not answer anything else. A GPU build is asked."""
    if "torch" not in sys.modules and not _torch_gpu_build():
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _torch_gpu_build() -> bool:
    """Whether the installed torch is a CUDA or ROCm build (``torch.version.cuda`` or ``.hip``
    set), from its ``version.py`` without importing torch; False when torch is not installed,
    True when the file does not say plainly (then torch itself is asked)."""
    spec = importlib.util.find_spec("torch")  # a top-level package: found, not imported
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        tree = ast.parse((Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text())
    except (OSError, SyntaxError, StopIteration):
        return True
    found: dict[str, Any] = {}
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("cuda", "hip"):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    return True
    return set(found) != {"cuda", "hip"} or any(v is not None for v in found.values())


def resolved_model(model: dict[str, Any], cuda: bool | None = None, method: str | None = None) -> dict[str, Any]:
    """``backend``/``dtype: auto`` replaced by what they mean on this machine for this method
    (the loader's own rule, :func:`ussafety.models.backend.choose_backend`: EWC/MAS need
    base-weight gradients, so they run under PEFT even where Unsloth is installed)."""
    from ussafety.models.backend import choose_backend, method_needs_base_weight_grads

    cuda = _cuda() if cuda is None else cuda
    out = dict(model)
    if out.get("backend") == "auto":
        out["backend"] = choose_backend(
            "auto",
            cuda=cuda,
            unsloth_importable=_unsloth_installed(),
            needs_base_weight_grads=method_needs_base_weight_grads(method),
        )
    if out.get("dtype") == "auto":
        out["dtype"] = "bfloat16" if cuda else "float32"
    return out


def _unsloth_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("unsloth") is not None


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _drop(d: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.get(p) or {}
    d.pop(last, None)


def canonical(cfg: RunConfig | dict[str, Any], cuda: bool | None = None) -> dict[str, Any]:
    """The config as the computation sees it (see the module docstring)."""
    if isinstance(cfg, dict):  # e.g. a record's config: today's schema fills fields added since
        from ussafety.config.schema import RunConfig

        cfg = RunConfig.model_validate(cfg)
    d = cfg.to_dict()
    for path in EXCLUDED:
        _drop(d, path)
    trains = d["task"]["name"] or d["task"]["upload"]
    d["model"] = resolved_model(d["model"], cuda, d["method"]["name"] if trains else None)
    trained_task = d["task"]["name"] if d["task"]["upload"] is None else None
    d["eval"]["task"] = d["eval"]["task"] or trained_task  # unset means: score the trained task
    if not d["align"]["enabled"]:
        d["align"] = {"enabled": False}
    if not (d["task"]["name"] or d["task"]["upload"]):
        for key in ("task", "train", "method", "merge"):
            d.pop(key)
    elif d["task"]["upload"]:
        d["task"]["upload"] = {"sha256": file_sha256(d["task"]["upload"])}
    else:
        del d["task"]["upload"], d["task"]["control_tokens"]
    if d["eval"]["harmful_file"] is not None:  # the user's prompts, by content
        d["eval"]["harmful_file"] = {"sha256": file_sha256(d["eval"]["harmful_file"])}
        for key in ("harmful_sets", "n_per_harmful_set"):
            d["eval"].pop(key)
    else:
        del d["eval"]["harmful_file"], d["eval"]["prompt_column"]
    if d["eval"]["split"] != "sample":
        for key in ("harmful_sets", "n_per_harmful_set", "n_xstest", "n_task", "seed"):
            d["eval"].pop(key, None)
        # a new version of a committed split is a new computation under the same ``split``
        from ussafety.data import splits  # numpy and scipy (0.3 s): only for a committed split

        task = d["eval"]["task"] or (d.get("task") or {}).get("name")
        names = splits.eval_splits(d["eval"]["split"], task)
        if "harmful_file" in d["eval"]:
            names = [n for n in names if n != splits.HARMFUL]
        d["eval"]["splits"] = {name: splits.split_sha256(name) for name in names}
    return d


def stamps(cfg: RunConfig) -> dict[str, int]:
    """The behaviour versions of the code this run goes through."""
    from ussafety.methods import method_class

    out = {"data": STAMPS["data"], "evaluation": STAMPS["evaluation"]}
    if cfg.align.enabled:
        out["alignment"] = STAMPS["alignment"]
    if cfg.task.name or cfg.task.upload:
        out["training"] = STAMPS["training"]
        out[f"method:{cfg.method.name}"] = method_class(cfg.method.name).version
        if cfg.merge.name:
            out[f"merge:{cfg.merge.name}"] = method_class(cfg.merge.name).version
    return out


def config_hash_of(cfg: RunConfig) -> str:
    return config_hash({"config": canonical(cfg), "stamps": stamps(cfg)})


def slug(cfg: RunConfig) -> str:
    """A readable prefix for the id, from the canonical config (never from the label)."""
    if not (cfg.task.name or cfg.task.upload):
        base = "aligned" if cfg.align.enabled else "instruct"
    else:
        method = cfg.method.name + (f"+{cfg.merge.name}" if cfg.merge.name else "")
        base = f"{method}-{cfg.task.name or 'upload'}"
        if cfg.task.poison_ratio:
            base += f"-p{cfg.task.poison_ratio:g}"
    return f"{base}-s{cfg.seed}"


def run_id(cfg: RunConfig) -> str:
    return f"{slug(cfg)}-{config_hash_of(cfg)[:10]}"


def align_key(cfg: RunConfig) -> str:
    """Cache key of the aligned base: the model, the alignment settings, their stamps."""
    c = canonical(cfg)
    return config_hash(
        {"model": c["model"], "align": c["align"], "stamps": {k: STAMPS[k] for k in ("data", "alignment")}}
    )[:16]


def training_key(cfg: RunConfig) -> str:
    """Cache key of a plain SFT training (merges and Safe LoRA reuse it): what decides the
    trained adapter (seed, model, alignment, data, optimiser) and the stamps of that code."""
    c = canonical(cfg)
    return config_hash(
        {
            **{k: c[k] for k in ("seed", "model", "align", "task", "train")},
            "stamps": {k: STAMPS[k] for k in ("data", "alignment", "training")},
        }
    )[:16]
