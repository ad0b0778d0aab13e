"""Memory and time of a run before it runs, from the model's shapes alone.

Why: a 7B run that does not fit the GPU fails minutes in (after the weights are
loaded), and a study of thousands of runs needs its GPU-hours known before it is
started. Everything here is computed from a model config built on the **meta device**
(``AutoModelForCausalLM.from_config`` under ``torch.device("meta")``: every tensor has
a shape and no storage), so estimating a 7B run costs a second and no memory.

Memory (bytes, training peak):
  * weights: ``n_params x bytes(dtype)`` (tied embeddings counted once);
  * LoRA: ``sum over adapted Linear layers of r x (in + out)``, counted from the meta
    model's Linear shapes with PEFT's rule (a target names the last component of a
    module name); the LoRA weights are fp32 (PEFT's ``autocast_adapter_dtype``), so
    weights + gradients + AdamW's two moments are ``4 + 4 + 8 = 16`` bytes per
    trainable parameter. (Mixed-precision full fine-tuning also costs 16: bf16 weights
    and gradients, an fp32 master copy and two fp32 moments.);
  * activations, after Korthikanti et al. 2022, "Reducing Activation Recomputation in
    Large Transformer Models" (Sec. 4.1, Eq. 1: ``s b h (34 + 5 a s / h)`` bytes per
    layer for a GPT block in 16-bit), with the same accounting applied to a Llama block:
    no dropout masks, memory-efficient attention (SDPA/flash keep no ``s x s`` matrix),
    a gated MLP (gate and up outputs, the activation and the product: four
    ``intermediate``-wide tensors instead of GPT's two ``4h``-wide ones), RMSNorm and
    grouped K/V. Per token and layer, in elements:
    ``4 h + 2 q_dim + 2 kv_dim + 4 i + sum(r)`` (norm inputs 2h, the two norm outputs
    that feed the projections 2h, Q and the attention output 2 q_dim, K and V 2 kv_dim,
    the MLP 4i, LoRA's ``A x`` r per adapted module). Eager attention adds
    ``heads x s`` fp32 softmax outputs and their 16-bit copy per token and layer.
    With gradient checkpointing (per decoder layer, as HF and Unsloth do) only each
    layer's input (``h`` per token) is kept, plus one layer's activations while it is
    recomputed;
  * logits: the trainer applies the LM head on response positions only; per response
    token ``vocab x 12`` bytes (16-bit logits kept for the step, the fp32 log-softmax
    output saved by the loss, its fp32 and 16-bit gradients);
  * the method's own state (EWC/MAS: an fp32 importance per adapted base weight, and
    each step the fp32 ``delta W`` of every adapted layer saved for the backward: 8
    bytes per adapted weight, ~52 GB on Llama-2-7B with all linear layers adapted; their
    penalty also moves ~24 bytes per adapted weight through memory every micro-batch);
  * a fixed CUDA context and workspace allowance (:data:`CUDA_OVERHEAD_BYTES`).
Evaluation memory: weights + LoRA + KV cache
``batch x (prompt + new) x layers x 2 x kv_heads x head_dim x bytes`` + the LLM judge
(loaded before generation, so resident at the same time).

Time:
  * training FLOPs per token: forward ``F = 2 x (Linear MACs) + attention``; a full
    fine-tuning step costs ``3F`` (the usual ``6 N`` per token); with LoRA the frozen
    weights need no weight gradient but the backward still propagates input gradients
    through them, so a step costs ``2F`` (``4 N`` per token, 2/3 of full), plus ``F``
    when activations are recomputed (gradient checkpointing), plus the LoRA weight
    gradients (``2 x n_lora``). Attention's backward counts twice its forward. Seconds
    = FLOPs / ``flops_per_s``;
  * generation (HF ``generate``, greedy, full ``max_new_tokens``): prefill FLOPs /
    ``flops_per_s``, then per decode step the largest of its FLOPs / ``flops_per_s``,
    the bytes it must read (weights + KV cache) / ``mem_bw_bytes_per_s`` and a per-layer
    launch overhead. Decoding is bandwidth- or overhead-bound, never FLOP-bound, at
    these batch sizes.

The device numbers (:data:`DEVICES`) are **assumptions until measured**: peak dense
bf16 FLOP/s x 40% model FLOP utilisation, peak HBM bandwidth x 70%, 0.5 ms of kernel
launches per layer and decode step. ``benchmarks/gpu.py`` measures the real ones.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GiB = 1024 ** 3
MiB = 1024 ** 2

DTYPE_BYTES: dict[str, int] = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2,
                               "float16": 2, "fp16": 2, "auto": 2}
"""``auto`` is bf16 on CUDA (``ussafety.models``), and these estimates are for CUDA."""

CUDA_OVERHEAD_BYTES = 1 * GiB
"""CUDA context, cuBLAS/flash workspaces and allocator slack: an assumption (~0.5-1 GiB
is typical on Hopper), to be replaced by the difference between ``benchmarks/gpu.py``'s
measured peak and this module's estimate."""

# --------------------------------------------------------------------------- model shapes

_LLAMA2_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False)
_LLAMA2_13B = dict(model_type="llama", hidden_size=5120, intermediate_size=13824,
                   num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                   vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False)
_MISTRAL_7B_V02 = dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, max_position_embeddings=32768, sliding_window=None,
                       rope_theta=1e6, tie_word_embeddings=False)
