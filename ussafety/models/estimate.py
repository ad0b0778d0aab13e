"""Memory and time of one run before it runs, from the model's shapes alone.

Why: a 7B run that does not fit the GPU fails minutes in (after the weights are loaded),
and a study of thousands of runs needs its GPU-hours known before it starts. The shapes
come from the meta device (:mod:`ussafety.models.shape`), the device rates from
:mod:`ussafety.models.costs` (assumptions until ``benchmarks/gpu.py`` measures them), the
formulas (and the model behind them) from :mod:`ussafety.models.formulas`; this module adds
them up for one run (:func:`estimate_run`) and keeps the parts (:class:`RunEstimate`).
docs/gpu.md derives each term.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ussafety.models.costs import (
    BW_EFFICIENCY,
    CUDA_OVERHEAD_BYTES,
    DTYPE_BYTES,
    MFU,
    SFT,
    DeviceSpec,
    GiB,
    JudgeModel,
    MethodCost,
    device_spec,
)
from ussafety.models.formulas import (
    activation_bytes,
    forward_flops,
    generation_seconds,
    judge_cost,
    kv_cache_bytes,
    lora_train_flops,
)
from ussafety.models.shape import model_shape

__all__ = [
    "DEFAULT_TARGETS",
    "RunEstimate",
    "activation_bytes",
    "estimate_run",
    "forward_flops",
    "generation_seconds",
    "judge_cost",
    "kv_cache_bytes",
    "lora_train_flops",
]


# --------------------------------------------------------------------------- one run


@dataclass
class RunEstimate:
    """A run's estimated memory (bytes) and time (seconds), with the parts they add up from."""

    name: str
    model: str
    method: str
    device: str
    n_params: int
    n_lora_params: int
    gradient_checkpointing: bool
    # training memory
    weights_bytes: int
    lora_bytes: int  # LoRA weights + gradients + AdamW moments (16 B each)
    activations_bytes: int  # as configured (with or without checkpointing)
    activations_bytes_no_ckpt: int
    activations_bytes_ckpt: int
    logits_bytes: int
    method_bytes: int
    overhead_bytes: int
    # evaluation memory
    kv_cache_bytes: int
    judge_bytes: int
    # time
    train_rows: int
    train_tokens: int
    optimizer_steps: int
    train_flops: float
    train_s: float
    eval_s: float
    judge_s: float
    flops_per_s: float
    mem_bw_bytes_per_s: float
    training_key: str | None = None  # runs sharing it train once (the pipeline's SFT cache)
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def train_peak_bytes(self) -> int:
        if not self.train_rows:
            return 0
        return (
            self.weights_bytes
            + self.lora_bytes
            + self.activations_bytes
            + self.logits_bytes
            + self.method_bytes
            + self.overhead_bytes
        )

    @property
    def eval_peak_bytes(self) -> int:
        lora_weights = self.n_lora_params * 4
        return self.weights_bytes + lora_weights + self.kv_cache_bytes + self.judge_bytes + self.overhead_bytes

    @property
    def peak_bytes(self) -> int:
        return max(self.train_peak_bytes, self.eval_peak_bytes)

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.judge_s

    def fits(self, gpu_bytes: int) -> bool:
        """Whether the estimated peak fits in ``gpu_bytes`` of device memory."""
        return self.peak_bytes <= gpu_bytes

    def summary(self) -> str:
        """A few lines a person can check against a measurement."""
        g = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
        lines = [
            f"{self.name}: {self.model}, {self.method}, on {self.device}",
            f"  params {self.n_params / 1e9:.2f} B, LoRA {self.n_lora_params / 1e6:.1f} M",
            f"  training peak {g(self.train_peak_bytes)} = weights {g(self.weights_bytes)} + LoRA/grads/"
            f"AdamW {g(self.lora_bytes)} + activations {g(self.activations_bytes)} "
            f"({'checkpointed' if self.gradient_checkpointing else 'not checkpointed'}; "
            f"{g(self.activations_bytes_ckpt)} with, {g(self.activations_bytes_no_ckpt)} without) + "
            f"logits {g(self.logits_bytes)} + method {g(self.method_bytes)} + overhead {g(self.overhead_bytes)}",
            f"  evaluation peak {g(self.eval_peak_bytes)} (KV cache {g(self.kv_cache_bytes)}, judge "
            f"{g(self.judge_bytes)})",
            f"  time {self.total_s / 60:.1f} min = training {self.train_s / 60:.1f} ({self.optimizer_steps} "
            f"steps, {self.train_tokens / 1e6:.2f} M tokens) + generation {self.eval_s / 60:.1f} + judge "
            f"{self.judge_s / 60:.1f}, at {self.flops_per_s / 1e12:.0f} TFLOP/s and "
            f"{self.mem_bw_bytes_per_s / 1e12:.2f} TB/s (assumed until measured)",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            train_peak_bytes=self.train_peak_bytes,
            eval_peak_bytes=self.eval_peak_bytes,
            peak_bytes=self.peak_bytes,
            total_s=self.total_s,
        )
        return out


DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def estimate_run(
    model: Any,
    *,
    name: str = "run",
    dtype: str = "bfloat16",
    lora_r: int = 8,
    lora_targets: Sequence[str] = DEFAULT_TARGETS,
    batch_size: int = 8,
    grad_accum: int = 1,
    seq_len: int = 512,
    train_tokens_per_row: float | None = None,
    response_tokens_per_row: float | None = None,
    n_train_rows: int = 1000,
    epochs: float = 1.0,
    max_steps: int = -1,
    method: MethodCost = SFT,
    gradient_checkpointing: bool = False,
    flash_attention: bool = True,
    n_eval_prompts: int = 0,
    max_new_tokens: int = 128,
    prompt_tokens: int = 128,
    max_prompt_tokens: int | None = None,
    n_task_prompts: int = 0,
    task_max_new_tokens: int | None = None,
    task_prompt_tokens: int | None = None,
    task_max_prompt_tokens: int | None = None,
    eval_batch_size: int = 32,
    judges: Sequence[JudgeModel] = (),
    n_judged: int | None = None,
    device: str | DeviceSpec = "H200",
    flops_per_s: float | None = None,
    mem_bw_bytes_per_s: float | None = None,
    training_key: str | None = None,
    label: str | None = None,
) -> RunEstimate:
    """Estimate one run: LoRA fine-tuning on ``n_train_rows`` rows (0: no training) with the
    costs of ``method`` on top of SFT (:func:`ussafety.methods.costs.method_cost` gives a
    method's), and greedy evaluation of ``n_eval_prompts`` safety prompts plus
    ``n_task_prompts`` task items, judged by the LLM ``judges`` (``n_judged`` items, default
    all the safety prompts).

    ``seq_len`` (the trainer's ``max_length``) bounds the memory; ``train_tokens_per_row``
    (default ``seq_len``: an upper bound) and ``response_tokens_per_row`` (default half of
    it) set the time and the logits, since real rows are often much shorter than
    ``max_length``. ``prompt_tokens`` (mean) sets the generation time, ``max_prompt_tokens``
    (default: the mean) the KV cache peak: the HF path sorts prompts by length, so its first
    batch holds the longest ones. ``flops_per_s``/``mem_bw_bytes_per_s`` replace the
    device's assumed rates with measured ones. ``label`` names the method in the summaries
    (default ``method.name``; e.g. ``sft+ties`` for a merge after SFT). ``training_key``:
    runs that share one train once (the pipeline's SFT cache), see
    :func:`ussafety.study.gpu_method.estimate_grid`.
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype '{dtype}' (one of: {', '.join(DTYPE_BYTES)})")
    for what, value in (
        ("batch_size", batch_size),
        ("grad_accum", grad_accum),
        ("seq_len", seq_len),
        ("eval_batch_size", eval_batch_size),
    ):
        if value < 1:
            raise ValueError(f"{what} must be >= 1, got {value}")
    if n_train_rows < 0 or n_eval_prompts < 0 or n_task_prompts < 0 or epochs < 0:
        raise ValueError("row counts and epochs must be >= 0")
    dev = device_spec(device, flops_per_s=flops_per_s, mem_bw_bytes_per_s=mem_bw_bytes_per_s)
    shape = model_shape(model)
    nbytes = DTYPE_BYTES[dtype]
    n_lora = shape.lora_params(lora_r, lora_targets)
    adapted = shape.adapted_weight_params(lora_targets)
    weights = shape.n_params * nbytes

    # Training.
    t_row = float(min(train_tokens_per_row or seq_len, seq_len))
    r_row = float(min(response_tokens_per_row if response_tokens_per_row is not None else t_row / 2, t_row))
    rows = math.ceil(n_train_rows * (1 + method.extra_row_fraction)) if n_train_rows else 0
    if rows and max_steps > 0:
        steps = max_steps
        micro = max_steps * grad_accum
    else:
        micro = math.ceil(math.ceil(rows / batch_size) * epochs)
        steps = math.ceil(math.ceil(rows / (batch_size * grad_accum)) * epochs)
    step_rows = batch_size + method.replay_rows  # graphs alive at once
    act_kw: dict[str, Any] = dict(
        rows=step_rows,
        tokens=seq_len,
        act_bytes=nbytes,
        lora_r=lora_r,
        lora_targets=lora_targets,
        flash=flash_attention,
    )
    act_ckpt = activation_bytes(shape, checkpointing=True, **act_kw)
    act_full = activation_bytes(shape, checkpointing=False, **act_kw)
    resp_mem = step_rows * seq_len / 2  # memory: half of a full-length row is response
    logits = int(resp_mem * shape.vocab * (2 * nbytes + 8))
    method_mem = (8 * adapted if method.importance else 0) + method.lora_copies * 4 * n_lora
    if method.ref_logits:
        method_mem += int(batch_size * seq_len / 2 * shape.vocab * 4)
    row_flops = lora_train_flops(
        shape, tokens=int(t_row), head_tokens=int(r_row), lora_params=n_lora, checkpointing=gradient_checkpointing
    )
    row_fwd, _ = forward_flops(shape, tokens=int(t_row), head_tokens=int(r_row), lora_params=n_lora)
    train_flops, train_s = 0.0, 0.0
    if rows:
        per_micro = (batch_size + method.replay_rows) * row_flops
        per_micro += batch_size * row_fwd if method.nograd_forward else 0.0
        # A pass over the model cannot beat reading its weights once plus its kernel
        # launches: what bounds the step when the rows are short.
        pass_floor = weights / dev.mem_bw_bytes_per_s + shape.n_layers * dev.launch_overhead_s
        passes = (2 + int(gradient_checkpointing)) * (2 if method.replay_rows else 1) + int(method.nograd_forward)
        train_s = micro * max(per_micro / dev.flops_per_s, passes * pass_floor)
        if method.importance:  # the penalty is memory-bound: per micro-batch delta W is written
            # and read with F forward, and F, delta W and its gradient go through backward
            train_s += micro * 24 * adapted / dev.mem_bw_bytes_per_s
        extra_flops = (
            steps * method.ref_rows_per_step * row_flops
            + method.prepare_forward_rows * row_fwd
            + method.prepare_lora_backward_rows * row_flops
        )
        train_s += extra_flops / dev.flops_per_s
        if method.prepare_full_backward_rows:  # EWC/MAS importance, often one example at a time
            full = method.prepare_full_backward_rows * lora_train_flops(
                shape,
                tokens=int(t_row),
                head_tokens=int(r_row),
                lora_params=n_lora,
                checkpointing=gradient_checkpointing,
                full_backward=True,
            )
            extra_flops += full
            train_s += max(full / dev.flops_per_s, method.prepare_full_backward_passes * 3 * pass_floor)
        train_flops = micro * per_micro + extra_flops

    # Evaluation.
    p_task = task_prompt_tokens or prompt_tokens
    new_task = task_max_new_tokens or max_new_tokens
    gen_kw: dict[str, Any] = dict(
        batch_size=eval_batch_size,
        weights_bytes=weights + 4 * n_lora,
        dtype_bytes=nbytes,
        device=dev,
        lora_params=n_lora,
    )
    eval_s = generation_seconds(
        shape, n_prompts=n_eval_prompts, prompt_tokens=prompt_tokens, new_tokens=max_new_tokens, **gen_kw
    ) + generation_seconds(shape, n_prompts=n_task_prompts, prompt_tokens=p_task, new_tokens=new_task, **gen_kw)
    kv = 0
    if n_eval_prompts:
        kv = kv_cache_bytes(
            shape,
            rows=min(eval_batch_size, n_eval_prompts),
            tokens=(max_prompt_tokens or prompt_tokens) + max_new_tokens,
            dtype_bytes=nbytes,
        )
    if n_task_prompts:
        kv = max(
            kv,
            kv_cache_bytes(
                shape,
                rows=min(eval_batch_size, n_task_prompts),
                tokens=(task_max_prompt_tokens or p_task) + new_task,
                dtype_bytes=nbytes,
            ),
        )
    judge_mem, judge_s = 0, 0.0
    judged = n_eval_prompts if n_judged is None else n_judged
    for j in judges:  # every judge is loaded before generation and stays resident
        j_bytes, j_s = judge_cost(
            j,
            n_items=judged,
            prompt_tokens=prompt_tokens + max_new_tokens,
            max_prompt_tokens=(max_prompt_tokens or prompt_tokens) + max_new_tokens,
            dtype_bytes=nbytes,
            device=dev,
        )
        judge_mem += j_bytes
        judge_s += j_s

    return RunEstimate(
        name=name,
        model=str(model) if isinstance(model, (str, Path)) else shape.name,
        method=label or method.name,
        device=dev.name,
        n_params=shape.n_params,
        n_lora_params=n_lora,
        gradient_checkpointing=gradient_checkpointing,
        weights_bytes=weights,
        lora_bytes=16 * n_lora if rows else 0,
        activations_bytes=(act_ckpt if gradient_checkpointing else act_full) if rows else 0,
        activations_bytes_no_ckpt=act_full,
        activations_bytes_ckpt=act_ckpt,
        logits_bytes=logits if rows else 0,
        method_bytes=method_mem if rows else 0,
        overhead_bytes=CUDA_OVERHEAD_BYTES,
        kv_cache_bytes=kv,
        judge_bytes=judge_mem,
        train_rows=rows,
        train_tokens=int(micro * batch_size * t_row) if rows else 0,
        optimizer_steps=steps if rows else 0,
        train_flops=train_flops,
        train_s=train_s,
        eval_s=eval_s,
        judge_s=judge_s,
        flops_per_s=dev.flops_per_s,
        mem_bw_bytes_per_s=dev.mem_bw_bytes_per_s,
        training_key=training_key,
        assumptions={
            "train_tokens_per_row": t_row,
            "response_tokens_per_row": r_row,
            "prompt_tokens": prompt_tokens,
            "task_prompt_tokens": p_task,
            "mfu": MFU,
            "bw_efficiency": BW_EFFICIENCY,
            "launch_overhead_s": dev.launch_overhead_s,
            "cuda_overhead_bytes": CUDA_OVERHEAD_BYTES,
            "generation": "every prompt runs to max_new_tokens (upper bound)",
        },
    )
