"""Lisa: alternate alignment-data and user-data steps, tied by a proximal term."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, lora_parameters, register

if TYPE_CHECKING:
    import torch

ALIGN, USER = "align", "user"


def lisa_state(step: int, align_steps: int, user_steps: int) -> str:
    """State of optimizer step ``step`` (0-based): each cycle is ``align_steps``
    alignment steps followed by ``user_steps`` user steps, starting with alignment
    (as the reference code does)."""
    if align_steps <= 0:
        return USER
    if user_steps <= 0:
        return ALIGN
    return ALIGN if step % (align_steps + user_steps) < align_steps else USER


def proximal(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], rho: float) -> torch.Tensor:
    """``rho / 2 * sum_n ||params[n] - anchor[n]||^2``."""
    import torch

    total = sum(((p.float() - anchor[n]) ** 2).sum() for n, p in params.items())
    return 0.5 * rho * torch.as_tensor(total)


@register("lisa")
@dataclass
class Lisa(Method):
    """Lisa, Lazy Safety Alignment (Huang et al. 2024, "Lisa: Lazy safety alignment for
    large language models against harmful fine-tuning attack"): bi-state optimisation.

    Training alternates ``align_steps`` (K1) optimizer steps in the alignment state and
    ``user_steps`` (K2) in the user state, starting with alignment. In the user state
    the objective is the trainer's task loss on the user batch; in the alignment state
    the step's batch is a safety batch instead (``ctx.safety_batch``, swapped in by
    ``step_batch`` before the trainer's forward pass, so the objective is the loss on
    it and the user batch drawn for that step is not run at all). In both states
    a proximal term ``rho / 2 * ||w - w_switch||^2`` on the trainable (LoRA) weights
    pulls towards ``w_switch``, the weights at the last state switch (the reference
    code adds it in both states). As in the reference code, the proximal term is off
    for the first ``prox_warmup`` share of the steps.

    Defaults: ``rho = 1`` (reference script ``RHO=1``); ``prox_warmup = 0.1`` (reference
    trainer: proximal only after 10% of the steps). The reference ``align_step=100,
    finetune_step=900`` runs ~20 cycles over 20k steps; a ~50-step run would never leave
    the first alignment phase, so here ``align_steps = 2, user_steps = 18``: the same
    1:9 ratio with 2.5 cycles in 50 steps. In the alignment state the trainer's user
    batch is still drawn (so the user data order does not depend on the schedule) but
    replaced, as in the reference, which also replaces the batch.

    Memory: one copy of the LoRA parameters (``w_switch``). Compute: an alignment step
    costs one forward/backward of a safety batch instead of the user batch.
    """

    family: ClassVar[str] = "baseline"

    align_steps: int = 2
    user_steps: int = 18
    rho: float = 1.0
    prox_warmup: float = 0.1

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        if self.align_steps < 0 or self.user_steps < 0:
            raise ValueError("lisa: align_steps and user_steps must be >= 0")
        if self.align_steps > 0 and not ctx.safety_data:
            raise ValueError("lisa needs safety data for its alignment steps")
        self.step = 0
        self.switches = 0
        self.state = lisa_state(0, self.align_steps, self.user_steps)
        self.anchor = self._snapshot(model)
        self._swapped: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _snapshot(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().float().clone() for n, p in lora_parameters(model).items()}

    def proximal_term(self, model: Any) -> torch.Tensor:
        return proximal(lora_parameters(model), self.anchor, self.rho)

    def step_batch(self, batch: dict[str, torch.Tensor], ctx: TrainContext) -> dict[str, torch.Tensor]:
        """In the alignment state: a safety batch replaces the user batch."""
        if self.state != ALIGN:
            return batch
        self._swapped = ctx.safety_batch(batch["input_ids"].device)
        return self._swapped

    def loss(
        self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor, ctx: TrainContext
    ) -> torch.Tensor:
        from ussafety.models.losses import lm_loss

        if self.state == ALIGN:
            if batch is getattr(self, "_swapped", None):
                objective = task_loss  # the trainer's loss on the swapped-in safety batch
            else:  # called without step_batch (not through the trainer): compute it here
                device = next(model.parameters()).device
                objective = lm_loss(model, ctx.safety_batch(device))
            ctx.logs["lisa_safety_loss"] = float(objective.detach())
        else:
            objective = task_loss
        if self.rho > 0 and self.step >= self.prox_warmup * ctx.total_steps:
            prox = self.proximal_term(model).to(objective.device)
            objective = objective + prox
            ctx.logs["lisa_prox"] = float(prox.detach())
        ctx.logs["lisa_align_state"] = float(self.state == ALIGN)
        return objective

    def after_step(self, model: Any, ctx: TrainContext) -> None:
        self.step += 1
        state = lisa_state(self.step, self.align_steps, self.user_steps)
        if state != self.state:
            self.state = state
            self.anchor = self._snapshot(model)
            self.switches += 1
        ctx.logs["lisa_switches"] = float(self.switches)
