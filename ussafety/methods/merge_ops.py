"""Weight-merging math shared by the merge methods (not a method: nothing is registered).

Two halves:

* Pure per-tensor functions in the style of mergekit: :func:`lerp`, :func:`slerp`,
  :func:`task_arithmetic`, :func:`ties` and :func:`magmax`. They take and return plain
  tensors (computed in float32, returned in the dtype of the first input) so tests can
  check them on hand-made tensors.
* Helpers that read a LoRA (PEFT) model layer by layer: the adapted layers, their
  aligned weight (the frozen base weight), their LoRA delta ``scale * B @ A``, the
  instruct model's weight for the same layer (read lazily from the ``safetensors``
  files of ``ctx.instruct_dir``, one tensor at a time), and :func:`write_and_unload`,
  which writes a merged weight into each adapted layer and returns the plain model.

Importing this module has no side effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------- pure tensor math


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation ``(1 - t) * a + t * b``."""
    out = (1.0 - t) * a.float() + t * b.float()
    return out.to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 5e-4) -> torch.Tensor:
    """Spherical interpolation between two tensors, each taken as one flat vector.

    As in mergekit: the angle comes from the normalised vectors, the interpolation
    weights ``sin((1-t) theta) / sin theta`` and ``sin(t theta) / sin theta`` are applied
    to the original (unnormalised) tensors. When the two are nearly parallel
    (``|cos| > 1 - eps``; mergekit's ``DOT_THRESHOLD = 0.9995`` is ``eps = 5e-4``) the
    sines vanish and it falls back to :func:`lerp`. ``t = 0`` gives ``a``, ``t = 1`` ``b``.
    """
    import torch

    if a.shape != b.shape:
        raise ValueError(f"slerp: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    va, vb = a.float().flatten(), b.float().flatten()
    na, nb = va.norm(), vb.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    cos = torch.clamp(torch.dot(va / na, vb / nb), -1.0, 1.0)
    if cos.abs() > 1.0 - eps:
        return lerp(a, b, t)
    theta = torch.arccos(cos)
    sin_theta = torch.sin(theta)
    s0 = torch.sin((1.0 - t) * theta) / sin_theta
    s1 = torch.sin(t * theta) / sin_theta
    return (s0 * va + s1 * vb).reshape(a.shape).to(a.dtype)


def slerp_is_lerp(a: torch.Tensor, b: torch.Tensor, eps: float = 5e-4) -> bool:
    """Whether :func:`slerp` falls back to :func:`lerp` for this pair."""
    import torch

    va, vb = a.float().flatten(), b.float().flatten()
    na, nb = va.norm(), vb.norm()
    if na == 0 or nb == 0:
        return True
    return bool(torch.dot(va / na, vb / nb).abs() > 1.0 - eps)


def task_arithmetic(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``base + sum_i weights[i] * deltas[i]`` (Ilharco et al. 2023)."""
    if len(deltas) != len(weights):
        raise ValueError("task_arithmetic: one weight per task vector")
    out = base.float().clone()
    for d, w in zip(deltas, weights):
        out += w * d.float()
    return out.to(base.dtype)


def trim_top(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density * numel)`` entries of largest magnitude, zero the rest.

    ``int()`` as in mergekit's magnitude sparsification; ``density >= 1`` keeps all.
    """
    import torch

    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    flat = delta.flatten()
    k = int(density * flat.numel())
    if k >= flat.numel():
        return delta.clone()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        mask[flat.abs().topk(k).indices] = True
    return (flat * mask).reshape(delta.shape)


def ties(base: torch.Tensor, deltas: list[torch.Tensor], density: float, weights: list[float]) -> torch.Tensor:
    """TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

    1. Trim: each task vector keeps its top-``density`` entries by magnitude (per
       tensor, as mergekit; the paper trims over the whole flattened model).
    2. Each trimmed vector is scaled by its weight.
    3. Elect: per entry, the sign of the summed (weighted) mass; a zero sum takes the
       sign of the tensor's total mass (the reference code's ``resolve_zero_signs``).
    4. Disjoint mean: per entry, the mean of the non-zero entries whose sign agrees
       with the elected one (entries with none stay 0) -- the reference ``dis-mean``.

    Returns ``base + merged``. With all weights 1 this is the paper's algorithm with
    its final scale ``lambda = 1``.
    """
    import torch

    if len(deltas) != len(weights):
        raise ValueError("ties: one weight per task vector")
    stacked = torch.stack([w * trim_top(d.float(), density) for d, w in zip(deltas, weights)])
    sign = torch.sign(stacked.sum(dim=0))
    majority = 1.0 if sign.sum() >= 0 else -1.0
    sign[sign == 0] = majority
    agree = torch.where(sign > 0, stacked > 0, stacked < 0)
    selected = stacked * agree
    count = agree.sum(dim=0).clamp(min=1)
    merged = selected.sum(dim=0) / count
    return (base.float() + merged).to(base.dtype)


def magmax(deltas: list[torch.Tensor]) -> torch.Tensor:
    """Per entry, the task-vector entry of largest magnitude (Marczak et al. 2024).

    Ties go to the earlier task vector (``argmax`` returns the first maximum).
    """
    import torch

    stacked = torch.stack([d.float() for d in deltas])
    idx = stacked.abs().argmax(dim=0, keepdim=True)
    return stacked.gather(0, idx).squeeze(0).to(deltas[0].dtype)


# ---------------------------------------------------------------- LoRA-model helpers


def lora_layers(model: Any) -> dict[str, Any]:
    """The LoRA-adapted modules by their name in the plain model.

    Names are relative to the transformers model (``model.layers.0.self_attn.q_proj``),
    so ``name + ".weight"`` is the tensor's key in the model's ``safetensors`` files.
    """
    from peft.tuners.lora import LoraLayer

    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = {n: m for n, m in root.named_modules() if isinstance(m, LoraLayer)}
    if not layers:
        raise ValueError("this merge needs a LoRA (PEFT) model; the model has no LoRA layers")
    return layers


def base_weight(layer: Any) -> torch.nn.Parameter:
    """The frozen base weight of a LoRA layer: the aligned model's weight."""
    return layer.get_base_layer().weight


def lora_delta(layer: Any) -> torch.Tensor:
    """``sum over active adapters of scale * B @ A`` in float32 (shape of the weight),
    detached from autograd."""
    import torch

    delta = None
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        a = layer.lora_A[name].weight.detach().float()
        b = layer.lora_B[name].weight.detach().float()
        d = (b @ a) * layer.scaling[name]
        if getattr(layer, "fan_in_fan_out", False):
            d = d.T
        delta = d if delta is None else delta + d
    if delta is None:
        return torch.zeros_like(base_weight(layer), dtype=torch.float32)
    return delta


def _resolve_folder(name_or_dir: str) -> Path:
    """A local folder, or the cached snapshot of a hub id."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_dir, allow_patterns=["*.safetensors", "*.json"]))


class WeightReader:
    """Reads single tensors by key from a model folder's ``safetensors`` file(s).

    Opened as a context manager; tensors are read one at a time (memory-mapped), so
    reading the adapted layers costs one layer's weight at a time, not a model copy.
    """

    def __init__(self, folder: str | None):
        if not folder:
            raise ValueError("this method needs the instruct model's weights (ctx.instruct_dir)")
        self.folder = _resolve_folder(folder)
        self._stack = ExitStack()
        self._where: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}

    def __enter__(self) -> WeightReader:
        from safetensors import safe_open

        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self._where = {k: self.folder / f for k, f in weight_map.items()}
        files = sorted(set(self._where.values())) or sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors files in {self.folder}")
        for f in files:
            handle = self._stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            self._handles[f] = handle
            if not index.is_file():
                self._where.update({k: f for k in handle.keys()})  # noqa: SIM118 (a safetensors handle has keys(), no __iter__)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def get(self, key: str) -> torch.Tensor:
        if key not in self._where:
            raise KeyError(f"{key} not found in {self.folder}")
        return self._handles[self._where[key]].get_tensor(key)


def instruct_layers(model: Any, instruct_dir: str | None) -> Iterator[tuple[str, Any, torch.Tensor]]:
    """``(name, lora_layer, W_instruct)`` for each adapted layer, W_instruct in float32
    on the layer's device (read one layer at a time)."""
    import torch

    layers = lora_layers(model)
    with WeightReader(instruct_dir) as reader:
        for name, layer in layers.items():
            w = base_weight(layer)
            inst = reader.get(f"{name}.weight").to(device=w.device, dtype=torch.float32)
            if inst.shape != w.shape:
                raise ValueError(f"{name}: instruct weight {tuple(inst.shape)} != model weight {tuple(w.shape)}")
            yield name, layer, inst


def write_and_unload(model: Any, merged: Callable[[str, Any], torch.Tensor]) -> Any:
    """Set each adapted layer's weight to ``merged(name, layer)`` and drop the LoRA.

    Equivalent to ``merge_and_unload()`` followed by overwriting the adapted weights,
    but without materialising the merge: each layer's merged weight is written into
    its frozen base weight in place (one layer's temporaries at a time), then the
    LoRA modules are removed without merging (``unload()``). Returns the plain model.
    """
    import torch

    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            w = base_weight(layer)
            w.copy_(merged(name, layer).to(device=w.device, dtype=w.dtype))
    return model.unload()


def merge_from_instruct(
    model: Any,
    instruct_dir: str | None,
    combine: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    logs: dict[str, float],
    prefix: str,
) -> Any:
    """Write ``combine(W_instruct, tau_align, tau_ft)`` into every adapted layer.

    ``tau_align = W_aligned - W_instruct`` and ``tau_ft = scale * B @ A`` (float32).
    Records the Frobenius norms of both task vectors over the adapted layers in
    ``logs[prefix + "_tau_align_norm"]`` and ``logs[prefix + "_tau_ft_norm"]``.
    Returns the plain (unloaded) model.
    """
    import torch

    sq_align = sq_ft = 0.0
    with torch.no_grad():
        for _, layer, inst in instruct_layers(model, instruct_dir):
            w = base_weight(layer)
            tau_align = w.float() - inst
            tau_ft = lora_delta(layer).to(w.device)
            sq_align += float(tau_align.pow(2).sum())
            sq_ft += float(tau_ft.pow(2).sum())
            w.copy_(combine(inst, tau_align, tau_ft).to(dtype=w.dtype))
    logs[f"{prefix}_tau_align_norm"] = sq_align**0.5
    logs[f"{prefix}_tau_ft_norm"] = sq_ft**0.5
    return model.unload()
