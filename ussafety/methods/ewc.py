"""Elastic Weight Consolidation on the LoRA weight change, anchored at the aligned model.

Also the weight-space importance machinery that MAS shares (:func:`weight_importance`,
:func:`normalize_importance`, :func:`ewc_penalty`, :class:`ImportancePenalty`).

Why importance is computed for the base weights and not for the LoRA parameters: at
the start of training ``B = 0``, so ``dL/dA = scale * B^T dL/d(delta W) = 0``: a Fisher
in LoRA-factor space is zero for ``A`` and says nothing useful about which directions
of the weights matter. The model's function depends on the effective weight
``W + delta W``, and ``dL/dW = dL/d(delta W)``, so the importance of each entry of
``delta W`` is the importance of the matching entry of the base (aligned) weight ``W``.
It is estimated once in ``prepare`` by temporarily enabling gradients on the base
weights of the adapted layers, and the penalty is ``lam/2 * sum F * (delta W)^2`` with
``delta W = (alpha/r) * B @ A``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.data.types import Example
from ussafety.methods.base import Method, TrainContext, adapters_disabled, register
from ussafety.methods.l2 import delta_weight, lora_layers
from ussafety.progress import progress

if TYPE_CHECKING:
    import torch


PER = ("example", "batch")
NORMALIZE = ("max", "mean", "none")


def ewc_penalty(fisher: dict[str, torch.Tensor], delta: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """``lam / 2 * sum_i F_i * delta_i^2`` over every named tensor of ``fisher``."""
    import torch

    return 0.5 * lam * torch.stack([(fisher[n] * delta[n].float().pow(2)).sum() for n in fisher]).sum()


def normalize_importance(importance: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    """Divide by the global max (``"max"``) or mean (``"mean"``) over all layers, or not.

    One global scalar keeps the relative importance of layers; only the scale of the
    penalty changes, which makes ``lam`` comparable across models and data sizes.
    """
    import torch

    if how == "none":
        return importance
    if how == "max":
        ref = torch.stack([v.max() for v in importance.values()]).max()
    elif how == "mean":
        ref = torch.stack([v.sum() for v in importance.values()]).sum() / sum(v.numel() for v in importance.values())
    else:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got '{how}'")
    if not float(ref) > 0:
        raise ValueError("importance is zero everywhere (no response tokens in the safety data?)")
    return {n: v / ref for n, v in importance.items()}


def weight_importance(
    model: Any,
    examples: list[Example],
    ctx: TrainContext,
    per: str,
    objective: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor],
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``mean over examples of transform(d objective / d W)`` for the base weight ``W`` of
    every LoRA-adapted layer, at the aligned weights (adapters switched off).

    ``objective(model, batch)`` must be a sum over the batch's examples.
    ``per="example"``: one backward per example (the textbook estimator).
    ``per="batch"``: one backward per batch of ``ctx.batch_size``, and the transformed
    batch gradient counts for its examples (``sum_batches transform(g_batch) / n``): for
    squares this equals the per-example mean wherever per-example gradients average to
    zero (near an optimum of the safety loss), for absolute values it is what the MAS
    reference code does; about ``batch_size`` times cheaper, biased low otherwise.
    Only the base weights get gradients; every other parameter's ``requires_grad`` and
    the model's train/eval mode are restored afterwards.
    """
    import torch

    if per not in PER:
        raise ValueError(f"per must be one of {PER}, got '{per}'")
    if not examples:
        raise ValueError("importance needs safety examples, and there are none")
    weights = {n: layer.get_base_layer().weight for n, layer in lora_layers(model).items()}
    device = next(iter(weights.values())).device
    units = (
        [[ex] for ex in examples]
        if per == "example"
        else [examples[i : i + ctx.batch_size] for i in range(0, len(examples), ctx.batch_size)]
    )
    total = {n: torch.zeros(w.shape, dtype=torch.float32, device=device) for n, w in weights.items()}
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    try:
        model.eval()
        for p in flags:
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
            w.grad = None
        with adapters_disabled(model):
            for unit in progress(units, desc=f"importance pass ({per})", unit=per):
                objective(model, ctx.encode(unit, device)).backward()
                for n, w in weights.items():
                    if w.grad is None:
                        raise RuntimeError(
                            f"{n}: no gradient reached the base weight (fused LoRA kernels such "
                            "as Unsloth's skip it); use model.backend: peft for this method"
                        )
                    total[n] += transform(w.grad.float())
                    w.grad = None
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for w in weights.values():
            w.grad = None
        model.train(was_training)
    return {n: t / len(examples) for n, t in total.items()}


