"""Learning without Forgetting: keep the outputs on the user's inputs close to the aligned model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.methods.base import Method, TrainContext, adapters_disabled, register
from ussafety.methods.buffer import replay_batch, response_counts
from ussafety.methods.der import output_head

if TYPE_CHECKING:
    import torch

    from ussafety.models.losses import ResponseOutputs

VARIANTS = ("kl", "hidden")
REFERENCE_MODES = ("auto", "precompute", "recompute")
PRECOMPUTE_BUDGET_MB = 512.0
"""``reference: auto`` precomputes while the stored hidden states fit in this many MB."""


def lwf_kl_loss(current: torch.Tensor, reference: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_rows KL(softmax(ref / T) || softmax(cur / T))`` over ``[rows, vocab]``.

    The KL differs from LwF's cross-entropy with the softened reference only by the
    reference's entropy (a constant), so the gradient is the paper's; ``T^2`` keeps the
    gradient scale independent of ``T`` (Hinton et al. 2015). No rows: zero.
    """
    import torch.nn.functional as F

    if current.shape[0] == 0:
        return current.sum() * 0.0
    log_cur = F.log_softmax(current.float() / temperature, dim=-1)
    log_ref = F.log_softmax(reference.float() / temperature, dim=-1)
    kl = F.kl_div(log_cur, log_ref, log_target=True, reduction="batchmean")
    return temperature**2 * kl


