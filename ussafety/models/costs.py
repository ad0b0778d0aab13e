"""What the estimates assume about the hardware, and the vocabulary of a method's cost.

Why a module of its own: these are the numbers a measurement replaces (``benchmarks/gpu.py``
reports ``effective_flops_per_s`` for exactly that), so they sit in one place, each with
where it comes from, apart from the formulas that use them (:mod:`ussafety.models.estimate`).
:class:`MethodCost` says in what ways a continual-learning method can cost more than plain
SFT; which method costs what is read from the method classes in
:mod:`ussafety.methods.costs` (models sit below methods, so this file names no method).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

GiB = 1024**3
MiB = 1024**2

DTYPE_BYTES: dict[str, int] = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}
"""``auto`` is bf16 on CUDA (``ussafety.models.loading.resolve_dtype``), and these
estimates are for CUDA."""

CUDA_OVERHEAD_BYTES = 1 * GiB
"""CUDA context, cuBLAS/flash workspaces and allocator slack: an assumption (~0.5-1 GiB
is typical on Hopper), to be replaced by the difference between ``benchmarks/gpu.py``'s
measured peak and the estimate."""


@dataclass(frozen=True)
class DeviceSpec:
    """A GPU as the estimates see it. Every rate is an assumption until measured."""

    name: str
    memory_bytes: int  # total device memory (nvidia-smi's figure)
    flops_per_s: float  # effective dense bf16 FLOP/s: peak x assumed utilisation
    mem_bw_bytes_per_s: float  # effective HBM bandwidth: peak x assumed efficiency
    launch_overhead_s: float = 5e-4  # per decoder layer and decode step (HF generate)


MFU = 0.4
"""Assumed model FLOP utilisation of LoRA training (Unsloth/flash attention, bf16)."""
BW_EFFICIENCY = 0.7
"""Assumed share of peak HBM bandwidth a decode step reaches."""

DEVICES: dict[str, DeviceSpec] = {
    # name: memory (MiB as nvidia-smi reports), peak dense bf16 FLOP/s, peak HBM bytes/s.
    "H200": DeviceSpec("H200", 143771 * MiB, 989e12 * MFU, 4.8e12 * BW_EFFICIENCY),
    "H100": DeviceSpec("H100 80GB SXM", 81559 * MiB, 989e12 * MFU, 3.35e12 * BW_EFFICIENCY),
    "A100-80GB": DeviceSpec("A100 80GB", 81920 * MiB, 312e12 * MFU, 2.039e12 * BW_EFFICIENCY),
    "A100-40GB": DeviceSpec("A100 40GB", 40960 * MiB, 312e12 * MFU, 1.555e12 * BW_EFFICIENCY),
    "L4": DeviceSpec("L4", 23034 * MiB, 121e12 * MFU, 300e9 * BW_EFFICIENCY),
    # T4 has no bf16: its fp16 tensor-core peak (ussafety's dtype auto would still pick bf16).
    "T4": DeviceSpec("T4", 15360 * MiB, 65e12 * MFU, 320e9 * BW_EFFICIENCY),
}


def device_spec(
    device: str | DeviceSpec, *, flops_per_s: float | None = None, mem_bw_bytes_per_s: float | None = None
) -> DeviceSpec:
    """``device`` (a :data:`DEVICES` key or a spec) with measured rates put in, if given."""
    if isinstance(device, str):
        if device not in DEVICES:
            raise ValueError(
                f"unknown device '{device}' (known: {', '.join(DEVICES)}); pass a DeviceSpec for another one"
            )
        device = DEVICES[device]
    changes: dict[str, Any] = {
        k: v for k, v in (("flops_per_s", flops_per_s), ("mem_bw_bytes_per_s", mem_bw_bytes_per_s)) if v is not None
    }
    for k, v in changes.items():
        if not v > 0:
            raise ValueError(f"{k} must be > 0, got {v}")
    return dataclasses.replace(device, **changes) if changes else device


def device_named(gpu_name: str | None) -> str | None:
    """The :data:`DEVICES` key for a CUDA device name (``torch.cuda.get_device_name``, e.g.
    "NVIDIA H200" or "NVIDIA A100-SXM4-80GB"), None when none matches. Words are compared
    whole, so an L40S is not taken for an L4."""
    if not gpu_name:
        return None
    words = set(re.split(r"[^A-Z0-9]+", gpu_name.upper()))
    for key in DEVICES:
        family, _, size = key.upper().partition("-")
        if family in words and (not size or size in words):
            return key
    return None


@dataclass(frozen=True)
class MethodCost:
    """What a continual-learning method adds to plain SFT (all zero: plain SFT).

    ``name`` labels it in summaries. The other fields are the ways a method can cost more,
    each read by :func:`ussafety.models.estimate.estimate_run`.
    """

    name: str = "sft"
    trains_like_sft: bool = True  # only finalize acts: the pipeline reuses a cached SFT training
    replay_rows: int = 0  # rows forwarded and back-propagated with each micro-batch (graphs alive together)
    ref_rows_per_step: int = 0  # rows forwarded and back-propagated separately per optimizer step
    nograd_forward: bool = False  # one no-grad forward of the user batch per micro-batch
    ref_logits: bool = False  # keeps the reference's fp32 response logits for the step
    prepare_full_backward_rows: int = 0  # rows back-propagated into the base weights once
    prepare_full_backward_passes: int = 0  # in that many passes (per example, or per batch)
    prepare_forward_rows: int = 0  # rows forwarded once before training
    prepare_lora_backward_rows: int = 0  # rows back-propagated into the LoRA weights once
    extra_row_fraction: float = 0.0  # rows added to the training data
    importance: bool = False  # fp32 importance + fp32 delta W per adapted base weight
    lora_copies: int = 0  # fp32 copies of the LoRA parameters or their gradient


SFT = MethodCost()
"""Plain SFT: what every other cost is counted on top of."""


@dataclass(frozen=True)
class JudgeModel:
    """An LLM judge as the estimates see it: its model (a :data:`~ussafety.models.shape.KNOWN_SHAPES`
    name or a folder), how many tokens it generates per verdict and its batch size."""

    name: str
    model: str
    max_new_tokens: int
    batch_size: int


JUDGE_TEMPLATE_TOKENS = 350
"""Tokens a judge's template adds around the (prompt, response) pair (Llama Guard 3's
category list is ~300): an assumption."""
