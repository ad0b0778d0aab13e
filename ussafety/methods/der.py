"""Dark Experience Replay (DER): replay the aligned model's logits on safety examples.

Buzzega, Boschini, Porrello, Abati, Calderara, "Dark Experience for General Continual
Learning: a Strong, Simple Baseline", NeurIPS 2020; reference code Mammoth
(aimagelab/mammoth, ``models/der.py``, ``utils/buffer.py``, ``utils/best_args.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.data.types import Example
from ussafety.methods.base import Method, TrainContext, adapters_disabled, register
from ussafety.methods.buffer import ReservoirBuffer, Row, replay_batch, replay_row, response_counts

if TYPE_CHECKING:
    import torch

TARGET_MODES = ("store", "recompute")


def topk_targets(ref_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``k`` largest reference logits of each position and their vocabulary indices.

    ``k <= 0`` or ``k >= vocab``: the whole row, and ``None`` for the indices.
    """
    if k <= 0 or k >= ref_logits.shape[-1]:
        return ref_logits, None
    values, indices = ref_logits.topk(k, dim=-1)
    return values, indices


def der_loss(cur_logits: torch.Tensor, stored_vals: torch.Tensor, stored_idx: torch.Tensor | None) -> torch.Tensor:
    """DER's penalty: mean squared error between current and stored logits.

    ``cur_logits``: ``[n, vocab]``; ``stored_vals``: ``[n, k]`` logits of the reference
    at vocabulary entries ``stored_idx`` (``[n, k]``). With ``stored_idx=None`` both are
    already aligned entry for entry (``[n, vocab]``, or ``[n, k]`` current logits taken
    at the stored entries by :func:`logits_at`). The mean runs over the ``n x k`` stored entries (Mammoth:
    ``F.mse_loss(buf_outputs, buf_logits)``, a mean over batch x classes).
    """
    import torch.nn.functional as F

    if cur_logits.numel() == 0:
        return cur_logits.sum() * 0.0
    cur = cur_logits if stored_idx is None else cur_logits.gather(-1, stored_idx.long())
    return F.mse_loss(cur.float(), stored_vals.float())


