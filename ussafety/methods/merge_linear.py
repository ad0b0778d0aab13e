"""WiSE-FT: linear interpolation between the aligned and the fine-tuned weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.merge_ops import lora_layers


@register("merge_linear")
@dataclass
class MergeLinear(Method):
    """Weight-space ensembling, WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of
    zero-shot models"): ``W = W_aligned + t * (W_finetuned - W_aligned)``.

    With LoRA the fine-tuned weight is ``W_aligned + scale * B @ A``, so the merge is
    exactly ``W_aligned + t * scale * B @ A``: finalize multiplies every LoRA ``B`` by
    ``t`` and returns the (still PEFT) model, so the saved adapter is the merged one.
    ``t = 0`` is the aligned model, ``t = 1`` the fine-tuned one.

    ``t = 0.5``: the paper's default mixing coefficient (alpha = 0.5, used for its
    headline results when no held-out data picks alpha).

    Memory: none beyond the model (B is scaled in place).
    """

    family: ClassVar[str] = "merging"

    t: float = 0.5

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        import torch

        with torch.no_grad():
            for layer in lora_layers(model).values():
                for name in layer.active_adapters:
                    if name in layer.lora_B:
                        layer.lora_B[name].weight.mul_(self.t)
        ctx.logs["merge_linear_t"] = float(self.t)
        return model