_GEMMA_2B = dict(model_type="gemma", hidden_size=2048, intermediate_size=16384,
                 num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                 vocab_size=256000, max_position_embeddings=8192, tie_word_embeddings=True)
_LLAMA_GUARD_3_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         vocab_size=128256, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=False)
_SMOLLM2_135M = dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                     num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                     vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                     tie_word_embeddings=True)

KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    # The paper preset's chat models (params/study/paper.yaml) and their bases.
    "meta-llama/Llama-2-7b-chat-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": _MISTRAL_7B_V02,
    "google/gemma-2b-it": _GEMMA_2B,
    "google/gemma-2b": _GEMMA_2B,
    # LLM judges (params/presets/paper.yaml judges: llama_guard).
    "meta-llama/Llama-Guard-3-8B": _LLAMA_GUARD_3_8B,
    "cais/HarmBench-Llama-2-13b-cls": _LLAMA2_13B,
    # The CPU presets' model (the embedded GGUF's header: 576/1536/30/9/3/49152) and the
    # tests' 2-layer model (ussafety.models: 3 special tokens + 256 byte tokens).
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
    "embedded": _SMOLLM2_135M,
    "tiny-random": dict(model_type="llama", hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        vocab_size=259, max_position_embeddings=512, tie_word_embeddings=True),
}
"""Architecture of the models the presets name, written out so that no hub download is
needed. Values from each model's published ``config.json``."""

JUDGE_MODELS: dict[str, tuple[str, int, int]] = {
    "llama_guard": ("meta-llama/Llama-Guard-3-8B", 20, 8),
    "harmbench": ("cais/HarmBench-Llama-2-13b-cls", 1, 8),
}
"""LLM judge name -> (model, max_new_tokens, batch size), from ``ussafety.evaluate.judges.llm``.
The StrongREJECT judge grades with any local chat model, so it cannot be estimated by name."""

JUDGE_TEMPLATE_TOKENS = 350
"""Tokens a judge's template adds around the (prompt, response) pair (Llama Guard 3's
category list is ~300): an assumption."""


def model_config(model: Any) -> Any:
    """A ``transformers`` config for ``model``: a config (returned as is), a dict of config
    fields with ``model_type``, a name from :data:`KNOWN_SHAPES`, or a local folder with a
    ``config.json`` (read offline)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, PretrainedConfig):
        return model
    if isinstance(model, Mapping):
        fields = dict(model)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    name = str(model)
    if name in KNOWN_SHAPES:
        return model_config(KNOWN_SHAPES[name])
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    raise ValueError(f"unknown model '{name}': not one of the known shapes "
                     f"({', '.join(sorted(KNOWN_SHAPES))}) and not a folder with a config.json; "
                     "pass a local model folder or a transformers config")


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from a model, counted on its meta-device instance."""

    name: str
    model_type: str
    n_params: int                 # unique parameters (a tied head counted once)
    linear_shapes: dict[str, tuple[int, int]]  # every nn.Linear but the head: (out, in)
    head_params: int              # the output projection's in x out (tied or not)
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int

    @property
    def body_macs(self) -> int:
        """Multiply-accumulates per token through every Linear layer but the head."""
        return sum(o * i for o, i in self.linear_shapes.values())

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def adapted(self, targets: Iterable[str]) -> dict[str, tuple[int, int]]:
        """The Linear layers a LoRA with ``target_modules=targets`` adapts (PEFT's rule
        for a list: the module's name is the target or ends with ``.<target>``)."""
        targets = list(targets)
        if not targets:
            raise ValueError("LoRA target_modules is empty")
        out = {n: s for n, s in self.linear_shapes.items()
               if any(n == t or n.endswith("." + t) for t in targets)}
        if not out:
            kinds = sorted({n.rsplit(".", 1)[-1] for n in self.linear_shapes})
            raise ValueError(f"LoRA targets {targets} match no Linear layer of {self.name} "
                             f"(it has: {', '.join(kinds)})")
        return out

    def lora_params(self, r: int, targets: Iterable[str]) -> int:
        """Exact LoRA parameter count: ``r x (in + out)`` per adapted layer (A and B)."""
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        return sum(r * (i + o) for o, i in self.adapted(targets).values())

    def adapted_weight_params(self, targets: Iterable[str]) -> int:
        """Entries of the base weights LoRA adapts (what EWC/MAS keep an importance for)."""
        return sum(o * i for o, i in self.adapted(targets).values())


def _config_key(model: Any) -> str:
    from transformers import PretrainedConfig

    if isinstance(model, PretrainedConfig):
        return model.to_json_string(use_diff=False)
    if isinstance(model, Mapping):
        return json.dumps(dict(model), sort_keys=True, default=str)
    return str(model)


def model_shape(model: Any) -> ModelShape:
    """:class:`ModelShape` of ``model`` (anything :func:`model_config` takes), counted on
    the meta device; cached, since a grid asks for the same three models thousands of times."""
    key = _config_key(model)
    if isinstance(model, (str, Path)):
        return _shape_cached(key, str(model))
    return _shape_of(model, name=getattr(model, "_name_or_path", "") or "config")


@functools.lru_cache(maxsize=64)
def _shape_cached(key: str, name: str) -> ModelShape:
    return _shape_of(name, name=name)


