"""Task arithmetic on two task vectors: alignment (aligned - instruct) and fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.merge_ops import merge_from_instruct, task_arithmetic

if TYPE_CHECKING:
    import torch


@register("task_arithmetic")
@dataclass
class TaskArithmetic(Method):
    """Task arithmetic (Ilharco et al. 2023, "Editing models with task arithmetic"):
    ``W = W_instruct + lam_align * tau_align + lam_ft * tau_ft`` for each adapted layer,
    with ``tau_align = W_aligned - W_instruct`` (the safety-alignment task vector; the
    instruct weights are read from ``ctx.instruct_dir``) and ``tau_ft = scale * B @ A``
    (the customer fine-tuning vector). Returns the plain model (LoRA removed).
    Only the adapted layers are merged; every other weight stays the aligned one (in
    this study alignment and fine-tuning adapt the same modules).

    Defaults ``lam_align = lam_ft = 0.4``: the paper uses one scaling coefficient for
    the summed task vectors, chosen on validation data; 0.4 is the value the TIES paper
    (Yadav et al. 2023) uses for task arithmetic when no validation set is available.
    ``lam_align = lam_ft = 1`` gives back the fine-tuned model; ``lam_align = 1,
    lam_ft = t`` is ``merge_linear``; ``lam_align = 1 + beta, lam_ft = 1`` re-adds the
    safety vector to the fine-tuned model (RESTA, Bhardwaj et al. 2024). Note that the
    shared-lambda default keeps only 40% of the alignment vector.

    Memory: one adapted layer's instruct weight (read from disk) plus two float32
    temporaries of that layer at a time; no full model copy.
    """

    family: ClassVar[str] = "merging"

    lam_align: float = 0.4
    lam_ft: float = 0.4

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        def combine(inst: torch.Tensor, tau_align: torch.Tensor, tau_ft: torch.Tensor) -> torch.Tensor:
            return task_arithmetic(inst, [tau_align, tau_ft], [self.lam_align, self.lam_ft])

        return merge_from_instruct(model, ctx.instruct_dir, combine, ctx.logs, "task_arithmetic")
