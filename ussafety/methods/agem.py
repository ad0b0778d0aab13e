"""Averaged Gradient Episodic Memory (A-GEM): never step against the safety gradient.

Chaudhry, Ranzato, Rohrbach, Elhoseiny, "Efficient Lifelong Learning with A-GEM",
ICLR 2019; reference code Mammoth (aimagelab/mammoth, ``models/agem.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ussafety.data.types import Example
from ussafety.methods.base import Method, TrainContext, register
from ussafety.methods.buffer import ReservoirBuffer
from ussafety.models.losses import lm_loss


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A-GEM's projection: if ``g . g_ref < 0``, ``g - (g.g_ref / g_ref.g_ref) g_ref``.

    (Mammoth ``models/agem.py``: ``project`` when ``dot_prod < 0``.)

    Returns the (possibly) projected gradient and whether it was projected. The result
    has ``result . g_ref >= 0`` (zero up to rounding when projected).
    """
    dot = torch.dot(g, g_ref)
    ref_sq = torch.dot(g_ref, g_ref)
    if dot >= 0 or ref_sq == 0:
        return g, False
    return g - (dot / ref_sq) * g_ref, True


def flat_grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """All gradients as one float32 vector (zeros where a parameter has none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                      for p in params])


def write_grads(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Put the vector ``flat`` back into the parameters' ``.grad`` (inverse of :func:`flat_grads`)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n


@register("agem")
@dataclass
class AGEM(Method):
    """Project the task gradient so that it does not increase the loss on safety memory.

    ``prepare`` fills an episodic memory of ``buffer_size`` safety examples (reservoir
    sample of ``ctx.safety_data``, the same memory budget as DER/DER++). Just before each
    optimizer step (``after_backward``), with the step's task gradient ``g`` accumulated
    in ``.grad``: save ``g`` (flattened over the trainable LoRA parameters), zero the
    gradients, backward the language-model loss of a random memory batch of
    ``ref_batch_size`` examples to get ``g_ref``, and write back ``g`` or, when
    ``g . g_ref < 0``, its projection ``g - (g.g_ref / g_ref.g_ref) g_ref``.

    The trainer clips gradients before this hook; the projection never increases the
    norm, and its result does not depend on the scale of ``g_ref``, so clipping and loss
    scaling stay valid. ``ctx.logs["agem_projected_frac"]`` is the fraction of optimizer
    steps so far whose gradient was projected.

    Defaults: ``ref_batch_size=8``: Mammoth's best arguments for A-GEM use a memory
    minibatch equal to the batch size (seq-cifar10: ``minibatch_size=32, batch_size=32``,
    ``utils/best_args.py``); ours is 8 because our batch size is 8. ``buffer_size=200``:
    the smallest buffer of the Mammoth/DER tables, as for DER.

    Memory: ``buffer_size`` examples (token ids) and two flat float32 copies of the
    LoRA gradient (``g`` and ``g_ref``: 2 x 4 B x #LoRA parameters, e.g. 2 x 16 MB for
    rank-8 q/v LoRA on a 7B Llama). Compute: one extra forward and backward of
    ``ref_batch_size`` examples per optimizer step.
    """

    family: ClassVar[str] = "replay"

    ref_batch_size: int = 8
    buffer_size: int = 200

    def __post_init__(self) -> None:
        if self.ref_batch_size < 1 or self.buffer_size < 1:
            raise ValueError("agem: ref_batch_size and buffer_size must be >= 1")
        self.memory: ReservoirBuffer[Example] | None = None
        self.steps = 0
        self.projected = 0

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        if not ctx.safety_data:
            raise ValueError("agem needs safety data (its episodic memory); the context has none")
        self.memory = ReservoirBuffer(self.buffer_size, ctx.rng)
        self.memory.extend(list(ctx.safety_data))
        self.steps = self.projected = 0

    def reference_gradient(self, model: Any, params: list[torch.nn.Parameter],
                           ctx: TrainContext) -> torch.Tensor:
        """``g_ref``: the flat gradient of the LM loss on a random memory batch."""
        if self.memory is None:
            raise RuntimeError("agem: prepare() was not called")
        for p in params:
            p.grad = None
        batch = ctx.encode(self.memory.sample(self.ref_batch_size), params[0].device)
        lm_loss(model, batch).backward()
        return flat_grads(params)

    def after_backward(self, model: Any, ctx: TrainContext) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        g = flat_grads(params)
        g_ref = self.reference_gradient(model, params, ctx)
        g_new, projected = agem_project(g, g_ref)
        write_grads(params, g_new)
        self.steps += 1
        self.projected += int(projected)
        ctx.logs["agem_projected_frac"] = self.projected / self.steps
        ctx.logs["agem_cos"] = float(torch.dot(g, g_ref) / (g.norm() * g_ref.norm() + 1e-12))