def lwf_hidden_loss(current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error between hidden states (``[rows, hidden]``). No rows: zero."""
    import torch.nn.functional as F

    if current.shape[0] == 0:
        return current.sum() * 0.0
    return F.mse_loss(current.float(), reference.float())


def row_keys(batch: dict[str, torch.Tensor]) -> list[bytes]:
    """One key per row of a right-padded batch: its unpadded token ids and labels.

    The same row encoded the same way gets the same key whatever batch it lands in, so
    reference outputs computed once can be found again.
    """
    ids, labels = batch["input_ids"].cpu(), batch["labels"].cpu()
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [ids[i, :n].numpy().tobytes() + b"|" + labels[i, :n].numpy().tobytes() for i, n in enumerate(lengths)]


@register("lwf")
@dataclass
class LwF(Method):
    """LwF (Li & Hoiem 2016, "Learning without Forgetting", ECCV; TPAMI 2017): while
    learning the new task, keep the old model's responses to the NEW task's inputs.
    Here: on the response positions of each user batch (teacher-forced, the positions
    the task loss sees), the current model's outputs are pulled towards the aligned
    model's (the same PEFT model with LoRA switched off, under ``torch.no_grad``).

    ``variant``:
      ``"kl"`` (default, the classic form): ``lam * T^2 * KL(softmax(ref/T) ||
      softmax(cur/T))``, averaged over response tokens, summed over the vocabulary.
      ``"hidden"``: ``lam * MSE`` between the last hidden states (after the final norm)
      on the same positions: the variant of the reference study (Alssum et al. 2025,
      "Unforgotten Safety", arXiv 2512.10150).
    ``lam`` (1.0): LwF's loss-balance weight ``lambda_o = 1`` (the paper's setting).
    ``temperature`` (2.0): LwF's ``T = 2`` ("as in Hinton et al."). Only "kl" uses it.

    ``reference``: where the aligned model's outputs come from.
      ``"precompute"``: once, in ``prepare``, for every row of ``ctx.user_data`` (as the
      trainer encodes it): the last hidden states on its response positions, which is
      what LwF itself did (the paper records the old model's responses to the new data
      before training). The reference never changes (the adapters are off), so this
      is the same objective; each step then runs only the frozen head on the stored
      states (for "kl"), instead of a no-grad forward of the whole batch. A batch with a
      row not stored (not in ``ctx.user_data``) is computed on the fly.
      ``"recompute"``: the no-grad forward of each batch with the adapters off (1.5x an
      SFT step, ``paper_outputs/benchmarks/methods.json`` before precomputing).
      ``"auto"`` (default): precompute while the stored states fit in
      ``PRECOMPUTE_BUDGET_MB`` (512 MB), else recompute. Precomputing costs one no-grad
      pass over the user data in ``prepare``, which an uncapped run repays within its
      first epoch; it costs more than it saves only for runs shorter than one epoch.

    Memory: with precompute, ``n_user_response_tokens x hidden`` float32 on CPU (the
    study's 200 SST-2 rows on SmolLM2: ~840 x 576 x 4 B = 2 MB; long answers on a 7B
    model can reach GBs, hence the budget); per step, "kl" holds the reference logits
    (``n_response_tokens x vocab``, float32) of the batch. The current model's outputs
    are the trainer's own forward pass of the step (``ctx.outputs``), so nothing else is
    run twice.
    """

    family: ClassVar[str] = "regularization"

    lam: float = 1.0
    temperature: float = 2.0
    variant: str = "kl"
    reference: str = "auto"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"lwf: variant must be one of {VARIANTS}, got '{self.variant}'")
        if self.temperature <= 0:
            raise ValueError("lwf: temperature must be > 0")
        if self.reference not in REFERENCE_MODES:
            raise ValueError(f"lwf: reference must be one of {REFERENCE_MODES}, got '{self.reference}'")
        self.stored: dict[bytes, torch.Tensor] = {}

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        import torch

        from ussafety.models.chat import encode_train
        from ussafety.models.losses import response_hidden

        self.stored = {}
        if self.reference == "recompute" or not ctx.user_data:
            ctx.logs["lwf_precomputed_rows"] = 0.0
            return
        rows = [encode_train(ctx.tokenizer, ex, ctx.max_length) for ex in ctx.user_data]
        hidden_size = output_head(model).weight.shape[-1]
        size_mb = sum(response_counts(rows)) * hidden_size * 4 / 2**20
        if self.reference == "auto" and size_mb > PRECOMPUTE_BUDGET_MB:
            ctx.logs["lwf_precomputed_rows"] = 0.0
            return
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), adapters_disabled(model):
                for start in range(0, len(rows), ctx.batch_size):
                    batch = replay_batch(rows[start : start + ctx.batch_size], ctx.tokenizer.pad_token_id, device)
                    states, _ = response_hidden(model, batch)
                    counts = response_counts(rows[start : start + ctx.batch_size])
                    for key, part in zip(row_keys(batch), states.split(counts)):
                        self.stored[key] = part.cpu()
        finally:
            model.train(was_training)
        ctx.logs["lwf_precomputed_rows"] = float(len(self.stored))

    def reference_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The aligned model's logits ("kl") or hidden states ("hidden") on ``batch``'s
        response positions, from the stored states when every row has them."""
        import torch

        from ussafety.models.losses import response_hidden

        stored = [self.stored.get(k) for k in row_keys(batch)] if self.stored else [None]
        with torch.no_grad(), adapters_disabled(model):
            if all(s is not None for s in stored):
                device = batch["input_ids"].device
                states = torch.cat([s for s in stored if s is not None]).to(device)
            else:
                states, _ = response_hidden(model, batch)
            return output_head(model)(states) if self.variant == "kl" else states

    def distill_loss(
        self, model: Any, batch: dict[str, torch.Tensor], current: ResponseOutputs | None = None
    ) -> torch.Tensor:
        """The unweighted LwF term on ``batch`` (differentiable w.r.t. the LoRA weights).

        ``current``: the current model's outputs on ``batch`` when already computed (the
        trainer's forward pass, with its graph); otherwise they are computed here.
        """
        from ussafety.models.losses import response_hidden

        reference = self.reference_outputs(model, batch)
        if current is None:
            states, _ = response_hidden(model, batch)
            cur = output_head(model)(states) if self.variant == "kl" else states
        else:
            cur = current.logits if self.variant == "kl" else current.hidden
        if cur.shape[0] != reference.shape[0]:
            raise RuntimeError(
                f"lwf: {reference.shape[0]} reference positions for {cur.shape[0]} "
                "current ones (the batch was encoded differently?)"
            )
        if self.variant == "kl":
            return lwf_kl_loss(cur, reference, self.temperature)
        return lwf_hidden_loss(cur, reference)

    def loss(
        self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor, ctx: TrainContext
    ) -> torch.Tensor:
        shared = ctx.outputs if ctx.outputs is not None and ctx.batch is batch else None
        distill = self.distill_loss(model, batch, shared)
        ctx.logs["lwf_loss"] = float(distill.detach())
        return task_loss + self.lam * distill
