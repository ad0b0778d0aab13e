"""Response-only language-model loss, computed where it matters.

The output projection of a small model is a large part of its compute (SmolLM2-135M:
576 x 49152 of ~135M parameters). Running the decoder, then the head only on the
positions that carry a label, skips the vocabulary projection for every prompt and
padding token. Methods that need the model's distribution on responses (DER, LwF)
use :func:`response_logits` so that they see exactly the positions the loss sees.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ussafety.models.chat import IGNORE


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def response_hidden(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Last hidden states at positions that predict a response token, and those tokens."""
    base = _unwrap(model)
    decoder = base.get_decoder()
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    return hidden[:, :-1][mask], labels[mask]


def response_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (``[n_response_tokens, vocab]``) and target tokens on the response only."""
    h, targets = response_hidden(model, batch)
    return _unwrap(model).get_output_embeddings()(h), targets


class ResponseOutputs(NamedTuple):
    """One forward pass on the response positions: what the trainer computed the task
    loss from, kept for methods that need the same outputs (LwF)."""

    hidden: torch.Tensor  # [n_response_tokens, hidden]: last hidden states (after the final norm)
    logits: torch.Tensor  # [n_response_tokens, vocab]
    targets: torch.Tensor  # [n_response_tokens]: the response tokens they predict


def response_outputs(model: Any, batch: dict[str, torch.Tensor]) -> ResponseOutputs:
    """Hidden states, logits and targets on the response positions (one forward)."""
    h, targets = response_hidden(model, batch)
    return ResponseOutputs(h, _unwrap(model).get_output_embeddings()(h), targets)


def response_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of response logits (zero, with a graph, when there are none)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


def lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over response tokens (the task loss of every method)."""
    return response_cross_entropy(*response_logits(model, batch))


def reference_lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The textbook computation (full logits, shifted labels): used by tests to check
    that :func:`lm_loss` computes the same number."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE
    )
