"""EMA: an exponential moving average of the LoRA weights, swapped in after training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, lora_parameters, register

if TYPE_CHECKING:
    import torch


def ema_update(avg: torch.Tensor, value: torch.Tensor, decay: float) -> None:
    """In place: ``avg = decay * avg + (1 - decay) * value``."""
    avg.mul_(decay).add_(value.detach().to(avg.dtype), alpha=1.0 - decay)


@register("ema")
@dataclass
class EMA(Method):
    """Exponential moving average of the trainable (LoRA) weights: the exponentially
    weighted form of Polyak-Ruppert iterate averaging (Polyak & Juditsky 1992), a merge
    of the checkpoints along the training trajectory.

    ``prepare`` copies the trainable weights (their initial values start the average),
    ``after_step`` applies ``ema = decay * ema + (1 - decay) * w`` after every optimizer
    step, ``finalize`` writes the averages into the LoRA weights. The A and B matrices
    are averaged separately (the average of the products ``B @ A`` is not the product of
    the averages; this is the usual EMA of the trainable parameters).

    ``decay = 0.9``: common defaults (0.999, 0.9999) assume 10^4-10^5 steps. The average
    covers roughly the last ``1 / (1 - decay)`` steps, and the initial weights (B = 0,
    i.e. the aligned model) keep a share ``decay ** steps``. For a ~50-step run, 0.99
    would leave 0.99**50 = 61% of the average at the initial weights (pulling B, hence
    the LoRA delta, most of the way back to 0); 0.9 averages over the last ~10 steps
    and leaves 0.9**50 = 0.5% at the initial weights.

    Memory: one float32 copy of the LoRA parameters.
    """

    family: ClassVar[str] = "merging"

    decay: float = 0.9

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"ema: decay must be in [0, 1], got {self.decay}")
        params = lora_parameters(model)
        self.average: dict[str, torch.Tensor] = {n: p.detach().float().clone() for n, p in params.items()}
        if not self.average:
            raise ValueError("ema: the model has no trainable parameters")

    def after_step(self, model: Any, ctx: TrainContext) -> None:
        import torch

        with torch.no_grad():
            for n, p in lora_parameters(model).items():
                ema_update(self.average[n], p, self.decay)

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        import torch

        params = lora_parameters(model)
        shift = 0.0
        with torch.no_grad():
            for n, avg in self.average.items():
                p = params[n]
                shift += float((p.float() - avg).pow(2).sum())
                p.copy_(avg.to(p.dtype))
        ctx.logs["ema_shift_l2"] = shift**0.5
        return model