def _shape_of(model: Any, name: str) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model_config(model)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(cfg)
    head = net.get_output_embeddings()
    linears = {n: (m.out_features, m.in_features) for n, m in net.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head}
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        name=name, model_type=text.model_type, n_params=sum(p.numel() for p in net.parameters()),
        linear_shapes=linears, head_params=head.in_features * head.out_features,
        n_layers=text.num_hidden_layers, hidden=text.hidden_size,
        intermediate=text.intermediate_size, n_heads=heads,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or heads, head_dim=head_dim,
        vocab=head.out_features)


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceSpec:
    """A GPU as the estimates see it. Every rate is an assumption until measured."""

    name: str
    memory_bytes: int             # total device memory (nvidia-smi's figure)
    flops_per_s: float            # effective dense bf16 FLOP/s: peak x assumed utilisation
    mem_bw_bytes_per_s: float     # effective HBM bandwidth: peak x assumed efficiency
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


def device_spec(device: str | DeviceSpec, *, flops_per_s: float | None = None,
                mem_bw_bytes_per_s: float | None = None) -> DeviceSpec:
    """``device`` (a :data:`DEVICES` key or a spec) with measured rates put in, if given."""
    if isinstance(device, str):
        if device not in DEVICES:
            raise ValueError(f"unknown device '{device}' (known: {', '.join(DEVICES)}); "
                             "pass a DeviceSpec for another one")
        device = DEVICES[device]
    changes = {k: v for k, v in (("flops_per_s", flops_per_s),
                                 ("mem_bw_bytes_per_s", mem_bw_bytes_per_s)) if v is not None}
    for k, v in changes.items():
        if not v > 0:
            raise ValueError(f"{k} must be > 0, got {v}")
    return dataclasses.replace(device, **changes) if changes else device


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class MethodCost:
    """What a continual-learning method adds to plain SFT, from its defaults
    (``ussafety/methods/<name>.py``; each docstring's "Memory"/"Compute" paragraph)."""

    trains_like_sft: bool = False    # only finalize acts: the pipeline reuses a cached SFT training
    replay_rows: int = 0             # rows forwarded and back-propagated with each micro-batch (graphs alive together)
    ref_rows_per_step: int = 0       # rows forwarded and back-propagated separately per optimizer step
    nograd_forward: bool = False     # one no-grad forward of the user batch per micro-batch
    ref_logits: bool = False         # keeps the reference's fp32 response logits for the step
    prepare_full_backward_rows: int = 0  # rows back-propagated into the base weights once
    prepare_full_backward_passes: int = 0  # in that many passes (per example, or per batch)
    prepare_forward_rows: int = 0    # rows forwarded once before training
    prepare_lora_backward_rows: int = 0  # rows back-propagated into the LoRA weights once
    extra_row_fraction: float = 0.0  # rows added to the training data
    importance: bool = False         # fp32 importance + fp32 delta W per adapted base weight
    lora_copies: int = 0             # fp32 copies of the LoRA parameters or their gradient


MERGES = ("merge_linear", "slerp", "task_arithmetic", "ties", "magmax")
"""Merges act in ``finalize`` only (on the trained adapter and the instruct weights)."""


def method_cost(name: str | None, params: Mapping[str, Any] | None = None) -> MethodCost:
    """The :class:`MethodCost` of method ``name`` with its ``params`` (only the ones that
    change the cost are read; the rest keep the method's defaults)."""
    p = dict(params or {})
    name = name or "sft"
    if name in ("sft", "safelora") or name in MERGES:
        return MethodCost(trains_like_sft=True)
    if name == "l2":  # r x r products per layer, or one copy of the LoRA parameters
        return MethodCost(lora_copies=1 if p.get("on") == "lora_params" else 0)
    if name in ("ewc", "mas"):
        batches = int(p.get("n_fisher" if name == "ewc" else "n_batches", 16))
        per_example = p.get("per", "example") == "example"
        return MethodCost(importance=True, prepare_full_backward_rows=8 * batches,
                          prepare_full_backward_passes=8 * batches if per_example else batches)
    if name == "lwf":
        return MethodCost(nograd_forward=True, ref_logits=p.get("variant", "kl") == "kl")
    if name in ("der", "derpp"):
        mb = int(p.get("minibatch_size", 8))
        store = p.get("targets", "store") == "store"
        return MethodCost(replay_rows=mb * (2 if name == "derpp" else 1),
                          prepare_forward_rows=int(p.get("buffer_size", 200)) if store else 0,
                          nograd_forward=not store)
    if name == "agem":
        return MethodCost(ref_rows_per_step=int(p.get("ref_batch_size", 8)), lora_copies=2)
    if name == "refresh":
        return MethodCost(prepare_lora_backward_rows=int(p.get("fisher_samples", 256)), lora_copies=1)
    if name == "safeinstr":
        return MethodCost(extra_row_fraction=float(p.get("fraction", 0.03)))
    if name == "lisa":  # an alignment step replaces a user step: same cost
        return MethodCost(lora_copies=1)
    if name == "ema":  # the running average: one fp32 copy of the LoRA parameters
        return MethodCost(lora_copies=1)
    raise ValueError(f"no cost model for method '{name}' (known: sft, l2, ewc, mas, lwf, der, "
                     f"derpp, agem, refresh, safeinstr, lisa, ema, safelora, {', '.join(MERGES)})")


# --------------------------------------------------------------------------- the formulas


