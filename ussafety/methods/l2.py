"""L2 penalty on the weight change from the aligned model (L2-SP style anchoring).

Also home of the small LoRA weight-space helpers that EWC and MAS reuse: with LoRA the
change of an adapted ``Linear`` layer is ``delta W = (alpha / r) * B @ A`` (``B`` starts
at zero, so ``delta W = 0`` at the start: the frozen base weights ARE the aligned model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, lora_parameters, register

if TYPE_CHECKING:
    import torch


def lora_layers(model: Any) -> dict[str, Any]:
    """PEFT LoRA layers that carry an active ``Linear`` adapter, by module name.

    Raises on adapters whose weight change is not ``scale * B @ A`` (embedding LoRA,
    DoRA and other variants), so that no trainable weight goes silently unpenalised.
    """
    from peft.tuners.lora import LoraLayer

    layers: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.active_adapters:
            if adapter in module.lora_embedding_A:
                raise ValueError(f"{name}: LoRA on embeddings is not supported by weight-space penalties")
            if module.lora_variant.get(adapter) is not None or module.use_dora.get(adapter, False):
                raise ValueError(
                    f"{name}: LoRA variant (DoRA...) is not supported: its weight change is not scale * B @ A"
                )
        if any(a in module.lora_A for a in module.active_adapters):
            layers[name] = module
    if not layers:
        raise ValueError("no LoRA layers found: weight-space penalties need a PEFT LoRA model")
    return layers


def lora_factors(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` in float32 with the scaling folded into ``B``: ``delta W = B @ A``.

    Several active adapters are stacked along the rank axis (``sum_a s_a B_a A_a`` is
    one product of the concatenations), so callers see one factor pair per layer.
    """
    import torch

    adapters = [a for a in layer.active_adapters if a in layer.lora_A]
    b = torch.cat([layer.lora_B[a].weight.float() * layer.scaling[a] for a in adapters], dim=1)
    a = torch.cat([layer.lora_A[a].weight.float() for a in adapters], dim=0)
    return b, a


def delta_weight(layer: Any) -> torch.Tensor:
    """The full ``delta W`` of a layer, laid out like its base weight (float32)."""
    b, a = lora_factors(layer)
    delta = b @ a
    return delta.T if getattr(layer, "fan_in_fan_out", False) else delta


def lowrank_sq_norm(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``||B @ A||_F^2 = trace((B^T B)(A A^T))`` with only ``r x r`` matrices.

    ``A A^T`` is symmetric, so the trace of the product is the sum of the elementwise
    product: O((d_out + d_in) r^2) instead of the O(d_out d_in r) of forming ``B @ A``.
    """
    return ((b.T @ b) * (a @ a.T)).sum()


def l2_delta_w_penalty(factors: list[tuple[torch.Tensor, torch.Tensor]], lam: float) -> torch.Tensor:
    """``lam / 2 * sum_layers ||B A||_F^2`` for ``(B, A)`` pairs with the scale in ``B``."""
    import torch

    return 0.5 * lam * torch.stack([lowrank_sq_norm(b, a) for b, a in factors]).sum()


def l2_param_penalty(
    current: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], lam: float
) -> torch.Tensor:
    """``lam / 2 * sum ||theta - theta_0||^2`` over named tensors."""
    import torch

    return 0.5 * lam * torch.stack([(current[n].float() - anchor[n].float()).pow(2).sum() for n in anchor]).sum()


@register("l2")
@dataclass
class L2(Method):
    """Penalise ``lam / 2 * ||delta theta||^2``, the squared change from the aligned weights.

    The "L2" baseline of Kirkpatrick et al. 2017 (EWC paper, PNAS, Fig. 2: every weight
    equally important) and L2-SP of Li, Grandvalet & Davoine 2018 ("Explicit inductive
    bias for transfer learning with convolutional networks", ICML), which anchors
    fine-tuning to the pre-trained weights rather than to zero.

    ``on``: what ``delta theta`` is.
      ``"delta_w"`` (default): the effective weight change ``delta W = (alpha/r) B A`` of
      every adapted layer. This is what the model's function depends on and what the
      design asks for ("EWC/MAS/L2 act on the weight change"). The LoRA factors are not
      identifiable (``B A = (B G)(G^-1 A)``), and ``A`` starts random, so a distance in
      factor space says little about distance from the aligned model. Computed
      without any ``d x d`` matrix: ``||B A||_F^2 = trace((B^T B)(A A^T))``.
      ``"lora_params"``: ``||A - A_0||^2 + ||B - B_0||^2`` over the trainable LoRA
      parameters from their values at the start of training (cheaper still, but it also
      pulls ``A`` back to its random initialisation, which does not protect safety).
    ``lam`` (0.1): the strength. Neither paper gives a default that transfers (both tune
    it per task; L2-SP cross-validates it on a log grid). Chosen for LoRA on
    SmolLM2-135M: there ``||delta W||^2`` summed over the 60 q/v layers is ~0.4 after 8
    steps of plain SFT at lr 2e-4 (batch 8) and grows to O(1-10) over a default run
    (~50 steps), so ``lam = 0.1`` makes the penalty of the order of the task loss
    (cross-entropy ~1). Sweep on a log scale (1e-3 .. 1e2).

    Memory: none beyond ``r x r`` products per layer for ``delta_w``; one copy of the
    LoRA parameters (the anchor) for ``lora_params``.
    """

    family: ClassVar[str] = "regularization"

    lam: float = 0.1
    on: str = "delta_w"

    def __post_init__(self) -> None:
        if self.on not in ("delta_w", "lora_params"):
            raise ValueError(f"l2: on must be 'delta_w' or 'lora_params', got '{self.on}'")
        self._layers: dict[str, Any] = {}
        self._anchor: dict[str, torch.Tensor] = {}

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        if self.on == "delta_w":
            self._layers = lora_layers(model)
        else:
            self._anchor = {n: p.detach().clone() for n, p in lora_parameters(model).items()}

    def penalty(self, model: Any) -> torch.Tensor:
        """The current penalty (differentiable w.r.t. the LoRA parameters)."""
        if self.on == "delta_w":
            layers = self._layers or lora_layers(model)
            return l2_delta_w_penalty([lora_factors(layer) for layer in layers.values()], self.lam)
        if not self._anchor:
            raise RuntimeError("l2 (on: lora_params): prepare() must run before the loss")
        return l2_param_penalty(lora_parameters(model), self._anchor, self.lam)

    def loss(
        self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor, ctx: TrainContext
    ) -> torch.Tensor:
        pen = self.penalty(model)
        ctx.logs["l2_penalty"] = float(pen.detach())
        return task_loss + pen
