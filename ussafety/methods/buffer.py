"""A reservoir buffer (Vitter's algorithm R), the memory of the replay methods.

Mammoth (``utils/buffer.py``, the DER/DER++ reference code) keeps its rehearsal
buffer with reservoir sampling: the first ``capacity`` items fill the buffer, and the
``n``-th item seen after that replaces a uniformly chosen slot with probability
``capacity / n``. After any number ``n >= capacity`` of items, every item seen is in
the buffer with the same probability ``capacity / n`` (the buffer is a uniform random
``capacity``-subset of the stream), without knowing ``n`` in advance.

It also encodes replayed rows (:func:`replay_row`, :func:`replay_batch`): a safety
example is encoded once, like a training row, and its response can be capped at its
first ``k`` tokens. Why capping is cheap and exact where it acts: the model is causal, so
cutting the sequence after the ``k``-th response token leaves the outputs at the first
``k`` response positions unchanged; only the later positions (and their cost) go. A
replayed refusal carries ~75 response tokens against ~3 for an SST-2 row, so without a
cap one replayed row costs about as much as two user rows.

This module registers no method; :func:`ussafety.methods.load_all` imports it like
any other module, which is harmless.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ussafety.data.types import Example

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
Row = dict[str, list[int]]


class ReservoirBuffer(Generic[T]):
    """At most ``capacity`` items, a uniform sample of every item passed to :meth:`add`.

    ``rng`` (a seeded :class:`random.Random`) makes the choice reproducible.
    """

    def __init__(self, capacity: int, rng: random.Random):
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.rng = rng
        self.items: list[T] = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: T) -> bool:
        """Offer one item; returns whether it was kept (algorithm R)."""
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return True
        slot = self.rng.randrange(self.seen)  # uniform on 0 .. seen-1
        if slot < self.capacity:
            self.items[slot] = item
            return True
        return False

    def extend(self, items: list[T]) -> None:
        for item in items:
            self.add(item)

    def sample(self, k: int) -> list[T]:
        """``k`` distinct items drawn uniformly (all of them when ``k >= len``)."""
        return self.rng.sample(self.items, min(k, len(self.items)))


def cap_response(row: Row, response_tokens: int) -> Row:
    """``row`` (``input_ids``/``labels`` of :func:`ussafety.models.chat.encode_train`) cut
    after its first ``response_tokens`` response tokens; ``response_tokens <= 0``: unchanged.

    The response is the contiguous labelled tail of the row, so the cut keeps the prompt
    whole; by causality the kept positions' outputs are those of the full row.
    """
    from ussafety.models.chat import IGNORE

    labels = row["labels"]
    if response_tokens <= 0:
        return row
    first = next((i for i, t in enumerate(labels) if t != IGNORE), len(labels))
    end = first + response_tokens
    if end >= len(labels):
        return row
    return {"input_ids": row["input_ids"][:end], "labels": labels[:end]}


def replay_row(tokenizer: Any, example: Example, max_length: int, response_tokens: int) -> Row:
    """One replayed example, encoded as the trainer encodes a row, response capped."""
    from ussafety.models.chat import encode_train

    return cap_response(encode_train(tokenizer, example, max_length), response_tokens)


def replay_batch(rows: list[Row], pad_id: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Pad encoded replay rows into one batch on ``device`` (right padding, as in training)."""
    from ussafety.models.chat import collate

    return {k: v.to(device) for k, v in collate(rows, pad_id).items()}


def response_counts(rows: list[Row]) -> list[int]:
    """Labelled (response) tokens of each row: the rows of ``response_logits`` it yields."""
    from ussafety.models.chat import IGNORE

    return [sum(1 for t in r["labels"][1:] if t != IGNORE) for r in rows]
