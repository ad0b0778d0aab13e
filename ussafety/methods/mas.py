"""Memory Aware Synapses on the LoRA weight change, anchored at the aligned model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import TrainContext, register
from ussafety.methods.ewc import ImportancePenalty, sample_rows, weight_importance

if TYPE_CHECKING:
    import torch


OUTPUTS = ("logits", "hidden")


def output_sq_norm(outputs: torch.Tensor) -> torch.Tensor:
    """``||f(x)||_2^2``: the sum of squares of every output entry (float32)."""
    return outputs.float().pow(2).sum()


def response_output_sq_norm(model: Any, batch: dict[str, torch.Tensor], output: str) -> torch.Tensor:
    """Squared L2 norm of the model's output on the response positions, summed over the
    batch: the vocabulary logits (``"logits"``) or the last hidden states (``"hidden"``)."""
    from ussafety.models.losses import response_hidden, response_logits

    if output == "logits":
        return output_sq_norm(response_logits(model, batch)[0])
    return output_sq_norm(response_hidden(model, batch)[0])


@register("mas")
@dataclass
class MAS(ImportancePenalty):
    """MAS (Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to forget",
    ECCV): importance ``Omega_i = mean_k |d ||f(x_k)||_2^2 / d theta_i|``, the
    sensitivity of the squared L2 norm of the network's output to each parameter; no
    labels needed. Penalty ``lam/2 * sum Omega (delta W)^2``, the same weight-space
    choice as :class:`~ussafety.methods.ewc.EWC`: ``Omega`` is taken w.r.t. the base
    weight of every LoRA-adapted layer at the aligned model, and applied to the
    effective change ``delta W = (alpha/r) B A`` (w.r.t. the LoRA factors it would be
    zero for ``A`` at ``B = 0``).

    ``output`` ("logits"): ``f(x)`` is the network's output before the softmax, as in
    the paper's global MAS and its reference code (squared norm of the last layer's
    outputs, no averaging), here the vocabulary logits at every response position of
    the safety example (teacher-forced), summed over positions: the output vector of a
    sequence is the concatenation of its per-position logit vectors. "hidden": the last
    hidden states on the same positions (cheaper for large vocabularies; not the paper).
    ``n_batches`` (16): batches of ``ctx.batch_size`` safety inputs (same budget as
    EWC's ``n_fisher``).
    ``per`` ("example"): ``|gradient|`` per example, the paper's Eq. 2-4; "batch":
    ``|gradient of the batch sum| / n``, what the reference code does (cheaper; smaller
    where examples' gradients cancel).
    ``normalize`` ("max"): ``Omega / max Omega``; raw values scale with the squared
    logits and the response lengths (SmolLM2-135M: max ~5e7, mean ~4e4, mean/max ~8e-4),
    so a raw ``lam`` does not transfer. "mean" / "none" as in EWC.
    ``lam`` (1e2, for ``normalize: max``): the paper uses ``lambda = 1`` on raw ``Omega``
    with the penalty ``lambda * sum Omega (theta - theta*)^2`` (no 1/2), i.e. ``lam = 2``
    in this form, at its scale. Here calibrated like EWC's: on a plain-SFT trajectory
    (SST-2, lr 2e-4) ``sum (Omega/max Omega) (delta W)^2`` is ~8e-4 of
    ``||delta W||^2``, so 1e2 gives the penalty of L2's default (``lam = 0.1``). Sweep on
    a log scale (1e0 .. 1e5).

    Memory: one float32 tensor per adapted base weight (``Omega``), plus each step a
    transient ``delta W`` per adapted layer; in ``prepare``, one example's response
    logits (``n_tokens x vocab``) per backward with ``per: example``.
    """

    family: ClassVar[str] = "regularization"

    lam: float = 1e2
    n_batches: int = 16
    per: str = "example"
    normalize: str = "max"
    output: str = "logits"
    log_key = "mas_penalty"
    importance_key = "mas_omega"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("output", OUTPUTS)

    def raw_importance(self, model: Any, ctx: TrainContext) -> dict[str, torch.Tensor]:
        import torch

        rows = sample_rows(ctx, self.n_batches)
        return weight_importance(
            model, rows, ctx, self.per, lambda m, b: response_output_sq_norm(m, b, self.output), torch.abs
        )
