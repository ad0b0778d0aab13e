"""MagMax: per parameter, keep the larger of the alignment and fine-tuning changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.merge_ops import magmax, merge_from_instruct

if TYPE_CHECKING:
    import torch


@register("magmax")
@dataclass
class MagMax(Method):
    """MagMax (Marczak et al. 2024, "MagMax: Leveraging model merging for seamless
    continual learning"): ``W = W_instruct + lam * magmax([tau_align, tau_ft])`` for each
    adapted layer, where magmax takes per entry the task-vector entry of largest
    magnitude; ``tau_align = W_aligned - W_instruct`` (instruct weights read from
    ``ctx.instruct_dir``), ``tau_ft = scale * B @ A``. Returns the plain model.

    ``lam = 1.0``. The reference code applies the merged vector with scale 0.5, but its
    task vectors come from sequential fine-tuning and are cumulative (the second would
    be ``W_finetuned - W_instruct = tau_align + tau_ft``); here the two vectors are the
    separate stages' changes, and 0.5 would halve the alignment change wherever it
    wins. The paper reports the method robust to this scale.

    Memory: one adapted layer's instruct weight plus float32 temporaries of that layer
    at a time; no full model copy.
    """

    family: ClassVar[str] = "merging"

    lam: float = 1.0

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        def combine(inst: torch.Tensor, tau_align: torch.Tensor, tau_ft: torch.Tensor) -> torch.Tensor:
            return inst + self.lam * magmax([tau_align, tau_ft])

        return merge_from_instruct(model, ctx.instruct_dir, combine, ctx.logs, "magmax")