@dataclass
class Memory:
    """One buffered safety example, its encoded replay row (response capped) and, when
    stored, its reference logits (top-k) on that row's response positions."""

    example: Example
    row: Row
    values: torch.Tensor | None = None  # [n_response_tokens, k] float32, on CPU
    indices: torch.Tensor | None = None  # [n_response_tokens, k] int32, on CPU


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def output_head(model: Any) -> Any:
    """The vocabulary projection (``lm_head``) of a plain or PEFT-wrapped causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_output_embeddings()


def logits_at(head: Any, hidden: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """``head(hidden)`` at vocabulary entries ``idx`` (``[n, k]``), or everywhere (``None``).

    For a plain ``Linear`` head only the ``k`` needed dot products per position are
    computed (``[n, k, d]`` gathered rows of the head's weight): the same numbers as
    gathering from the full ``[n, vocab]`` logits, at ``k / vocab`` of the cost and memory
    (SmolLM2: 64 of 49,152 entries). The gathered weight rows get no gradient unless the
    head itself is trained. Any other head (a LoRA-adapted one) runs in full, then gathers.
    """
    import torch

    if idx is None:
        return head(hidden)
    idx = idx.long()
    if type(head) is torch.nn.Linear:
        out = torch.bmm(head.weight[idx], hidden.unsqueeze(-1)).squeeze(-1)
        return out if head.bias is None else out + head.bias[idx]
    return head(hidden).gather(-1, idx)


@contextlib.contextmanager
def reference_model(model: Any) -> Iterator[Any]:
    """The aligned reference: a PEFT model with LoRA off, or (no adapters) the model as is."""
    if hasattr(model, "disable_adapter"):
        with adapters_disabled(model):
            yield model
    else:
        yield model


def reference_targets(
    model: Any, ctx: TrainContext, rows: list[Row], top_k: int
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Top-k reference logits on each encoded row's response positions (one entry per row).

    Rows are the positions :func:`ussafety.models.losses.response_logits` returns for the
    padded rows, so they line up with a later forward pass on the same rows (no gradient).
    """
    import torch

    from ussafety.models.losses import response_logits

    device = model_device(model)
    pad_id = ctx.tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    try:
        with torch.no_grad(), reference_model(model):
            for start in range(0, len(rows), ctx.batch_size):
                chunk = rows[start : start + ctx.batch_size]
                logits, _ = response_logits(model, replay_batch(chunk, pad_id, device))
                vals, idx = topk_targets(logits, top_k)
                counts = response_counts(chunk)
                idx_parts = idx.split(counts) if idx is not None else [None] * len(counts)
                for v, i in zip(vals.split(counts), idx_parts):
                    out.append((v.float().cpu(), None if i is None else i.to(torch.int32).cpu()))
    finally:
        model.train(was_training)
    return out


@register("der")
@dataclass
class DER(Method):
    """Task loss + ``alpha`` * MSE(current logits, aligned model's logits) on replayed safety data.

    ``prepare`` streams ``ctx.safety_data`` through a reservoir buffer of ``buffer_size``
    examples (Mammoth's ``Buffer``). In Mammoth the buffer keeps the logits the network
    produced when it saw each example; here the "past task" is safety alignment, so the
    logits are those of the aligned model (the LoRA model with adapters disabled, which
    at ``prepare`` time is the same function as the model itself). Each step, ``loss``
    draws ``minibatch_size`` buffered examples and adds ``alpha`` times the mean squared
    error between the current logits and those targets on the response positions.

    ``targets``: ``"store"`` keeps the top-``top_k`` reference logits (values + vocabulary
    indices) of every response position, and the MSE is taken over those entries (the
    current logits at the stored indices); ``"recompute"`` stores nothing and recomputes
    the reference logits of each minibatch on the fly with adapters disabled (one extra
    no-grad forward per step), then applies the same top-k selection. ``top_k <= 0`` uses
    the whole vocabulary (exact DER). With top-k, the current logits are computed at the
    ``top_k`` target entries only (:func:`logits_at`: the same numbers as the full head's,
    without its ``[n, vocab]`` product and graph).

    ``response_tokens`` (16): each replayed refusal is cut after its first 16 response
    tokens (``<= 0``: whole responses), and the targets cover those positions. Why: a
    replayed safety row carries ~75 response tokens against ~3 for an SST-2 user row, so
    uncapped replay made a DER step 2.7x an SFT step (``paper_outputs/benchmarks/
    methods.json`` before this change); capped, a replayed row is no longer than a user
    row. What it keeps: by causality the first 16 positions' outputs are exactly those of
    the full row, and they are where the refusal is decided ("I'm sorry, but I cannot
    provide ..."); fine-tuning attacks move the aligned distribution mostly on the first
    few response tokens (Qi et al. 2024, "Safety Alignment Should Be Made More Than Just a
    Few Tokens Deep", arXiv 2406.05946), and this study's evaluation reads the first 32
    generated tokens. What it gives up: the teacher-forced continuation of the refusal
    after token 16 is not constrained directly (the test
    ``test_replay_methods_protect_safety_on_the_toy_model`` checks that the loss on whole
    refusals still stays lower than plain SFT's).

    Defaults: ``alpha=0.3`` and ``minibatch_size`` equal to the batch size are Mammoth's
    best arguments for DER on seq-cifar10 (``utils/best_args.py``: buffers 200, 500 and
    5120: ``alpha=0.3, minibatch_size=32, batch_size=32``; also seq-cifar100);
    ``buffer_size=200`` is the smallest buffer of the paper's tables. ``minibatch_size=8``
    keeps Mammoth's 1:1 ratio with our training batch size (8, not 32). ``top_k=64`` is
    ours: full-vocabulary logits are far too big to store (a 7B Llama: 32,000 floats per
    position, 4096 x 32000 x 4 B = 524 MB for one 4096-token example; SmolLM2: 49,152
    per position), while the top 64 entries usually carry most of the probability mass
    of a chat model's next-token distribution. Unlike full-vocabulary DER, the tail
    outside the stored top-k is left unconstrained.
    Note that logit MSE on a 50k-way LM head is on a different scale than on CIFAR's 10
    classes; ``alpha`` may need tuning.

    Memory: the buffer of ``buffer_size`` encoded rows (token ids) and, with ``store``,
    ``buffer_size x response_tokens x top_k`` logits (float32) + indices (int32) on CPU:
    200 x 16 x 64 x 8 B = 1.6 MB; per step ``minibatch_size x response_tokens x top_k``
    gathered head rows (8 x 16 x 64 x 576 x 4 B = 19 MB on SmolLM2). ``recompute``: no
    logits stored, one extra forward (no grad) of ``minibatch_size`` rows per step.
    Compute: one extra forward and backward of ``minibatch_size`` capped rows per step.
    Version 2: the response cap (version 1 replayed whole responses); the sparse head
    changes no number.
    """

    family: ClassVar[str] = "replay"
    version: ClassVar[int] = 2

    alpha: float = 0.3
    buffer_size: int = 200
    minibatch_size: int = 8
    top_k: int = 64
    targets: str = "store"
    response_tokens: int = 16

    def __post_init__(self) -> None:
        if self.targets not in TARGET_MODES:
            raise ValueError(f"der: targets must be one of {TARGET_MODES}, got '{self.targets}'")
        if self.buffer_size < 1 or self.minibatch_size < 1:
            raise ValueError("der: buffer_size and minibatch_size must be >= 1")
        self.buffer: ReservoirBuffer[Memory] | None = None

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        if not ctx.safety_data:
            raise ValueError(f"{self.name} needs safety data (its replay memory); the context has none")
        buffer: ReservoirBuffer[Example] = ReservoirBuffer(self.buffer_size, ctx.rng)
        buffer.extend(list(ctx.safety_data))
        memories = [
            Memory(ex, replay_row(ctx.tokenizer, ex, ctx.max_length, self.response_tokens)) for ex in buffer.items
        ]
        if self.targets == "store":
            stored = reference_targets(model, ctx, [m.row for m in memories], self.top_k)
            for mem, (vals, idx) in zip(memories, stored):
                mem.values, mem.indices = vals, idx
        self.buffer = ReservoirBuffer(self.buffer_size, ctx.rng)
        self.buffer.extend(memories)  # no more than its capacity: all kept, in order

    def draw(self, model: Any, ctx: TrainContext) -> tuple[list[Memory], dict[str, torch.Tensor]]:
        """``minibatch_size`` buffered memories and their padded replay batch."""
        if self.buffer is None:
            raise RuntimeError(f"{self.name}: prepare() was not called")
        mems = self.buffer.sample(self.minibatch_size)
        return mems, replay_batch([m.row for m in mems], ctx.tokenizer.pad_token_id, model_device(model))

    def matched_logits(
        self,
        model: Any,
        hidden: torch.Tensor,
        mems: list[Memory],
        batch: dict[str, torch.Tensor],
        full_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(current logits at the target entries, target logits), both ``[n, k]``.

        ``hidden``: the current model's last hidden states on ``batch``'s response positions;
        ``full_logits``: the head applied to them, when the caller has them (DER++), so the
        entries are gathered instead of computed again.
        """
        import torch

        from ussafety.models.losses import response_logits

        device = hidden.device
        if self.targets == "store":
            vals = torch.cat([m.values for m in mems if m.values is not None]).to(device)
            idx = (
                None
                if mems[0].indices is None
                else torch.cat([m.indices for m in mems if m.indices is not None]).to(device)
            )
        else:
            with torch.no_grad(), adapters_disabled(model):  # strict: raises without LoRA
                ref, _ = response_logits(model, batch)
            vals, idx = topk_targets(ref, self.top_k)
        if vals.shape[0] != hidden.shape[0]:
            raise RuntimeError(
                f"{self.name}: stored targets cover {vals.shape[0]} positions, the "
                f"replayed batch has {hidden.shape[0]} (encoding changed since prepare?)"
            )
        if full_logits is not None:
            return (full_logits if idx is None else full_logits.gather(-1, idx.long())), vals
        return logits_at(output_head(model), hidden, idx), vals

    def replay_logits(self, model: Any, ctx: TrainContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Current logits and their targets on a buffer minibatch, as :func:`der_loss` takes
        them (already at the target entries, so the indices are ``None``)."""
        from ussafety.models.losses import response_hidden

        mems, batch = self.draw(model, ctx)
        hidden, _ = response_hidden(model, batch)
        cur, vals = self.matched_logits(model, hidden, mems, batch)
        return cur, vals, None

    def loss(
        self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor, ctx: TrainContext
    ) -> torch.Tensor:
        mse = der_loss(*self.replay_logits(model, ctx))
        ctx.logs["der_mse"] = float(mse.detach())
        return task_loss + self.alpha * mse
