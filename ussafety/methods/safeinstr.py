"""SafeInstr: mix a small share of safety examples into the customer's training data."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from ussafety.data.types import Example
from ussafety.methods.base import Method, TrainContext, register


def n_safety_rows(n_user: int, fraction: float) -> int:
    """``round(fraction * n_user)``, at least 1 when ``fraction > 0``."""
    if fraction < 0:
        raise ValueError(f"safeinstr: fraction must be >= 0, got {fraction}")
    if fraction == 0:
        return 0
    return max(1, round(fraction * n_user))


def draw(pool: list[Example], n: int, rng: random.Random) -> list[Example]:
    """``n`` examples from ``pool`` without replacement; if ``n > len(pool)``, whole
    shuffled passes over the pool first, then a sample of the remainder."""
    if n > 0 and not pool:
        raise ValueError("safeinstr needs safety data, and the context has none")
    out: list[Example] = []
    while n - len(out) >= len(pool) > 0:
        out += rng.sample(pool, len(pool))
    return out + rng.sample(pool, n - len(out))


@register("safeinstr")
@dataclass
class SafeInstr(Method):
    """Safety-tuned fine-tuning (Bianchi et al. 2024, "Safety-Tuned LLaMAs: Lessons
    from improving the safety of large language models that follow instructions"):
    add ``fraction * len(ctx.user_data)`` safety examples (harmful prompt -> refusal,
    drawn from ``ctx.safety_data`` with ``ctx.rng``; rounded, at least one) to the
    training rows. The objective is unchanged.

    ``fraction = 0.03``: the paper's headline finding that adding about 3% safety
    examples to the instruction-tuning data markedly improves safety without hurting
    helpfulness much (its mixes add 100 to 2,000 safety examples to 20,000 rows).

    Memory: none beyond the added rows (``fraction`` x the training set).
    """

    family: ClassVar[str] = "baseline"

    fraction: float = 0.03

    def extra_data(self, ctx: TrainContext) -> list[Example]:
        rows = draw(ctx.safety_data, n_safety_rows(len(ctx.user_data), self.fraction), ctx.rng)
        ctx.logs["safeinstr_rows"] = float(len(rows))
        return rows
