"""Batched greedy generation: the evaluation's hot path.

Each evaluation decodes 1,000-2,000 prompts greedily, and the study runs hundreds of
evaluations, so this loop decides how many runs the CPU budget affords. Two engines give
the same tokens (greedy decoding is deterministic; tests compare both with one prompt at
a time through HF ``generate``):

``slots`` (the default for ordinary decoder-only models)
    Our own decode loop over a slot cache. The key/value cache is preallocated as
    ``[slots, kv_heads, columns, head_dim]`` per layer and every row is written at its own
    column, so rows of different lengths share a batch without realignment. Three things
    make it fast:

    * **finished rows leave the batch** at once (a refusal that ends with EOS after 20
      tokens stops costing compute; the last active row is moved into its slot, a copy of
      one row's cache, not of the batch's);
    * **freed slots are refilled from the queue** (prompts sorted longest first), so the
      batch stays full and its matrix products stay large until the queue runs dry;
    * **the prompts' common token prefix** (the chat template's system turn, and for a
      task the instruction) is run once and copied into each row's cache, and only the
      rest of each prompt is prefilled; the output head runs on the last prompt
      position only.

``hf``
    HF ``model.generate`` on length-sorted, left-padded batches: the previous path, kept
    for models the slot engine does not handle (other attention kernels, sliding-window
    or recurrent layers, generation configs with logit processors) and as the
    benchmark's reference (``benchmarks/generation.py``).

Results come back in the caller's order, decoded without special tokens and stripped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from ussafety.data.types import Example
from ussafety.evaluate.slot_engine import SlotDecoder, hf_model
from ussafety.models.chat import prompt_text

Engine = Literal["auto", "slots", "hf"]

#: Rows decoded together when the caller gives no ``batch_size``; measured on the 2-core
#: CPU with SmolLM2-135M (benchmarks/generation.py, docs/speed.md): fp32 matrix products
#: reach most of their throughput by 64-128 rows, and more rows only add cache memory.
DEFAULT_BATCH_SIZE = 128
#: Key/value cache memory the slot engine may hold. Long prompts (HarmBench contextual
#: behaviours reach ~1,000 tokens) lower the number of rows decoded together instead of
#: growing the cache past this.
KV_BUDGET_BYTES = 3 * 2**30

#: Generation-config fields that change greedy choices; a model that sets any of them to
#: a non-neutral value is decoded by ``hf`` (which applies them), never by the slot loop.
_PROCESSOR_FIELDS: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "exponential_decay_length_penalty": None,
}

#: HF ``generate`` settings of plain greedy decoding; the sampling knobs are None so that a
#: model's generation config can neither switch sampling on nor warn about unused values.
_GREEDY: dict[str, Any] = dict(do_sample=False, num_beams=1, use_cache=True, temperature=None, top_p=None, top_k=None)


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    engine: Engine = "auto",
    threads: int | None = None,
    kv_budget_bytes: int = KV_BUDGET_BYTES,
    stats: dict[str, Any] | None = None,
) -> list[str]:
    """Greedy completions of already chat-formatted ``prompts``, in their order.

    ``batch_size``: rows decoded together (``None``: :data:`DEFAULT_BATCH_SIZE`); outputs do
    not depend on it. ``progress`` is called with the number of prompts just finished.
    ``engine``: ``auto`` picks ``slots`` whenever :func:`slot_engine_supported` says the
    model allows it, else ``hf``. ``threads``: torch intra-op threads for this call
    (restored after), ``None`` keeps the process setting. ``stats``, if given, is filled
    with what the call cost (for benchmarks and run timings): ``engine``, ``prompts``,
    ``prompt_tokens``, ``prefix_tokens`` (computed once, slots only), ``new_tokens``
    (answer tokens up to and including EOS: the useful work) and ``decoded_tokens``
    (row-steps the engine computed, padding rows of finished answers included).
    """
    if not prompts:
        return []
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if batch_size < 1 or max_new_tokens < 0:
        raise ValueError(f"batch_size must be >= 1 and max_new_tokens >= 0, got {batch_size} and {max_new_tokens}")
    if engine not in ("auto", "slots", "hf"):
        raise ValueError(f"unknown engine {engine!r} (auto, slots, hf)")
    if engine == "auto":
        engine = "slots" if slot_engine_supported(model) is None else "hf"
    elif engine == "slots" and (why := slot_engine_supported(model)) is not None:
        raise ValueError(f"the slot engine cannot decode this model: {why}")
    stats = stats if stats is not None else {}
    stats.update(engine=engine, prompts=len(prompts), prompt_tokens=0, prefix_tokens=0, new_tokens=0, decoded_tokens=0)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        if max_new_tokens == 0:
            if progress:
                progress(len(prompts))
            return [""] * len(prompts)
        if engine == "hf":
            return _generate_hf(model, tokenizer, list(prompts), max_new_tokens, batch_size, progress, stats)
        return SlotDecoder(model, tokenizer, max_new_tokens, batch_size, kv_budget_bytes, progress, stats).run(
            list(prompts)
        )
    finally:
        model.train(was_training)
        torch.set_num_threads(saved_threads)


def generate_for(model: Any, tokenizer: Any, examples: list[Example], **kw: Any) -> list[str]:
    """Chat-format each Example's prompt with the model's template, then generate."""
    return generate(model, tokenizer, [prompt_text(tokenizer, ex) for ex in examples], **kw)


def slot_engine_supported(model: Any) -> str | None:
    """Why the slot engine cannot decode ``model`` (``None``: it can).

    It drives the model's own forward with a 4-D boolean/additive mask and explicit
    position ids, so it needs a decoder-only model whose every layer is full attention
    through the ``sdpa`` or ``eager`` kernel, that accepts ``logits_to_keep``, and whose
    generation config adds no logit processor to greedy decoding.
    """
    base = hf_model(model)
    config = getattr(base, "config", None)
    if config is None:
        return "model has no config"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    impl = getattr(config, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        return f"attention implementation {impl!r} (sdpa or eager needed)"
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return f"layer types {sorted(set(layer_types))} (full attention only)"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return "forward() takes no logits_to_keep"
    gen = getattr(base, "generation_config", None)
    for name, neutral in _PROCESSOR_FIELDS.items():
        value = getattr(gen, name, neutral) if gen is not None else neutral
        if value is not None and value != neutral:
            return f"generation_config.{name}={value!r} changes greedy decoding"
    return None


def _generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int], None] | None,
    stats: dict[str, Any],
) -> list[str]:
    """HF ``generate`` on length-sorted, left-padded batches (left padding puts every
    row's last prompt token in the last column; sorting keeps the padding small). A
    batch decodes until its longest answer ends, finished rows included."""
    device = next(model.parameters()).device
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    stats["prompt_tokens"] = sum(lengths)
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out: list[str] = [""] * len(prompts)
    eos = tokenizer.eos_token_id
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            gen = model.generate(
                **enc, **_GREEDY, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            stats["decoded_tokens"] += new.numel()
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
                stats["new_tokens"] += _answer_length(new[row], eos)
            if progress:
                progress(len(idx))
    finally:
        tokenizer.padding_side = saved_side
    return out


def _answer_length(row: torch.Tensor, eos: int | None) -> int:
    """Tokens of a padded HF ``generate`` row up to and including its first EOS."""
    if eos is None:
        return row.numel()
    hits = (row == eos).nonzero()
    return int(hits[0, 0]) + 1 if hits.numel() else row.numel()
