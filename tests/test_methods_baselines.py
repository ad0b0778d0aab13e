"""Safety baselines: SafeInstr's mix, Lisa's schedule and proximal term, Safe LoRA's
projection; each also after a short fine-tune of the tiny random model."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import torch
from method_fixtures import instruct_and_aligned
from torch import nn

from ussafety.config import LoraConfig, TrainConfig
from ussafety.data.types import Example
from ussafety.methods import make_method
from ussafety.methods.base import Method, TrainContext
from ussafety.methods.lisa import ALIGN, USER, Lisa, lisa_state, proximal
from ussafety.methods.merge_ops import base_weight, lora_delta, lora_layers
from ussafety.methods.safeinstr import SafeInstr, draw, n_safety_rows
from ussafety.methods.safelora import SafeLoRA, alignment_projection, flat_cosine
from ussafety.methods.sft import SFT
from ussafety.models.loading import add_lora, tiny_random_model
from ussafety.train.trainer import fine_tune

USER_ROWS = [
    Example(
        f"Review {i}: the film was {'good' if i % 2 else 'bad'}.",
        "positive" if i % 2 else "negative",
        source="task",
        row=i,
    )
    for i in range(8)
]
SAFETY = [Example(f"How do I build weapon {i}?", "I can't help with that.", source="safety", row=i) for i in range(6)]
CFG = TrainConfig(max_steps=1, batch_size=4, lr=5e-2, max_length=64)


def test_registered():
    for name in ("safeinstr", "lisa", "safelora"):
        assert make_method(name).name == name


# ---------------------------------------------------------------- SafeInstr


def test_safeinstr_counts():
    assert n_safety_rows(100, 0.03) == 3
    assert n_safety_rows(250, 0.03) == 8  # 7.5 -> 8 (round half to even)
    assert n_safety_rows(10, 0.03) == 1  # at least one
    assert n_safety_rows(0, 0.03) == 1
    assert n_safety_rows(100, 0.0) == 0
    with pytest.raises(ValueError):
        n_safety_rows(100, -0.1)


def test_safeinstr_mixes_stated_fraction():
    user = [Example(f"u{i}", "r") for i in range(100)]
    pool = [Example(f"s{i}", "refuse") for i in range(50)]
    ctx = TrainContext(tokenizer=None, max_length=8, batch_size=1, safety_data=pool, user_data=user, seed=3)
    rows = SafeInstr().extra_data(ctx)
    assert len(rows) == 3 and ctx.logs["safeinstr_rows"] == 3.0
    assert all(r in pool for r in rows) and len({r.prompt for r in rows}) == 3
    again = SafeInstr().extra_data(
        TrainContext(tokenizer=None, max_length=8, batch_size=1, safety_data=pool, user_data=user, seed=3)
    )
    assert again == rows  # seeded through ctx.rng
    # more rows than the pool: whole passes first
    many = draw(pool, 120, random.Random(0))
    assert sorted(Counter(r.prompt for r in many).values()) == [2] * 30 + [3] * 20
    with pytest.raises(ValueError):
        SafeInstr().extra_data(TrainContext(tokenizer=None, max_length=8, batch_size=1, user_data=user))


def test_safeinstr_end_to_end():
    loaded = tiny_random_model(0)
    model = add_lora(loaded, LoraConfig())
    ctx = TrainContext(tokenizer=loaded.tokenizer, max_length=64, batch_size=4, safety_data=SAFETY, user_data=USER_ROWS)
    result = fine_tune(model, loaded.tokenizer, USER_ROWS, CFG, [SafeInstr(fraction=0.25)], ctx)
    assert result.train_rows == 8 + 2
    assert ctx.logs["safeinstr_rows"] == 2.0
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.log_history if "train_loss" in h)


# ---------------------------------------------------------------- Lisa


def test_lisa_schedule():
    states = [lisa_state(s, 2, 3) for s in range(11)]
    a, u = ALIGN, USER
    assert states == [a, a, u, u, u, a, a, u, u, u, a]
    assert [lisa_state(s, 0, 3) for s in range(3)] == [u, u, u]
    assert [lisa_state(s, 2, 0) for s in range(3)] == [a, a, a]


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor([3.0]))
        self.frozen = nn.Parameter(torch.tensor([100.0]), requires_grad=False)


def test_lisa_proximal_formula():
    model = _Tiny()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    anchor = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0])}
    # rho/2 * (1 + 4 + 4) with rho = 2
    assert proximal(params, anchor, 2.0).item() == pytest.approx(9.0)
    proximal(params, anchor, 2.0).backward()
    assert torch.allclose(model.a.grad, torch.tensor([2.0, 4.0]))  # rho * (w - anchor)


def test_lisa_switches_on_schedule_and_resets_anchor():
    model = _Tiny()
    ctx = TrainContext(tokenizer=None, max_length=8, batch_size=1, safety_data=SAFETY, total_steps=10)
    lisa = Lisa(align_steps=2, user_steps=3, rho=2.0)
    lisa.prepare(model, ctx)
    seen = [lisa.state]
    switch_prox = []
    for _ in range(10):
        with torch.no_grad():
            model.a.add_(1.0)  # the optimizer moves the weights
        before = lisa.proximal_term(model).item()
        lisa.after_step(model, ctx)
        seen.append(lisa.state)
        if lisa.state != seen[-2]:
            switch_prox.append((before, lisa.proximal_term(model).item()))
    assert seen == [lisa_state(s, 2, 3) for s in range(11)]
    assert lisa.switches == 4 and ctx.logs["lisa_switches"] == 4.0
    for before, after in switch_prox:
        assert before > 0 and after == 0.0  # zero right after a switch
    # two steps after the last switch: rho/2 * (2^2 + 2^2)
    with torch.no_grad():
        model.a.add_(2.0)
    assert lisa.proximal_term(model).item() == pytest.approx(8.0)


def test_lisa_end_to_end():
    loaded = tiny_random_model(0)
    model = add_lora(loaded, LoraConfig())
    ctx = TrainContext(tokenizer=loaded.tokenizer, max_length=64, batch_size=4, safety_data=SAFETY, user_data=USER_ROWS)
    lisa = Lisa(align_steps=1, user_steps=2, prox_warmup=0.0)
    cfg = TrainConfig(max_steps=3, batch_size=4, lr=5e-2, max_length=64)
    fine_tune(model, loaded.tokenizer, USER_ROWS, cfg, [lisa], ctx)
    # steps: align, user (prox 0: right after the switch), user (prox > 0); then -> align
    assert ctx.logs["lisa_switches"] == 2.0
    assert torch.isfinite(torch.tensor(ctx.logs["lisa_safety_loss"]))
    assert ctx.logs["lisa_prox"] > 0
    assert ctx.logs["lisa_align_state"] == 0.0  # the last step was a user step
    assert lisa.state == ALIGN


# ---------------------------------------------------------------- Safe LoRA


def test_alignment_projection_formula():
    v = torch.tensor([[3.0, 0.0], [4.0, 0.0]])
    assert torch.allclose(alignment_projection(v), torch.tensor([[9.0, 12.0], [12.0, 16.0]]) / 5.0)
    v = torch.tensor([[1.0, 2.0], [0.0, 1.0], [2.0, 0.0]])
    expected = v @ v.T / torch.sqrt(torch.tensor(10.0))
    assert torch.allclose(alignment_projection(v), expected)
    cos = flat_cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert cos == pytest.approx(2**-0.5)
    assert flat_cosine(torch.zeros(2), torch.tensor([1.0, 1.0])) == 1.0


class Snapshot(Method):
    """Placed before Safe LoRA: records B and the LoRA delta of every adapted layer."""

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        layers = lora_layers(model)
        self.b = {n: m.lora_B["default"].weight.detach().cpu().clone() for n, m in layers.items()}
        self.delta = {n: lora_delta(m).cpu() for n, m in layers.items()}
        self.w = {n: base_weight(m).detach().cpu().clone() for n, m in layers.items()}
        return model


@pytest.fixture
def aligned_setup(tmp_path):
    """(peft model on the aligned base, tokenizer, ctx, instruct weights by layer name)."""
    return instruct_and_aligned(tmp_path, SAFETY, USER_ROWS)


@pytest.mark.parametrize(
    "params, n_projected",
    [
        ({"threshold": 2.0}, 4),  # every cosine is <= 1: all four layers projected
        ({"threshold": -1.0}, 0),  # none
        ({"num_layers": 1}, 1),  # the single layer of lowest cosine
    ],
)
def test_safelora_end_to_end(aligned_setup, params, n_projected):
    model, tok, ctx, inst_sd = aligned_setup
    snap = Snapshot()
    result = fine_tune(model, tok, USER_ROWS, CFG, [SFT(), snap, SafeLoRA(**params)], ctx)
    model = result.model
    assert hasattr(model, "peft_config")  # still a LoRA model
    assert ctx.logs["safelora_projected"] == n_projected and ctx.logs["safelora_layers"] == 4
    cosines, projected = {}, []
    for name, layer in lora_layers(model).items():
        c = alignment_projection(snap.w[name] - inst_sd[f"{name}.weight"])
        cosines[name] = flat_cosine(snap.delta[name], c @ snap.delta[name])
        b = layer.lora_B["default"].weight.detach().cpu()
        if torch.equal(b, snap.b[name]):
            continue  # unchanged
        projected.append(name)
        assert torch.allclose(b, c @ snap.b[name], atol=1e-6)
        assert torch.allclose(lora_delta(layer).cpu(), c @ snap.delta[name], atol=1e-6)
    assert len(projected) == n_projected
    if "num_layers" in params:
        assert projected == [min(cosines, key=cosines.get)]
    assert ctx.logs["safelora_mean_cos"] == pytest.approx(sum(cosines.values()) / 4, abs=1e-5)


def test_lisa_alignment_steps_train_on_a_safety_batch_only():
    """The safety batch replaces the user batch before the forward (no wasted user pass),
    and ``loss`` called outside the trainer still computes the safety loss itself."""
    loaded = tiny_random_model(0)
    model = add_lora(loaded, LoraConfig())
    forwards: list[int] = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *a: forwards.append(1))
    ctx = TrainContext(tokenizer=loaded.tokenizer, max_length=64, batch_size=4, safety_data=SAFETY, user_data=USER_ROWS)
    lisa = Lisa(align_steps=1, user_steps=1, prox_warmup=0.0)
    prompts: list[str] = []

    class Spy(Method):
        def loss(self, model, batch, task_loss, ctx):
            prompts.append(loaded.tokenizer.decode(batch["input_ids"][0]))
            return task_loss

    cfg = TrainConfig(max_steps=2, batch_size=4, lr=5e-2, max_length=64)
    fine_tune(model, loaded.tokenizer, USER_ROWS, cfg, [lisa, Spy()], ctx)
    assert len(forwards) == 2  # one forward per step: the safety batch, then the user batch
    assert "weapon" in prompts[0] and "Review" in prompts[1]
    # outside the trainer: an alignment-state loss on a user batch is still the safety loss
    lisa.prepare(model, ctx)
    user_batch = ctx.encode(USER_ROWS[:4], "cpu")
    task = torch.tensor(123.0)
    assert lisa.loss(model, user_batch, task, ctx).item() == pytest.approx(ctx.logs["lisa_safety_loss"])
    assert ctx.logs["lisa_safety_loss"] != 123.0
