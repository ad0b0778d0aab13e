"""Shared set-up for method tests that need an instruct model and an aligned base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ussafety.config import LoraConfig
from ussafety.data.types import Example
from ussafety.methods.base import TrainContext
from ussafety.models.loading import add_lora, tiny_random_model


def instruct_and_aligned(
    tmp_path: Path, safety: list[Example], user: list[Example]
) -> tuple[Any, Any, TrainContext, dict[str, torch.Tensor]]:
    """(PEFT model on an aligned base, tokenizer, ctx, instruct state dict).

    The "instruct" model is saved to ``tmp_path/instruct`` (ctx.instruct_dir); the
    aligned base is the same random model with its q/v weights perturbed, so the
    alignment vector W_aligned - W_instruct is known and non-zero.
    """
    instruct = tiny_random_model(0)
    instruct.model.save_pretrained(tmp_path / "instruct")
    inst_sd = {k: v.clone() for k, v in instruct.model.state_dict().items()}
    aligned = tiny_random_model(0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in aligned.model.named_parameters():
            if name.endswith(("q_proj.weight", "v_proj.weight")):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model = add_lora(aligned, LoraConfig())
    ctx = TrainContext(
        tokenizer=aligned.tokenizer,
        max_length=64,
        batch_size=4,
        safety_data=safety,
        user_data=user,
        instruct_dir=str(tmp_path / "instruct"),
    )
    return model, aligned.tokenizer, ctx, inst_sd
