"""Batched greedy generation: the evaluation's hot path.

Prompts are sorted by length so each batch pads little, left-padded so that every
row's last token is its real last prompt token, and decoded with the KV cache.
Results come back in the caller's order. A test checks that this gives the same
tokens as one-prompt-at-a-time generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ussafety.data.types import Example
from ussafety.models.chat import prompt_text


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 64,
             batch_size: int = 16, progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy completions of already chat-formatted ``prompts``."""
    if not prompts:
        return []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out: list[str] = [""] * len(prompts)
    eos = tokenizer.eos_token_id
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, use_cache=True, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None,
                                 top_p=None, top_k=None)
            new = gen[:, enc["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
            if progress:
                progress(len(idx))
    finally:
        tokenizer.padding_side = saved_side
        model.train(was_training)
    return out


def generate_for(model: Any, tokenizer: Any, examples: list[Example], **kw: Any) -> list[str]:
    """Chat-format each Example's prompt with the model's template, then generate."""
    return generate(model, tokenizer, [prompt_text(tokenizer, ex) for ex in examples], **kw)
