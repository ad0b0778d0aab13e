"""Safe LoRA: project the LoRA update onto the alignment subspace where it drifts from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.merge_ops import base_weight, instruct_layers, lora_delta

if TYPE_CHECKING:
    import torch


def alignment_projection(v: torch.Tensor) -> torch.Tensor:
    """``C = V V^T / ||V||_F`` for the alignment matrix ``V = W_aligned - W_instruct``.

    As in the paper and its code (``torch.mm(vec, vec.t()) / torch.norm(vec)``); note it
    is not an orthogonal projector (not idempotent): it also rescales.
    """
    v = v.float()
    return (v @ v.T) / v.norm()


def flat_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors taken as flat vectors (1.0 if either is zero:
    then there is nothing to project)."""
    import torch

    a, b = a.detach().float().flatten(), b.detach().float().flatten()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return 1.0
    return float(torch.dot(a, b) / (na * nb))


@register("safelora")
@dataclass
class SafeLoRA(Method):
    """Safe LoRA (Hsu et al. 2024, "Safe LoRA: the silver lining of reducing safety
    risks when finetuning large language models").

    In finalize, for each LoRA-adapted layer: ``V = W_aligned - W_instruct`` (instruct
    weights read from ``ctx.instruct_dir``), ``C = V V^T / ||V||_F``, and the projected
    update ``C @ delta_W``. Layers whose cosine similarity between ``delta_W`` and
    ``C @ delta_W`` is at or below ``threshold`` (the reference code's ``cos <=
    thrs_cos``) get the projected update, by replacing ``B`` with ``C @ B`` (so
    ``scale * (C B) A = C @ delta_W``); the other layers are left unchanged. The model
    stays a PEFT model. ``ctx.logs`` records ``safelora_projected`` (how many layers were
    projected), ``safelora_layers`` and ``safelora_mean_cos``.

    Defaults: ``threshold = 0.5`` (the reference ``SafeLoRAConfig.threshold``).
    ``num_layers > 0`` switches to the reference's other mode (``select_layers_type =
    "number"``, its default with ``num_proj_layers = 10`` of Llama-2-7B's 64 q/v layers):
    project the ``num_layers`` layers of lowest cosine. Threshold mode is the default
    here because a layer count does not transfer between models of different depth.
    A layer whose alignment matrix is zero (aligned == instruct) is skipped.

    Memory: per layer (one at a time) the instruct weight and the ``out x out`` matrix
    C in float32; plus the projected B matrices of all layers (the size of LoRA's B)
    until the layers to project are chosen.
    """

    family: ClassVar[str] = "baseline"

    threshold: float = 0.5
    num_layers: int = 0

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        import torch

        candidates: list[tuple[float, Any, dict[str, torch.Tensor]]] = []
        with torch.no_grad():
            for name, layer, inst in instruct_layers(model, ctx.instruct_dir):
                if getattr(layer, "fan_in_fan_out", False):
                    raise ValueError(f"safelora: {name} stores its weight transposed (fan_in_fan_out); not supported")
                w = base_weight(layer)
                v = w.float() - inst
                if v.norm() == 0:
                    continue
                c = alignment_projection(v)
                delta = lora_delta(layer).to(w.device)
                cos = flat_cosine(delta, c @ delta)
                new_b = {}
                for a in layer.active_adapters:
                    if a in layer.lora_B:
                        b = layer.lora_B[a].weight
                        new_b[a] = (c @ b.float()).to(b.dtype)
                candidates.append((cos, layer, new_b))
            if self.num_layers > 0:
                chosen = sorted(range(len(candidates)), key=lambda i: candidates[i][0])
                chosen_set = set(chosen[: self.num_layers])
            else:
                chosen_set = {i for i, (cos, _, _) in enumerate(candidates) if cos <= self.threshold}
            for i in chosen_set:
                _, layer, new_b = candidates[i]
                for a, b in new_b.items():
                    layer.lora_B[a].weight.copy_(b)
        cosines = [cos for cos, _, _ in candidates]
        ctx.logs["safelora_projected"] = float(len(chosen_set))
        ctx.logs["safelora_layers"] = float(len(candidates))
        if cosines:
            ctx.logs["safelora_mean_cos"] = sum(cosines) / len(cosines)
        return model
