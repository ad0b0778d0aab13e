"""DER++: Dark Experience Replay plus cross-entropy on the buffered labels.

Buzzega et al., "Dark Experience for General Continual Learning: a Strong, Simple
Baseline", NeurIPS 2020; reference code Mammoth (aimagelab/mammoth, ``models/derpp.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ussafety.methods.base import TrainContext, register
from ussafety.methods.der import DER, der_loss


def derpp_loss(task_loss: torch.Tensor, cur_logits: torch.Tensor, stored_vals: torch.Tensor,
               stored_idx: torch.Tensor | None, label_logits: torch.Tensor, labels: torch.Tensor,
               alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``task + alpha * MSE(logits) + beta * CE(labels)``; returns (total, mse, ce).

    ``cur_logits``/``stored_*`` come from one buffer draw, ``label_logits``/``labels``
    (``[m, vocab]``, ``[m]``) from another, independent one (as Mammoth draws twice).
    """
    mse = der_loss(cur_logits, stored_vals, stored_idx)
    if labels.numel() == 0:
        ce = label_logits.sum() * 0.0
    else:
        ce = F.cross_entropy(label_logits.float(), labels)
    return task_loss + alpha * mse + beta * ce, mse, ce


@register("derpp")
@dataclass
class DERpp(DER):
    """DER + ``beta`` * cross-entropy on the buffered refusal responses (a second draw).

    Everything of :class:`ussafety.methods.der.DER` (buffer, stored or recomputed top-k
    reference logits), plus a second, independent minibatch of ``minibatch_size``
    buffered safety examples whose response tokens (the refusals) are trained with the
    ordinary language-model cross-entropy, weighted by ``beta``.

    Defaults: ``alpha=0.1, beta=0.5`` are Mammoth's best arguments for DER++ on
    seq-cifar10 with buffer 200 (``utils/best_args.py``; minibatch 32 = batch 32; the
    same pair is its choice for seq-cifar100 with buffers 500 and 2000); buffer 200,
    ``minibatch_size=8`` (1:1 with our batch size) and ``top_k=64`` as for DER (see its
    docstring for why top-k).

    Memory: as DER (buffer of ``buffer_size`` examples + ``buffer_size x
    response_tokens x top_k`` stored logits and indices with ``store``). Compute: two
    extra forward/backward passes of ``minibatch_size`` examples per step.
    """

    family: ClassVar[str] = "replay"

    alpha: float = 0.1
    beta: float = 0.5

    def loss(self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor,
             ctx: TrainContext) -> torch.Tensor:
        cur, vals, idx = self.replay_logits(model, ctx)
        label_logits, labels = self.replay_batch(model, ctx)
        total, mse, ce = derpp_loss(task_loss, cur, vals, idx, label_logits, labels,
                                    self.alpha, self.beta)
        ctx.logs["der_mse"] = float(mse.detach())
        ctx.logs["derpp_ce"] = float(ce.detach())
        return total
