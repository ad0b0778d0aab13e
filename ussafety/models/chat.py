"""Turn Examples into token ids with the model's own chat template.

Training: the prompt part (system, history, user turn, assistant header) and the
response part are tokenised separately and concatenated, so the label mask is exact:
loss falls on response tokens (and the end-of-turn token) only.
Evaluation: the same template with ``add_generation_prompt=True``.
"""

from __future__ import annotations

from typing import Any

import torch

from ussafety.data.types import Example

IGNORE = -100


def prompt_text(tokenizer: Any, ex: Example) -> str:
    """The chat-formatted prompt, ending with the assistant header."""
    return tokenizer.apply_chat_template(ex.messages(with_response=False), tokenize=False, add_generation_prompt=True)


def encode_train(tokenizer: Any, ex: Example, max_length: int) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (``-100`` outside the response) for one example.

    Too long: the response is cut at the end first; if the prompt alone leaves fewer
    than 16 response tokens, the prompt is cut from the left (keeping its end, where
    the question is).
    """
    if ex.response is None:
        raise ValueError(f"{ex.source} row {ex.row}: training example has no response")
    prompt = prompt_text(tokenizer, ex)
    full = tokenizer.apply_chat_template(ex.messages(with_response=True), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            "chat template renders the prompt differently with and without the response; cannot mask the prompt exactly"
        )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    min_resp = min(16, len(r_ids))
    if len(p_ids) + min_resp > max_length:
        p_ids = p_ids[-(max_length - min_resp) :]
    r_ids = r_ids[: max_length - len(p_ids)]
    return {"input_ids": p_ids + r_ids, "labels": [IGNORE] * len(p_ids) + r_ids}


def collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic right padding to the longest row of the batch."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Collator:
    """Picklable collator for the HF Trainer (it only keeps the pad id)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features], self.pad_id)


def encode_batch(
    tokenizer: Any, examples: list[Example], max_length: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Encode and pad a list of training examples into one batch on ``device``."""
    batch = collate([encode_train(tokenizer, ex, max_length) for ex in examples], tokenizer.pad_token_id)
    return {k: v.to(device) for k, v in batch.items()}