def response_nll_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative log-likelihood of the responses, summed over tokens and examples."""
    import torch.nn.functional as F

    from ussafety.models.losses import response_logits

    logits, targets = response_logits(model, batch)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def sample_rows(ctx: TrainContext, n_batches: int) -> list[Example]:
    """``n_batches * batch_size`` safety rows drawn without replacement (seeded)."""
    if not ctx.safety_data:
        raise ValueError("this method needs safety data, and the context has none")
    k = min(n_batches * ctx.batch_size, len(ctx.safety_data))
    return ctx.rng.sample(ctx.safety_data, k)


class ImportancePenalty(Method):
    """Shared wiring of EWC and MAS: ``lam/2 * sum Omega * (delta W)^2`` in the loss.

    Subclasses say how the raw importance is measured (:meth:`raw_importance`), under which
    prefix its statistics are logged (``importance_key``) and their penalty's log key
    (``log_key``); the checks of ``per`` and ``normalize``, the timing of ``prepare`` and the
    normalisation are the same for both, so they live here.
    """

    lam: float
    per: str
    normalize: str
    log_key: ClassVar[str] = "penalty"
    importance_key: ClassVar[str] = "importance"

    def __post_init__(self) -> None:
        self.check_choice("per", PER)
        self.check_choice("normalize", NORMALIZE)
        self.importance: dict[str, torch.Tensor] = {}

    def check_choice(self, param: str, allowed: tuple[str, ...]) -> None:
        """Refuse a parameter outside ``allowed`` when the method is built (the config turns
        the error into one that names the parameter), not when training reaches it."""
        value = getattr(self, param)
        if value not in allowed:
            raise ValueError(f"{self.name}: {param} must be one of {allowed}, got '{value}'")

    def raw_importance(self, model: Any, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """The unnormalised importance of every adapted base weight (EWC's Fisher, MAS's Omega)."""
        raise NotImplementedError

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        start = time.perf_counter()
        self.set_importance(model, self.raw_importance(model, ctx), self.normalize, ctx, self.importance_key)
        ctx.logs[f"{self.name}_prepare_s"] = time.perf_counter() - start

    def penalty(self, model: Any) -> torch.Tensor:
        """The current penalty (differentiable w.r.t. the LoRA parameters)."""
        if not getattr(self, "importance", None):
            raise RuntimeError(f"{self.name}: prepare() must run before the loss")
        layers = self._layers
        delta = {n: delta_weight(layers[n]) for n in self.importance}
        return ewc_penalty(self.importance, delta, self.lam)

    def set_importance(
        self, model: Any, raw: dict[str, torch.Tensor], how: str, ctx: TrainContext, prefix: str
    ) -> None:
        import torch

        self._layers = lora_layers(model)
        n = sum(v.numel() for v in raw.values())
        ctx.logs[f"{prefix}_raw_max"] = float(torch.stack([v.max() for v in raw.values()]).max())
        ctx.logs[f"{prefix}_raw_mean"] = float(torch.stack([v.sum() for v in raw.values()]).sum()) / n
        self.importance = normalize_importance(raw, how)
        ctx.logs[f"{prefix}_norm_mean"] = float(torch.stack([v.sum() for v in self.importance.values()]).sum()) / n

    def loss(
        self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor, ctx: TrainContext
    ) -> torch.Tensor:
        pen = self.penalty(model)
        ctx.logs[self.log_key] = float(pen.detach())
        return task_loss + pen


@register("ewc")
@dataclass
class EWC(ImportancePenalty):
    """EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
    networks", PNAS): ``L = L_task + lam/2 * sum_i F_i (theta_i - theta*_i)^2`` with the
    diagonal empirical Fisher ``F`` of the old task (here: the safety responses) at the
    old optimum ``theta*`` (here: the aligned model).

    ``F`` = mean over safety examples of the squared gradient of the example's response
    log-likelihood (summed over its response tokens), w.r.t. the base weight of every
    LoRA-adapted layer, at the aligned weights; the penalty applies it to the effective
    weight change ``delta W = (alpha/r) B A`` (see the module docstring for why the
    LoRA factors themselves cannot carry the Fisher: at ``B = 0``, ``dL/dA = 0``).

    ``n_fisher`` (16): batches of ``ctx.batch_size`` safety examples, drawn without
    replacement (16 x 8 = 128 of the default 256-row safety memory). The paper does not
    fix a count; the per-example pass takes seconds on a GPU, minutes on CPU (where
    ``per: batch`` is ~batch_size times cheaper).
    ``per`` ("example"): per-example squared gradients (the empirical Fisher's
    definition); "batch" squares batch-summed gradients / n (see
    :func:`weight_importance`): ~batch_size times cheaper, equal in expectation only
    near a safety-loss optimum.
    ``normalize`` ("max"): ``F / max F`` (one global scalar), so ``lam`` does not
    depend on the data's response lengths or the model's scale. Measured on
    SmolLM2-135M (q/v LoRA, 8 refusal examples, max_length 128): raw ``F`` has max ~5e2
    and mean ~9e-3; it is very heavy-tailed (mean/max ~2e-5, median/max ~2e-7). A
    Fisher of token-averaged losses is smaller by ~1/n_tokens^2, and one w.r.t. the
    LoRA factors is zero for ``A``: a likely reason for the 1e6-1e12 ``lam`` other
    unnormalised LoRA EWC set-ups need. "mean" (``F / mean F``): ``lam`` comparable to
    L2's; "none": the paper's raw form (``lam`` ~1-10 here).
    ``lam`` (1e3, for ``normalize: max``): the paper tunes it per task (no transferable
    default). Calibrated so that EWC's penalty on a plain-SFT trajectory (SST-2, lr
    2e-4) equals L2's default (``lam = 0.1``): there ``sum (F/max F) (delta W)^2`` is
    ~6e-5 of ``||delta W||^2`` (0.1 / 6e-5 ~ 1.7e3), and the penalty reaches the order
    of the task loss. The SFT change concentrates on high-Fisher entries
    (``sum (F/mean F) (delta W)^2`` ~ 3.5 ``||delta W||^2``). Sweep on a log scale
    (1e1 .. 1e6); the max of a small sample is noisy, so compare runs at equal ``n_fisher``.

    Memory: one float32 tensor per adapted base weight (the Fisher; q/v of SmolLM2-135M:
    ~13M floats, 53 MB), plus each step a transient ``delta W`` per adapted layer.
    """

    family: ClassVar[str] = "regularization"

    lam: float = 1e3
    n_fisher: int = 16
    per: str = "example"
    normalize: str = "max"
    log_key = "ewc_penalty"
    importance_key = "ewc_fisher"

    def raw_importance(self, model: Any, ctx: TrainContext) -> dict[str, torch.Tensor]:
        import torch

        rows = sample_rows(ctx, self.n_fisher)
        return weight_importance(model, rows, ctx, self.per, response_nll_sum, torch.square)
