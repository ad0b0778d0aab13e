"""``train.warmup_ratio`` is a share of the optimizer steps, whatever transformers does with it.

The trainer once passed the ratio as ``warmup_steps``: under transformers 4.x (the GPU extra's
range) that is a step count, so a ratio of 0.1 warmed up over a tenth of the first step;
under 5.x a float below 1 is read as a ratio but 1.0 as one step. The default (0) never
warmed up either way, so no record changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import get_scheduler

from ussafety.config import TrainConfig
from ussafety.train.trainer import total_steps, training_args, warmup_steps


@pytest.mark.parametrize(
    ("settings", "n_rows", "expected_total", "expected_warmup"),
    [
        ({}, 40, 10, 0),  # the default: no warmup, as before the fix
        ({"warmup_ratio": 0.1}, 40, 10, 1),
        ({"warmup_ratio": 0.25}, 41, 11, 3),  # a partial last batch is a step; the count rounds up
        ({"warmup_ratio": 1.0}, 40, 10, 10),  # the whole run, not one step
        ({"warmup_ratio": 0.5, "epochs": 2.0}, 40, 20, 10),
        ({"warmup_ratio": 0.5, "grad_accum": 2}, 40, 5, 3),
        ({"warmup_ratio": 0.5, "max_steps": 7}, 40, 7, 4),
    ],
)
def test_warmup_ratio_becomes_a_share_of_the_steps(
    settings: dict[str, float], n_rows: int, expected_total: int, expected_warmup: int, tmp_path: Path
) -> None:
    cfg = TrainConfig(**{"batch_size": 4, "epochs": 1.0, **settings})
    assert total_steps(cfg, n_rows) == expected_total
    assert warmup_steps(cfg, n_rows) == expected_warmup
    args = training_args(cfg, 0, str(tmp_path), n_rows)
    assert args.get_warmup_steps(expected_total) == expected_warmup  # what Trainer schedules with


def test_the_trainers_scheduler_ramps_over_the_warmup_share(tmp_path: Path) -> None:
    """The schedule ``Trainer`` builds from these arguments: linear warmup over the first
    ``ceil(ratio * steps)`` steps, then the decay (here the ratio 1.0 that 5.x reads as 1 step)."""
    cfg = TrainConfig(batch_size=4, epochs=1.0, lr=1.0, warmup_ratio=1.0)
    args = training_args(cfg, 0, str(tmp_path), 16)
    steps = total_steps(cfg, 16)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = get_scheduler("linear", opt, num_warmup_steps=args.get_warmup_steps(steps), num_training_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75])
