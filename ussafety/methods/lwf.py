"""Learning without Forgetting: keep the outputs on the user's inputs close to the aligned model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ussafety.methods.base import Method, TrainContext, adapters_disabled, register
from ussafety.models.losses import ResponseOutputs, response_hidden, response_logits

VARIANTS = ("kl", "hidden")


def lwf_kl_loss(current: torch.Tensor, reference: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_rows KL(softmax(ref / T) || softmax(cur / T))`` over ``[rows, vocab]``.

    The KL differs from LwF's cross-entropy with the softened reference only by the
    reference's entropy (a constant), so the gradient is the paper's; ``T^2`` keeps the
    gradient scale independent of ``T`` (Hinton et al. 2015). No rows: zero.
    """
    if current.shape[0] == 0:
        return current.sum() * 0.0
    log_cur = F.log_softmax(current.float() / temperature, dim=-1)
    log_ref = F.log_softmax(reference.float() / temperature, dim=-1)
    kl = F.kl_div(log_cur, log_ref, log_target=True, reduction="batchmean")
    return temperature ** 2 * kl


def lwf_hidden_loss(current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error between hidden states (``[rows, hidden]``). No rows: zero."""
    if current.shape[0] == 0:
        return current.sum() * 0.0
    return F.mse_loss(current.float(), reference.float())


@register("lwf")
@dataclass
class LwF(Method):
    """LwF (Li & Hoiem 2016, "Learning without Forgetting", ECCV; TPAMI 2017): while
    learning the new task, keep the old model's responses to the NEW task's inputs.
    Here: on the response positions of each user batch (teacher-forced, the positions
    the task loss sees), the current model's outputs are pulled towards the aligned
    model's (the same PEFT model with LoRA switched off, under ``torch.no_grad``), so no
    old data and no stored targets are needed.

    ``variant``:
      ``"kl"`` (default, the classic form): ``lam * T^2 * KL(softmax(ref/T) ||
      softmax(cur/T))``, averaged over response tokens, summed over the vocabulary.
      ``"hidden"``: ``lam * MSE`` between the last hidden states (after the final norm)
      on the same positions: the variant of the reference study (Alssum et al. 2025,
      "Unforgotten Safety", arXiv 2512.10150).
    ``lam`` (1.0): LwF's loss-balance weight ``lambda_o = 1`` (the paper's setting).
    ``temperature`` (2.0): LwF's ``T = 2`` ("as in Hinton et al."). Only "kl" uses it.

    Memory and compute: no stored copies (the reference is recomputed with the adapters
    off): per step one extra forward pass without gradients on the user batch. The
    current model's outputs are the trainer's own forward pass of the step
    (``ctx.outputs``), so nothing else is run twice; "kl" also holds the reference
    logits (``n_response_tokens x vocab``, float32) of the batch.
    """

    family: ClassVar[str] = "regularization"

    lam: float = 1.0
    temperature: float = 2.0
    variant: str = "kl"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"lwf: variant must be one of {VARIANTS}, got '{self.variant}'")
        if self.temperature <= 0:
            raise ValueError("lwf: temperature must be > 0")

    def distill_loss(self, model: Any, batch: dict[str, torch.Tensor],
                     current: ResponseOutputs | None = None) -> torch.Tensor:
        """The unweighted LwF term on ``batch`` (differentiable w.r.t. the LoRA weights).

        ``current``: the current model's outputs on ``batch`` when already computed (the
        trainer's forward pass, with its graph); otherwise they are computed here.
        """
        outputs = response_logits if self.variant == "kl" else response_hidden
        with torch.no_grad(), adapters_disabled(model):
            reference = outputs(model, batch)[0]
        if current is None:
            cur = outputs(model, batch)[0]
        else:
            cur = current.logits if self.variant == "kl" else current.hidden
        if self.variant == "kl":
            return lwf_kl_loss(cur, reference, self.temperature)
        return lwf_hidden_loss(cur, reference)

    def loss(self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor,
             ctx: TrainContext) -> torch.Tensor:
        shared = ctx.outputs if ctx.outputs is not None and ctx.batch is batch else None
        distill = self.distill_loss(model, batch, shared)
        ctx.logs["lwf_loss"] = float(distill.detach())
        return task_loss + self.lam * distill