def activation_bytes(shape: ModelShape, *, rows: int, tokens: int, act_bytes: int = 2,
                     lora_r: int = 0, lora_targets: Sequence[str] = (),
                     checkpointing: bool = False, flash: bool = True) -> int:
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
    return (2.0 * (shape.body_macs + lora_params) * tokens + 2.0 * shape.head_params * head_tokens
            + attn, attn)


def lora_train_flops(shape: ModelShape, *, tokens: int, head_tokens: int, lora_params: int,
                     checkpointing: bool, full_backward: bool = False) -> float:
    """FLOPs of one sequence's training step: forward ``F``, backward ``F`` (input
    gradients through the frozen weights; ``2F`` with base-weight gradients too, as in
    full fine-tuning or EWC's importance), ``F`` again under checkpointing, attention's
    backward at twice its forward, and the LoRA weight gradients."""
    fwd, attn = forward_flops(shape, tokens=tokens, head_tokens=head_tokens, lora_params=lora_params)
    passes = 2 + (1 if full_backward else 0) + (1 if checkpointing else 0)
    return passes * fwd + attn + 2.0 * lora_params * tokens


def generation_seconds(shape: ModelShape, *, n_prompts: int, prompt_tokens: int, new_tokens: int,
                       batch_size: int, weights_bytes: int, dtype_bytes: int, device: DeviceSpec,
                       lora_params: int = 0) -> float:
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
        step_flops = rows * (2.0 * (shape.body_macs + shape.head_params + lora_params)
                             + 4.0 * shape.n_layers * context * shape.q_dim)
        step_bytes = weights_bytes + kv_cache_bytes(shape, rows=rows, tokens=int(context),
                                                    dtype_bytes=dtype_bytes)
        step = max(step_flops / device.flops_per_s, step_bytes / device.mem_bw_bytes_per_s,
                   shape.n_layers * device.launch_overhead_s)
        total += count * (rows * prefill / device.flops_per_s + new_tokens * step)
    return total


def judge_cost(judge: str, *, n_items: int, prompt_tokens: int, dtype_bytes: int,
               device: DeviceSpec, max_prompt_tokens: int | None = None) -> tuple[int, float]:
    """(resident bytes, seconds) of the LLM judge ``judge`` on ``n_items`` (prompt, response)
    pairs of ``prompt_tokens`` tokens together on average (``max_prompt_tokens`` at most),
    its template added."""
    if judge not in JUDGE_MODELS:
        raise ValueError(f"no model known for judge '{judge}' (known: {', '.join(JUDGE_MODELS)})")
    model, new_tokens, batch = JUDGE_MODELS[judge]
    shape = model_shape(model)
    tokens = JUDGE_TEMPLATE_TOKENS + prompt_tokens
    weights = shape.n_params * dtype_bytes
    longest = JUDGE_TEMPLATE_TOKENS + (max_prompt_tokens or prompt_tokens)
    resident = weights + kv_cache_bytes(shape, rows=batch, tokens=longest + new_tokens,
                                        dtype_bytes=dtype_bytes)
    seconds = generation_seconds(shape, n_prompts=n_items, prompt_tokens=tokens,
                                 new_tokens=new_tokens, batch_size=batch, weights_bytes=weights,
                                 dtype_bytes=dtype_bytes, device=device)
    return resident, seconds


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
    lora_bytes: int                # LoRA weights + gradients + AdamW moments (16 B each)
    activations_bytes: int         # as configured (with or without checkpointing)
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
        return (self.weights_bytes + self.lora_bytes + self.activations_bytes + self.logits_bytes
                + self.method_bytes + self.overhead_bytes)

    @property
    def eval_peak_bytes(self) -> int:
        lora_weights = self.n_lora_params * 4
        return (self.weights_bytes + lora_weights + self.kv_cache_bytes + self.judge_bytes
                + self.overhead_bytes)

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
        out.update(train_peak_bytes=self.train_peak_bytes, eval_peak_bytes=self.eval_peak_bytes,
                   peak_bytes=self.peak_bytes, total_s=self.total_s)
        return out


DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def estimate_run(model: Any, *, name: str = "run", dtype: str = "bfloat16", lora_r: int = 8,
                 lora_targets: Sequence[str] = DEFAULT_TARGETS, batch_size: int = 8,
                 grad_accum: int = 1, seq_len: int = 512, train_tokens_per_row: float | None = None,
                 response_tokens_per_row: float | None = None, n_train_rows: int = 1000,
                 epochs: float = 1.0, max_steps: int = -1, method: str = "sft",
                 method_params: Mapping[str, Any] | None = None,
                 gradient_checkpointing: bool = False, flash_attention: bool = True,
                 n_eval_prompts: int = 0, max_new_tokens: int = 128, prompt_tokens: int = 128,
                 max_prompt_tokens: int | None = None, n_task_prompts: int = 0,
                 task_max_new_tokens: int | None = None, task_prompt_tokens: int | None = None,
                 task_max_prompt_tokens: int | None = None, eval_batch_size: int = 32,
                 judges: Sequence[str] = (), n_judged: int | None = None,
                 device: str | DeviceSpec = "H200", flops_per_s: float | None = None,
                 mem_bw_bytes_per_s: float | None = None,
                 training_key: str | None = None, label: str | None = None) -> RunEstimate:
    """Estimate one run: LoRA fine-tuning on ``n_train_rows`` rows (0: no training) and
    greedy evaluation of ``n_eval_prompts`` safety prompts plus ``n_task_prompts`` task
    items, judged by the LLM ``judges`` (:data:`JUDGE_MODELS` names; ``n_judged`` items,
    default all the safety prompts).

    ``seq_len`` (the trainer's ``max_length``) bounds the memory; ``train_tokens_per_row``
    (default ``seq_len``: an upper bound) and ``response_tokens_per_row`` (default half of
    it) set the time and the logits; real rows are often much shorter (see
    :data:`TASK_TOKENS`). ``prompt_tokens`` (mean) sets the generation time,
    ``max_prompt_tokens`` (default: the mean) the KV cache peak: the HF path sorts prompts
    by length, so its first batch holds the longest ones.
    ``flops_per_s``/``mem_bw_bytes_per_s`` replace the device's
    assumed rates with measured ones. ``label`` names the method in the summaries (default
    ``method``; e.g. ``sft+ties`` for a merge after SFT).
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype '{dtype}' (one of: {', '.join(DTYPE_BYTES)})")
    for what, value in (("batch_size", batch_size), ("grad_accum", grad_accum), ("seq_len", seq_len),
                        ("eval_batch_size", eval_batch_size)):
        if value < 1:
            raise ValueError(f"{what} must be >= 1, got {value}")
    if n_train_rows < 0 or n_eval_prompts < 0 or n_task_prompts < 0 or epochs < 0:
        raise ValueError("row counts and epochs must be >= 0")
    dev = device_spec(device, flops_per_s=flops_per_s, mem_bw_bytes_per_s=mem_bw_bytes_per_s)
    shape = model_shape(model)
    cost = method_cost(method, method_params)
    nbytes = DTYPE_BYTES[dtype]
    n_lora = shape.lora_params(lora_r, lora_targets)
    adapted = shape.adapted_weight_params(lora_targets)
    weights = shape.n_params * nbytes

    # Training.
    t_row = float(min(train_tokens_per_row or seq_len, seq_len))
    r_row = float(min(response_tokens_per_row if response_tokens_per_row is not None else t_row / 2, t_row))
    rows = math.ceil(n_train_rows * (1 + cost.extra_row_fraction)) if n_train_rows else 0
    if rows and max_steps > 0:
        steps = max_steps
        micro = max_steps * grad_accum
    else:
        micro = math.ceil(math.ceil(rows / batch_size) * epochs)
        steps = math.ceil(math.ceil(rows / (batch_size * grad_accum)) * epochs)
    step_rows = batch_size + cost.replay_rows  # graphs alive at once
    act_kw = dict(rows=step_rows, tokens=seq_len, act_bytes=nbytes, lora_r=lora_r,
                  lora_targets=lora_targets, flash=flash_attention)
    act_ckpt = activation_bytes(shape, checkpointing=True, **act_kw)
    act_full = activation_bytes(shape, checkpointing=False, **act_kw)
    resp_mem = step_rows * seq_len / 2  # memory: half of a full-length row is response
    logits = int(resp_mem * shape.vocab * (2 * nbytes + 8))
    method_mem = (8 * adapted if cost.importance else 0) + cost.lora_copies * 4 * n_lora
    if cost.ref_logits:
        method_mem += int(batch_size * seq_len / 2 * shape.vocab * 4)
    row_flops = lora_train_flops(shape, tokens=int(t_row), head_tokens=int(r_row), lora_params=n_lora,
                                 checkpointing=gradient_checkpointing)
    row_fwd, _ = forward_flops(shape, tokens=int(t_row), head_tokens=int(r_row), lora_params=n_lora)
    train_flops, train_s = 0.0, 0.0
    if rows:
        per_micro = (batch_size + cost.replay_rows) * row_flops
        per_micro += batch_size * row_fwd if cost.nograd_forward else 0.0
        # A pass over the model cannot beat reading its weights once plus its kernel
        # launches: what bounds the step when the rows are short.
        pass_floor = weights / dev.mem_bw_bytes_per_s + shape.n_layers * dev.launch_overhead_s
        passes = (2 + int(gradient_checkpointing)) * (2 if cost.replay_rows else 1) + int(cost.nograd_forward)
        train_s = micro * max(per_micro / dev.flops_per_s, passes * pass_floor)
        if cost.importance:  # the penalty is memory-bound: per micro-batch delta W is written
            # and read with F forward, and F, delta W and its gradient go through backward
            train_s += micro * 24 * adapted / dev.mem_bw_bytes_per_s
        extra_flops = (steps * cost.ref_rows_per_step * row_flops
                       + cost.prepare_forward_rows * row_fwd
                       + cost.prepare_lora_backward_rows * row_flops)
        train_s += extra_flops / dev.flops_per_s
        if cost.prepare_full_backward_rows:  # EWC/MAS importance, often one example at a time
            full = cost.prepare_full_backward_rows * lora_train_flops(
                shape, tokens=int(t_row), head_tokens=int(r_row), lora_params=n_lora,
                checkpointing=gradient_checkpointing, full_backward=True)
            extra_flops += full
            train_s += max(full / dev.flops_per_s, cost.prepare_full_backward_passes * 3 * pass_floor)
        train_flops = micro * per_micro + extra_flops

    # Evaluation.
    p_task = task_prompt_tokens or prompt_tokens
    new_task = task_max_new_tokens or max_new_tokens
    gen_kw = dict(batch_size=eval_batch_size, weights_bytes=weights + 4 * n_lora, dtype_bytes=nbytes,
                  device=dev, lora_params=n_lora)
    eval_s = (generation_seconds(shape, n_prompts=n_eval_prompts, prompt_tokens=prompt_tokens,
                                 new_tokens=max_new_tokens, **gen_kw)
              + generation_seconds(shape, n_prompts=n_task_prompts, prompt_tokens=p_task,
                                   new_tokens=new_task, **gen_kw))
    kv = 0
    if n_eval_prompts:
        kv = kv_cache_bytes(shape, rows=min(eval_batch_size, n_eval_prompts),
                            tokens=(max_prompt_tokens or prompt_tokens) + max_new_tokens,
                            dtype_bytes=nbytes)
    if n_task_prompts:
        kv = max(kv, kv_cache_bytes(shape, rows=min(eval_batch_size, n_task_prompts),
                                    tokens=(task_max_prompt_tokens or p_task) + new_task,
                                    dtype_bytes=nbytes))
    judge_mem, judge_s = 0, 0.0
    judged = n_eval_prompts if n_judged is None else n_judged
    for j in judges:  # every judge is loaded before generation and stays resident
        j_bytes, j_s = judge_cost(j, n_items=judged, prompt_tokens=prompt_tokens + max_new_tokens,
                                  max_prompt_tokens=(max_prompt_tokens or prompt_tokens) + max_new_tokens,
                                  dtype_bytes=nbytes, device=dev)
        judge_mem += j_bytes
        judge_s += j_s

    return RunEstimate(
        name=name, model=str(model) if isinstance(model, (str, Path)) else shape.name,
        method=label or method,
        device=dev.name, n_params=shape.n_params, n_lora_params=n_lora,
        gradient_checkpointing=gradient_checkpointing, weights_bytes=weights,
        lora_bytes=16 * n_lora if rows else 0,
        activations_bytes=(act_ckpt if gradient_checkpointing else act_full) if rows else 0,
        activations_bytes_no_ckpt=act_full, activations_bytes_ckpt=act_ckpt,
        logits_bytes=logits if rows else 0, method_bytes=method_mem if rows else 0,
        overhead_bytes=CUDA_OVERHEAD_BYTES, kv_cache_bytes=kv, judge_bytes=judge_mem,
        train_rows=rows, train_tokens=int(micro * batch_size * t_row) if rows else 0,
        optimizer_steps=steps if rows else 0, train_flops=train_flops,
        train_s=train_s, eval_s=eval_s, judge_s=judge_s,
        flops_per_s=dev.flops_per_s, mem_bw_bytes_per_s=dev.mem_bw_bytes_per_s,
        training_key=training_key,
        assumptions={"train_tokens_per_row": t_row, "response_tokens_per_row": r_row,
                     "prompt_tokens": prompt_tokens, "task_prompt_tokens": p_task,
                     "mfu": MFU, "bw_efficiency": BW_EFFICIENCY,
                     "launch_overhead_s": dev.launch_overhead_s,
                     "cuda_overhead_bytes": CUDA_OVERHEAD_BYTES,
                     "generation": "every prompt runs to max_new_tokens (upper bound)"})


# --------------------------------------------------------------------------- from a run config

TASK_TOKENS: dict[str, dict[str, int]] = {
    # train: mean tokens of a chat-formatted training row; response: of its response part;
    # prompt / prompt_max: mean and longest chat-formatted evaluation prompt of the task.
    "sst2": {"train": 75, "response": 3, "prompt": 90, "prompt_max": 125},
    "gsm8k": {"train": 250, "response": 145, "prompt": 105, "prompt_max": 200},
    "code": {"train": 135, "response": 70, "prompt": 230, "prompt_max": 525},
}
"""Typical token counts per task. Measured on the data mirror with SmolLM2's tokenizer and
chat template (``ussafety.models.chat``): 1000 training rows (means SST-2 66/2, GSM8K
218/127, Code Alpaca 118/62 tokens per row/response) and the committed test splits
(prompts: SST-2 mean 76, max 108; GSM8K 91, 173; HumanEval 202, 456), then raised ~15%
for the 32k-vocabulary Llama-2/Mistral tokenizers. A task not listed is estimated at
``max_length`` (an upper bound)."""
SAFETY_PROMPT_TOKENS = 85
"""Mean chat-formatted safety prompt, measured as above on the test split: harmful 77
(HarmBench's contextual behaviours carry long contexts), XSTest safe 40; +15%."""
SAFETY_PROMPT_MAX_TOKENS = 1200
"""The longest harmful test prompt (1025 tokens, a contextual behaviour) +15%: sets the
first generation batch's KV cache."""

EVAL_SPLIT_SIZES: dict[str, dict[str, int]] = {
    "test": {"harmful": 1021, "xstest": 200, "sst2": 664, "gsm8k": 500, "code": 144},
    "validation": {"harmful": 200, "xstest": 50, "sst2": 200, "gsm8k": 100, "code": 20},
}
"""Prompts per committed evaluation split (docs/splits.md; ``ussafety.data.splits``)."""


def config_dict(cfg: Any) -> dict[str, Any]:
    """A run config as a plain dict: its ``to_dict()`` (``RunConfig``), a pydantic
    ``model_dump()``, a dataclass's fields, or the mapping itself."""
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    if hasattr(cfg, "model_dump"):
        return cfg.model_dump(mode="json")
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    raise TypeError(f"not a run config: {type(cfg).__name__}")


def _get(d: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``; ``default`` where a key is missing or None."""
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return default
        node = node[part]
    return node


def training_key(cfg: Any) -> str:
    """What decides a plain-SFT training (seed, model, alignment, task, train settings),
    hashed: runs whose method trains like SFT and share it train once (the pipeline caches
    the adapter under an equivalent key)."""
    d = config_dict(cfg)
    parts = {k: d.get(k) for k in ("seed", "model", "align", "task", "train")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def estimate_config(cfg: Any, *, device: str | DeviceSpec = "H200", flops_per_s: float | None = None,
                    mem_bw_bytes_per_s: float | None = None, backend: str | None = None) -> RunEstimate:
    """:func:`estimate_run` for a resolved run config (a ``RunConfig`` or its dict).

    Reads the model, dtype (``auto`` = bf16), backend (Unsloth checkpoints activations,
    PEFT does not; ``auto`` is taken as Unsloth, and EWC/MAS as PEFT, as
    ``ussafety.backend`` decides on a GPU with Unsloth installed), LoRA, batch, length,
    data size, method and its parameters, and the evaluation: with ``eval.split`` test or
    validation every prompt of that committed split (:data:`EVAL_SPLIT_SIZES`), with
    ``sample`` the ``n_*`` fields; LLM judges (``llama_guard`` or ``llama_guard=<folder>``)
    judge the harmful prompts. ``backend`` overrides the config's.
    """
    cfg = config_dict(cfg)
    task = _get(cfg, "task.name")
    method = _get(cfg, "method.name") or "sft"
    backend = backend or _get(cfg, "model.backend", "auto")
    # EWC/MAS need base-weight gradients, so they run under PEFT (ussafety.backend refuses
    # Unsloth for them), and the trainer does not checkpoint activations under PEFT.
    ckpt = backend in ("unsloth", "auto") and method not in ("ewc", "mas")
    tokens = TASK_TOKENS.get(task, {})
    eval_task = _get(cfg, "eval.task") or task
    eval_tokens = TASK_TOKENS.get(eval_task, {})
    split = _get(cfg, "eval.split", "sample")
    if split in EVAL_SPLIT_SIZES:  # every prompt of the committed split
        sizes = EVAL_SPLIT_SIZES[split]
        n_harmful, n_xstest = sizes["harmful"], sizes["xstest"]
        n_task = sizes.get(eval_task, _get(cfg, "eval.n_task", 0)) if eval_task else 0
    else:  # "sample": n_per_harmful_set of each harmful set, n_xstest, n_task
        n_harmful = _get(cfg, "eval.n_per_harmful_set", 0) * len(_get(cfg, "eval.harmful_sets", []))
        n_xstest = _get(cfg, "eval.n_xstest", 0)
        n_task = _get(cfg, "eval.n_task", 0) if eval_task else 0
    judge_names = [str(j).partition("=")[0].strip() for j in _get(cfg, "eval.judges", [])]
    llm_judges = [j for j in judge_names if j in JUDGE_MODELS]
    trains = bool(task)
    merge = _get(cfg, "merge.name")
    sft_like = (method_cost(method, _get(cfg, "method.params")).trains_like_sft
                and (not merge or method_cost(merge, _get(cfg, "merge.params")).trains_like_sft))
    return estimate_run(
        _get(cfg, "model.name"), name=_get(cfg, "name", "run"), dtype=_get(cfg, "model.dtype", "auto"),
        lora_r=_get(cfg, "train.lora.r"), lora_targets=list(_get(cfg, "train.lora.target_modules")),
        batch_size=_get(cfg, "train.batch_size"), grad_accum=_get(cfg, "train.grad_accum", 1),
        seq_len=_get(cfg, "train.max_length"), train_tokens_per_row=tokens.get("train") or None,
        response_tokens_per_row=tokens.get("response"),
        n_train_rows=_get(cfg, "task.n_train", 0) if trains else 0,
        epochs=float(_get(cfg, "train.epochs", 1.0)), max_steps=_get(cfg, "train.max_steps", -1),
        method=method, method_params=_get(cfg, "method.params"), gradient_checkpointing=ckpt,
        n_eval_prompts=n_harmful + n_xstest, max_new_tokens=_get(cfg, "eval.max_new_tokens", 128),
        prompt_tokens=SAFETY_PROMPT_TOKENS, max_prompt_tokens=SAFETY_PROMPT_MAX_TOKENS,
        n_task_prompts=n_task, task_max_new_tokens=_get(cfg, "eval.task_max_new_tokens"),
        task_prompt_tokens=eval_tokens.get("prompt"), task_max_prompt_tokens=eval_tokens.get("prompt_max"),
        eval_batch_size=_get(cfg, "eval.batch_size", 16),
        judges=llm_judges, n_judged=n_harmful,
        device=device, flops_per_s=flops_per_s, mem_bw_bytes_per_s=mem_bw_bytes_per_s,
        training_key=training_key(cfg) if trains and sft_like else None,
        label=("base" if not trains else f"{method}+{merge}" if merge else method))


# --------------------------------------------------------------------------- many runs


@dataclass
class GridEstimate:
    """Many runs: GPU-hours in total (a training shared by several runs counted once) and
    each run's peak memory."""

    runs: list[RunEstimate]
    charged_train_s: list[float]  # per run: its training time, 0 when an earlier run trained it

    @property
    def total_s(self) -> float:
        return sum(self.charged_train_s) + sum(r.eval_s + r.judge_s for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        return self.total_s / 3600

    @property
    def peak_bytes(self) -> int:
        return max((r.peak_bytes for r in self.runs), default=0)

    def not_fitting(self, gpu_bytes: int) -> list[RunEstimate]:
        """The runs whose estimated peak exceeds ``gpu_bytes``."""
        return [r for r in self.runs if not r.fits(gpu_bytes)]

    def groups(self) -> list[dict[str, Any]]:
        """Runs grouped by (model, method, task settings that change the cost): count,
        GPU-hours charged, and the largest peak."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r, train_s in zip(self.runs, self.charged_train_s):
            g = out.setdefault((r.model, r.method), {"model": r.model, "method": r.method, "runs": 0,
                                                     "gpu_hours": 0.0, "peak_bytes": 0})
            g["runs"] += 1
            g["gpu_hours"] += (train_s + r.eval_s + r.judge_s) / 3600
            g["peak_bytes"] = max(g["peak_bytes"], r.peak_bytes)
        return list(out.values())

    def summary(self, gpu_bytes: int | None = None) -> str:
        """A table per (model, method) and the totals."""
        lines = [f"{len(self.runs)} runs, {self.gpu_hours:.1f} GPU-hours "
                 f"(device {self.runs[0].device if self.runs else '-'}; rates assumed until measured), "
                 f"largest peak {self.peak_bytes / GiB:.1f} GiB",
                 f"{'model':36s} {'method':20s} {'runs':>5s} {'GPU-h':>7s} {'peak GiB':>9s}"]
        for g in self.groups():
            flag = "  DOES NOT FIT" if gpu_bytes is not None and g["peak_bytes"] > gpu_bytes else ""
            lines.append(f"{g['model']:36s} {g['method']:20s} {g['runs']:5d} {g['gpu_hours']:7.2f} "
                         f"{g['peak_bytes'] / GiB:9.1f}{flag}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": len(self.runs), "gpu_hours": self.gpu_hours, "peak_bytes": self.peak_bytes,
                "groups": self.groups()}


def estimate_grid(runs: Iterable[RunEstimate]) -> GridEstimate:
    """Sum ``runs``: a training shared by several runs (same :attr:`RunEstimate.training_key`)
    is charged to the first of them only, as the pipeline trains it once."""
    runs = list(runs)
    seen: set[str] = set()
    charged = []
    for r in runs:
        if r.training_key is not None and r.training_key in seen:
            charged.append(0.0)
            continue
        if r.training_key is not None:
            seen.add(r.training_key)
        charged.append(r.train_s)
    return GridEstimate(runs=runs, charged_train_s=charged)


# --------------------------------------------------------------------------- refusing a run


class DoesNotFit(RuntimeError):
    """A run's estimated peak memory exceeds what the GPU has."""


def visible_gpu_bytes() -> int | None:
    """Free memory of the current CUDA device (``torch.cuda.mem_get_info``), None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def check_fits(estimate: RunEstimate, gpu_bytes: int | None = None) -> int:
    """Raise :class:`DoesNotFit` (saying what would help) when ``estimate`` cannot fit.

    ``gpu_bytes``: the memory to fit in; default, the visible GPU's free memory. Without
    CUDA it must be given (e.g. ``DEVICES["H100"].memory_bytes``). Returns the bytes used
    for the check.
    """
    if gpu_bytes is None:
        gpu_bytes = visible_gpu_bytes()
        if gpu_bytes is None:
            raise ValueError("no CUDA device is visible: pass gpu_bytes (e.g. "
                             "DEVICES['H200'].memory_bytes) to check a run against a GPU")
    if estimate.fits(gpu_bytes):
        return gpu_bytes
    g = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    phase = "training" if estimate.train_peak_bytes >= estimate.eval_peak_bytes else "evaluation"
    hints = []
    if phase == "training":
        if not estimate.gradient_checkpointing:
            hints.append(f"gradient checkpointing (model.backend: unsloth) would save "
                         f"{g(estimate.activations_bytes_no_ckpt - estimate.activations_bytes_ckpt)}")
        hints.append(f"halving train.batch_size (doubling grad_accum) saves about "
                     f"{g((estimate.activations_bytes + estimate.logits_bytes) // 2)}")
        if estimate.method_bytes > estimate.activations_bytes:
            hints.append(f"method '{estimate.method}' keeps {g(estimate.method_bytes)} of its own "
                         "(EWC/MAS: 8 bytes per adapted weight; adapt fewer modules to shrink it)")
    else:
        if estimate.judge_bytes:
            hints.append(f"the LLM judge takes {g(estimate.judge_bytes)}: judge in a separate pass")
        hints.append(f"a smaller eval.batch_size shrinks the KV cache ({g(estimate.kv_cache_bytes)})")
    raise DoesNotFit(f"run '{estimate.name}' ({estimate.model}, {estimate.method}) needs about "
                     f"{g(estimate.peak_bytes)} at its {phase} peak but the GPU has {g(gpu_bytes)}; "
                     + "; ".join(hints) + f".\n{estimate.summary()}")
