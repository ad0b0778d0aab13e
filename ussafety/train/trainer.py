"""One trainer for every method: the Hugging Face ``Trainer`` with method hooks.

``compute_loss`` lets the methods replace the batch (``step_batch``), runs the one
forward pass of the step (kept on ``ctx.outputs`` for methods that need the current
outputs, so none runs the model on the same batch again) and asks the methods for the
objective (task loss + whatever they add); a callback calls ``after_backward`` just
before each optimizer step (gradients of all accumulation micro-batches are in place)
and ``after_step`` right after it. Progress bars (shown under :mod:`ussafety.progress`'s
rule), seeding, gradient accumulation and multi-GPU (accelerate) come from ``Trainer``.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from ussafety.config import TrainConfig
from ussafety.data.types import Example
from ussafety.methods.base import Method, TrainContext
from ussafety.models.chat import Collator, encode_train
from ussafety.models.losses import response_cross_entropy, response_outputs
from ussafety.progress import progress_enabled


class EncodedDataset(Dataset):
    """Token ids and labels for each training example, encoded once."""

    def __init__(self, tokenizer: Any, examples: list[Example], max_length: int):
        self.rows = [encode_train(tokenizer, ex, max_length) for ex in examples]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]

    @property
    def lengths(self) -> list[int]:
        return [len(r["input_ids"]) for r in self.rows]

    def response_tokens(self) -> int:
        return sum(sum(1 for t in r["labels"] if t != -100) for r in self.rows)


class _HookCallback(TrainerCallback):
    def __init__(self, hooks: list[Method], ctx: TrainContext):
        self.hooks, self.ctx = hooks, ctx

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        for h in self.hooks:
            h.after_backward(model, self.ctx)

    def on_step_end(self, args, state, control, model=None, **kw):
        self.ctx.step = state.global_step
        for h in self.hooks:
            h.after_step(model, self.ctx)


class MethodTrainer(Trainer):
    """``Trainer`` whose loss is the methods' objective on the response-only task loss."""

    def __init__(self, *args: Any, hooks: list[Method], ctx: TrainContext, **kw: Any):
        super().__init__(*args, **kw)
        self.hooks, self.ctx = hooks, ctx
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for h in self.hooks:
            inputs = h.step_batch(inputs, self.ctx)
        self.ctx.batch = inputs
        self.ctx.outputs = response_outputs(model, inputs)
        task = response_cross_entropy(self.ctx.outputs.logits, self.ctx.outputs.targets)
        loss = task
        for h in self.hooks:
            loss = h.loss(model, inputs, loss, self.ctx)
        self.ctx.logs["task_loss"] = float(task.detach())
        return (loss, None) if return_outputs else loss

    def training_step(self, *args: Any, **kw: Any) -> torch.Tensor:
        try:
            return super().training_step(*args, **kw)
        finally:  # the outputs hold the step's graph: never keep them past the step
            self.ctx.outputs = None


@dataclass
class TrainResult:
    model: Any
    wall_s: float
    steps: int
    train_rows: int
    response_tokens: int
    log_history: list[dict[str, Any]]


def total_steps(cfg: TrainConfig, n_rows: int) -> int:
    """Optimizer steps of a training on ``n_rows`` rows: ``max_steps`` when set, else the
    epochs of ``ceil(n_rows / (batch_size * grad_accum))`` steps (at least one), which is
    the count ``Trainer`` itself schedules (``ceil(ceil(n / b) / a) == ceil(n / (b * a))``)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = max(1, math.ceil(n_rows / (cfg.batch_size * cfg.grad_accum)))
    return math.ceil(per_epoch * cfg.epochs)


def warmup_steps(cfg: TrainConfig, n_rows: int) -> int:
    """``warmup_ratio`` as a whole number of steps, ``ceil(ratio * total steps)``.

    Why not hand the ratio to ``TrainingArguments``: its meaning there depends on the
    transformers version. Up to 4.x ``warmup_steps`` is an int count (a ratio of 0.1 passed
    there warms up over a fraction of the first step) and the ratio has its own field; from
    5.0 that field is gone and a float ``warmup_steps`` below 1 is read as a ratio, but 1.0
    (a valid ratio: warm up over the whole run) as one step. The pinned range spans both
    (the GPU extra needs 4.x), so the count is computed here, with the rounding 5.x uses.
    """
    return math.ceil(total_steps(cfg, n_rows) * cfg.warmup_ratio)


def training_args(cfg: TrainConfig, seed: int, output_dir: str, n_rows: int) -> TrainingArguments:
    """The ``TrainingArguments`` of a training on ``n_rows`` encoded rows under ``cfg``."""
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=warmup_steps(cfg, n_rows),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=max(1, min(10, n_rows // cfg.batch_size)),
        save_strategy="no",
        report_to=cfg.report_to or "none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress_enabled(),  # the package's one rule (ussafety.progress)
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )


def finalize_all(model: Any, hooks: list[Method], ctx: TrainContext) -> Any:
    """Every hook's ``finalize`` in order (a training method's, then a merge's)."""
    for h in hooks:
        model = h.finalize(model, ctx)
    return model


def fine_tune(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    cfg: TrainConfig,
    hooks: list[Method],
    ctx: TrainContext,
    seed: int = 0,
    finalize: bool = True,
) -> TrainResult:
    """Train the LoRA model on ``examples`` (+ the methods' extra rows) with their hooks.

    Returns the model after every hook's ``finalize`` (with ``finalize=False``, the
    trained model before it, so a caller can keep the raw adapter first).
    """
    set_seed(seed)
    rows = list(examples)
    for h in hooks:
        rows += h.extra_data(ctx)
    data = EncodedDataset(tokenizer, rows, cfg.max_length)
    ctx.total_steps = total_steps(cfg, len(data))
    start = time.perf_counter()
    for h in hooks:
        h.prepare(model, ctx)
    ctx.logs["prepare_s"] = round(time.perf_counter() - start, 3)
    with tempfile.TemporaryDirectory(prefix="ussafety-train-") as tmp:
        trainer = MethodTrainer(
            model=model,
            args=training_args(cfg, seed, tmp, len(data)),
            train_dataset=data,
            data_collator=Collator(tokenizer.pad_token_id),
            hooks=hooks,
            ctx=ctx,
            callbacks=[_HookCallback(hooks, ctx)],
        )
        trainer.train()
        history = list(trainer.state.log_history)
        steps = trainer.state.global_step
    model.eval()
    if finalize:
        model = finalize_all(model, hooks, ctx)
    return TrainResult(
        model=model,
        wall_s=time.perf_counter() - start,
        steps=steps,
        train_rows=len(data),
        response_tokens=data.response_tokens(),
        log_history=history,
    )
