"""SLERP: spherical interpolation between the aligned and the fine-tuned weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.merge_ops import base_weight, lora_delta, lora_layers, slerp, slerp_is_lerp, write_and_unload

if TYPE_CHECKING:
    import torch


@register("slerp")
@dataclass
class Slerp(Method):
    """Per-tensor spherical linear interpolation (Shoemake 1985; as used for model
    merging in mergekit, Goddard et al. 2024) between ``W_aligned`` and
    ``W_finetuned = W_aligned + scale * B @ A``, for every LoRA-adapted layer.

    Finalize writes the merged weight of each adapted layer and returns the plain
    model (LoRA removed). ``t = 0`` is the aligned model, ``t = 1`` the fine-tuned one.

    Defaults: ``t = 0.5`` (the midpoint, the usual mergekit setting); ``eps = 5e-4``
    (mergekit's ``DOT_THRESHOLD = 0.9995``: lerp when ``|cos| > 1 - eps``). Note for
    this setting: a LoRA delta is small next to the weight it adapts, so W_aligned and
    W_finetuned are nearly parallel (``1 - cos ~ ||delta||^2 / (2 ||W||^2)``) and most
    layers fall back to lerp, i.e. SLERP then equals ``merge_linear`` with the same t;
    ``ctx.logs["slerp_lerp_fraction"]`` records the share of layers that did.

    Memory: one adapted layer's weight in float32 at a time (merged in place).
    """

    family: ClassVar[str] = "merging"

    t: float = 0.5
    eps: float = 5e-4

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        fell_back: list[bool] = []

        def merged(name: str, layer: Any) -> torch.Tensor:
            w = base_weight(layer).float()
            ft = w + lora_delta(layer).to(w.device)
            fell_back.append(slerp_is_lerp(w, ft, self.eps))
            return slerp(w, ft, self.t, self.eps)

        n_layers = len(lora_layers(model))
        model = write_and_unload(model, merged)
        ctx.logs["slerp_lerp_fraction"] = sum(fell_back) / max(1, n_layers)
        return model
