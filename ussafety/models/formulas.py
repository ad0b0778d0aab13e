"""The formulas of the estimate: activations, KV cache, FLOPs, generation and judge time of a
model from its shapes (:mod:`ussafety.models.shape`) and a device's rates
(:mod:`ussafety.models.costs`).

Why apart from :mod:`ussafety.models.estimate`: each formula is a closed form a test checks on
its own (against a measured small model, or a hand count), while the estimate only adds them
up for one run.

Memory (training peak): bf16 weights; LoRA at 16 bytes per trainable parameter (fp32
weight, gradient and AdamW's two moments); activations after Korthikanti et al. 2022
(Sec. 4.1, Eq. 1) applied to a Llama block (no dropout masks, memory-efficient attention,
a gated MLP, grouped K/V), or with per-layer checkpointing one hidden state per token and
layer plus one layer being recomputed; logits on response positions only (``vocab x 12``
bytes per response token); the method's own state
(:class:`~ussafety.models.costs.MethodCost`); a CUDA allowance.
Evaluation peak: weights + LoRA + the KV cache of the longest first batch + the resident
LLM judge. Time: training FLOPs (LoRA: forward ``F``, backward ``F`` through the frozen
weights, ``F`` again under checkpointing) over the device's FLOP/s, never less than reading
the weights once per pass; greedy generation to ``max_new_tokens`` (an upper bound), each
decode step bound by FLOPs, bytes read or kernel launches, whichever is largest.
docs/gpu.md derives each term.
"""

from __future__ import annotations

from collections.abc import Sequence

from ussafety.models.costs import JUDGE_TEMPLATE_TOKENS, DeviceSpec, JudgeModel
from ussafety.models.shape import ModelShape, model_shape


def activation_bytes(
    shape: ModelShape,
    *,
    rows: int,
    tokens: int,
    act_bytes: int = 2,
    lora_r: int = 0,
    lora_targets: Sequence[str] = (),
    checkpointing: bool = False,
    flash: bool = True,
) -> int:
    """Activations a training forward keeps for its backward (see the module docstring)."""
    h = shape.hidden
    lora_width = (lora_r * len(shape.adapted(lora_targets)) // shape.n_layers) if lora_r else 0
    elems = 4 * h + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * shape.intermediate + lora_width
    per_token_layer = elems * act_bytes + (0 if flash else shape.n_heads * tokens * (4 + act_bytes))
    one_layer = rows * tokens * per_token_layer
    edges = rows * tokens * 2 * h * act_bytes  # embedding output and final norm
    if checkpointing:
        return rows * tokens * shape.n_layers * h * act_bytes + one_layer + edges
    return shape.n_layers * one_layer + edges


def kv_cache_bytes(shape: ModelShape, *, rows: int, tokens: int, dtype_bytes: int = 2) -> int:
    """``rows x tokens x layers x 2 (K and V) x kv_heads x head_dim x bytes``."""
    return rows * tokens * shape.n_layers * 2 * shape.kv_dim * dtype_bytes


def forward_flops(shape: ModelShape, *, tokens: int, head_tokens: int, lora_params: int = 0) -> tuple[float, float]:
    """(total, attention part) of one sequence's forward: ``2 x MACs`` through the body
    and LoRA for every token, the head for ``head_tokens``, and causal attention
    (``QK^T`` and ``AV``, half the square kept: ``2 x tokens^2 x q_dim`` per layer)."""
    attn = 2.0 * shape.n_layers * tokens * tokens * shape.q_dim
    return (2.0 * (shape.body_macs + lora_params) * tokens + 2.0 * shape.head_params * head_tokens + attn, attn)


def lora_train_flops(
    shape: ModelShape,
    *,
    tokens: int,
    head_tokens: int,
    lora_params: int,
    checkpointing: bool,
    full_backward: bool = False,
) -> float:
    """FLOPs of one sequence's training step: forward ``F``, backward ``F`` (input
    gradients through the frozen weights; ``2F`` with base-weight gradients too, as in
    full fine-tuning or EWC's importance), ``F`` again under checkpointing, attention's
    backward at twice its forward, and the LoRA weight gradients."""
    fwd, attn = forward_flops(shape, tokens=tokens, head_tokens=head_tokens, lora_params=lora_params)
    passes = 2 + (1 if full_backward else 0) + (1 if checkpointing else 0)
    return passes * fwd + attn + 2.0 * lora_params * tokens


def generation_seconds(
    shape: ModelShape,
    *,
    n_prompts: int,
    prompt_tokens: int,
    new_tokens: int,
    batch_size: int,
    weights_bytes: int,
    dtype_bytes: int,
    device: DeviceSpec,
    lora_params: int = 0,
) -> float:
    """Seconds of batched greedy generation of ``new_tokens`` for ``n_prompts`` prompts."""
    if n_prompts <= 0 or new_tokens <= 0:
        return 0.0
    total = 0.0
    full, rest = divmod(n_prompts, batch_size)
    for rows, count in ((batch_size, full), (rest, 1 if rest else 0)):
        if not count:
            continue
        prefill, _ = forward_flops(shape, tokens=prompt_tokens, head_tokens=1, lora_params=lora_params)
        context = prompt_tokens + new_tokens / 2  # the average step's KV length
        step_flops = rows * (
            2.0 * (shape.body_macs + shape.head_params + lora_params) + 4.0 * shape.n_layers * context * shape.q_dim
        )
        step_bytes = weights_bytes + kv_cache_bytes(shape, rows=rows, tokens=int(context), dtype_bytes=dtype_bytes)
        step = max(
            step_flops / device.flops_per_s,
            step_bytes / device.mem_bw_bytes_per_s,
            shape.n_layers * device.launch_overhead_s,
        )
        total += count * (rows * prefill / device.flops_per_s + new_tokens * step)
    return total


def judge_cost(
    judge: JudgeModel,
    *,
    n_items: int,
    prompt_tokens: int,
    dtype_bytes: int,
    device: DeviceSpec,
    max_prompt_tokens: int | None = None,
) -> tuple[int, float]:
    """(resident bytes, seconds) of the LLM judge ``judge`` on ``n_items`` (prompt, response)
    pairs of ``prompt_tokens`` tokens together on average (``max_prompt_tokens`` at most),
    its template added."""
    new_tokens, batch = judge.max_new_tokens, judge.batch_size
    shape = model_shape(judge.model)
    tokens = JUDGE_TEMPLATE_TOKENS + prompt_tokens
    weights = shape.n_params * dtype_bytes
    longest = JUDGE_TEMPLATE_TOKENS + (max_prompt_tokens or prompt_tokens)
    resident = weights + kv_cache_bytes(shape, rows=batch, tokens=longest + new_tokens, dtype_bytes=dtype_bytes)
    seconds = generation_seconds(
        shape,
        n_prompts=n_items,
        prompt_tokens=tokens,
        new_tokens=new_tokens,
        batch_size=batch,
        weights_bytes=weights,
        dtype_bytes=dtype_bytes,
        device=device,
    )
    return resident, seconds
