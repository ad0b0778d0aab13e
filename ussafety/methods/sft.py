"""Plain LoRA fine-tuning on the customer's data: the baseline every method is compared to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ussafety.methods.base import Method, register


@register("sft")
@dataclass
class SFT(Method):
    """Supervised fine-tuning with the task loss only (no protection of safety)."""

    family: ClassVar[str] = "baseline"
