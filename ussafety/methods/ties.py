"""TIES-Merging of the alignment and the fine-tuning task vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.merge_ops import merge_from_instruct, ties

if TYPE_CHECKING:
    import torch


@register("ties")
@dataclass
class Ties(Method):
    """TIES-Merging (Yadav et al. 2023, "TIES-Merging: Resolving interference when
    merging models") of ``tau_align = W_aligned - W_instruct`` (instruct weights read
    from ``ctx.instruct_dir``) and ``tau_ft = scale * B @ A``, for each adapted layer:
    ``W = W_instruct + ties([lam_align * trim(tau_align), lam_ft * trim(tau_ft)])`` with
    trim to the top-``density`` magnitudes, sign election by summed mass and the
    disjoint mean of agreeing entries (see :func:`merge_ops.ties`). Returns the plain
    model (LoRA removed).

    Defaults: ``density = 0.2`` (keep the top 20%: the paper's k = 20, also its reference
    code's ``reset_thresh = 20``) and weights ``lam_align = lam_ft = 1`` (the paper has no
    per-task weights and uses a final scale lambda = 1 when no validation set is
    available). Trimming is per tensor (mergekit) rather than over the whole
    flattened model (paper), so each layer keeps 20% of its entries.

    Memory: one adapted layer's instruct weight plus a few float32 temporaries of that
    layer (the stacked task vectors, masks) at a time; no full model copy.
    """

    family: ClassVar[str] = "merging"

    density: float = 0.2
    lam_align: float = 1.0
    lam_ft: float = 1.0

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        def combine(inst: torch.Tensor, tau_align: torch.Tensor, tau_ft: torch.Tensor) -> torch.Tensor:
            return ties(inst, [tau_align, tau_ft], self.density, [self.lam_align, self.lam_ft])

        return merge_from_instruct(model, ctx.instruct_dir, combine, ctx.logs, "ties")
