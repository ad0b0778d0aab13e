"""L2, EWC, MAS and LwF: penalty math on tiny tensors, importance estimation, one short
fine-tune each on the tiny random model, LwF's precomputed reference, and (on the toy aligned
model of test_methods_replay.py) that LwF, EWC and MAS still protect safety."""

from __future__ import annotations

import math

import pytest
import torch
from test_methods_replay import safety_loss_increase

from ussafety.config import LoraConfig, TrainConfig
from ussafety.data.types import Example
from ussafety.methods import TrainContext, make_method
from ussafety.methods import lwf as lwf_module
from ussafety.methods.base import lora_parameters
from ussafety.methods.ewc import ewc_penalty, normalize_importance, weight_importance
from ussafety.methods.l2 import (
    delta_weight,
    l2_delta_w_penalty,
    l2_param_penalty,
    lora_factors,
    lora_layers,
    lowrank_sq_norm,
)
from ussafety.methods.lwf import lwf_hidden_loss, lwf_kl_loss, row_keys
from ussafety.methods.mas import output_sq_norm
from ussafety.models.loading import add_lora, tiny_random_model
from ussafety.train.trainer import fine_tune

LORA = LoraConfig(r=4, alpha=8)
USER = [Example(f"question {i}", f"the answer number {i} is here") for i in range(8)]
SAFETY = [Example(f"how do I do bad thing {i}", "I can't help with that.") for i in range(4)]


def tiny_lora():
    loaded = tiny_random_model()
    model = add_lora(loaded, LORA)
    ctx = TrainContext(tokenizer=loaded.tokenizer, max_length=64, batch_size=2, safety_data=SAFETY)
    return model, loaded.tokenizer, ctx


def train(model, tok, ctx, method, steps: int = 2):
    cfg = TrainConfig(lora=LORA, max_steps=steps, batch_size=4, max_length=64, lr=1e-2)
    return fine_tune(model, tok, USER, cfg, [method], ctx)


# ---------------------------------------------------------------- L2


def test_lowrank_sq_norm_equals_frobenius_of_product():
    g = torch.Generator().manual_seed(0)
    b, a = torch.randn(7, 3, generator=g), torch.randn(3, 5, generator=g)
    assert torch.allclose(lowrank_sq_norm(b, a), (b @ a).pow(2).sum(), rtol=1e-5)
    b, a = torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0, 0.0, 1.0]])
    # B @ A = [[3, 0, 1], [6, 0, 2]] -> 9 + 1 + 36 + 4 = 50
    assert lowrank_sq_norm(b, a).item() == pytest.approx(50.0)
    assert l2_delta_w_penalty([(b, a), (b, a)], lam=0.1).item() == pytest.approx(0.05 * 100.0)


def test_l2_param_penalty():
    cur = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([[0.5]])}
    anchor = {"x": torch.tensor([0.0, 0.0]), "y": torch.tensor([[1.5]])}
    assert l2_param_penalty(cur, anchor, lam=2.0).item() == pytest.approx(1.0 * (1 + 4 + 1))


def test_lora_factors_match_peft_delta_and_start_at_zero():
    model, _, _ = tiny_lora()
    layers = lora_layers(model)
    assert len(layers) == 4  # q_proj, v_proj in 2 layers
    for layer in layers.values():
        assert delta_weight(layer).abs().max().item() == 0.0  # B = 0 at init
        with torch.no_grad():
            layer.lora_B["default"].weight.normal_()
        b, a = lora_factors(layer)
        assert torch.allclose(b @ a, layer.get_delta_weight("default"), atol=1e-6)
        assert delta_weight(layer).shape == layer.get_base_layer().weight.shape


def set_lora_b(model, value: float) -> None:
    """Move every LoRA B off zero by hand (a weight change without training)."""
    with torch.no_grad():
        for n, p in lora_parameters(model).items():
            if "lora_B" in n:
                p.fill_(value)


def test_l2_end_to_end():
    model, tok, ctx = tiny_lora()
    method = make_method("l2", {"lam": 0.1})
    method.prepare(model, ctx)
    assert method.penalty(model).item() == 0.0  # at the aligned weights
    res = train(model, tok, ctx, method)
    assert res.steps == 2 and math.isfinite(ctx.logs["task_loss"])
    assert method.penalty(model).item() > 0.0 and math.isfinite(ctx.logs["l2_penalty"])
    total = sum(delta_weight(layer).pow(2).sum() for layer in lora_layers(model).values())
    assert method.penalty(model).item() == pytest.approx(0.05 * total.item(), rel=1e-4)


def test_l2_on_lora_params():
    model, _, ctx = tiny_lora()
    method = make_method("l2", {"lam": 2.0, "on": "lora_params"})
    method.prepare(model, ctx)
    assert method.penalty(model).item() == 0.0
    set_lora_b(model, 0.5)
    n_b = sum(p.numel() for n, p in lora_parameters(model).items() if "lora_B" in n)
    assert method.penalty(model).item() == pytest.approx(1.0 * 0.25 * n_b, rel=1e-5)


def test_l2_rejects_unknown_target():
    with pytest.raises(ValueError, match="on must be"):
        make_method("l2", {"on": "weights"})


# ---------------------------------------------------------------- EWC / MAS


def test_ewc_penalty_hand_made():
    fisher = {"a": torch.tensor([[1.0, 0.0], [2.0, 0.5]]), "b": torch.tensor([4.0])}
    delta = {"a": torch.tensor([[1.0, 3.0], [-1.0, 2.0]]), "b": torch.tensor([0.5])}
    # sum F d^2 = 1 + 0 + 2 + 0.5*4 + 4*0.25 = 6
    assert ewc_penalty(fisher, delta, lam=3.0).item() == pytest.approx(1.5 * 6.0)
    zero = {n: torch.zeros_like(v) for n, v in delta.items()}
    assert ewc_penalty(fisher, zero, lam=3.0).item() == 0.0


def test_normalize_importance():
    imp = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([4.0, 0.0])}
    by_max = normalize_importance(imp, "max")
    assert torch.equal(by_max["a"], torch.tensor([0.25, 0.75])) and by_max["b"][0].item() == 1.0
    by_mean = normalize_importance(imp, "mean")  # mean = 2
    assert torch.equal(by_mean["b"], torch.tensor([2.0, 0.0]))
    assert normalize_importance(imp, "none") is imp
    with pytest.raises(ValueError, match="zero everywhere"):
        normalize_importance({"a": torch.zeros(3)}, "max")


def test_output_sq_norm():
    assert output_sq_norm(torch.tensor([[1.0, -2.0], [0.0, 3.0]])).item() == pytest.approx(14.0)


def test_weight_importance_per_example_and_restores_model():
    """Per-example importance is the mean of transformed single-example gradients;
    per-batch with batches of one is the same number; grads and flags are restored."""
    model, _, ctx = tiny_lora()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    calls = []

    def objective(m, batch):
        calls.append(batch["input_ids"].shape[0])
        return m(input_ids=batch["input_ids"]).logits.float().pow(2).sum()

    per_ex = weight_importance(model, SAFETY, ctx, "example", objective, torch.abs)
    assert calls == [1, 1, 1, 1]
    ctx.batch_size = 1
    per_b1 = weight_importance(model, SAFETY, ctx, "batch", objective, torch.abs)
    ctx.batch_size = 2
    calls.clear()
    per_b2 = weight_importance(model, SAFETY, ctx, "batch", objective, torch.abs)
    assert calls == [2, 2]
    assert set(per_ex) == set(lora_layers(model))
    for n in per_ex:
        assert torch.allclose(per_ex[n], per_b1[n], rtol=1e-5, atol=1e-8)
        assert (per_b2[n] <= per_ex[n] + 1e-5).all()  # |sum g| <= sum |g|
        assert per_ex[n].max() > 0
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters()) and model.training


@pytest.mark.parametrize(
    "name,params",
    [
        ("ewc", {"n_fisher": 2, "per": "batch", "normalize": "mean"}),
        ("ewc", {"n_fisher": 1, "normalize": "none"}),
        ("mas", {"n_batches": 1}),
        ("mas", {"n_batches": 1, "output": "hidden", "per": "batch"}),
    ],
)
def test_importance_prepare_options(name, params):
    model, _, ctx = tiny_lora()
    method = make_method(name, params)
    method.prepare(model, ctx)
    key = "ewc_fisher" if name == "ewc" else "mas_omega"
    assert ctx.logs[f"{key}_raw_max"] > 0
    values = torch.cat([v.flatten() for v in method.importance.values()])
    how = params.get("normalize", "max")
    expected = {
        "max": (values.max(), 1.0),
        "mean": (values.mean(), 1.0),
        "none": (values.max(), ctx.logs[f"{key}_raw_max"]),
    }[how]
    assert expected[0].item() == pytest.approx(expected[1], rel=1e-5)
    assert method.penalty(model).item() == 0.0  # B = 0: zero at the anchor
    set_lora_b(model, 0.1)
    delta = {n: delta_weight(layer) for n, layer in lora_layers(model).items()}
    assert method.penalty(model).item() > 0.0
    assert method.penalty(model).item() == pytest.approx(
        ewc_penalty(method.importance, delta, method.lam).item(), rel=1e-5
    )
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def delta_w_size(model) -> float:
    return sum(delta_weight(layer).pow(2).sum().item() for layer in lora_layers(model).values())


def test_ewc_end_to_end_slows_the_weight_change():
    """EWC trains (finite losses, penalty > 0) and a strong EWC keeps delta W smaller
    than plain SFT with the same seed and data."""
    model, tok, ctx = tiny_lora()
    train(model, tok, ctx, make_method("sft"), steps=3)
    sft_size = delta_w_size(model)
    model, tok, ctx = tiny_lora()
    method = make_method("ewc", {"n_fisher": 1, "lam": 1e4, "normalize": "mean"})
    train(model, tok, ctx, method, steps=3)
    assert ctx.logs["ewc_prepare_s"] >= 0 and math.isfinite(ctx.logs["task_loss"])
    assert method.penalty(model).item() > 0.0 and math.isfinite(ctx.logs["ewc_penalty"])
    assert delta_w_size(model) < 0.5 * sft_size


def test_mas_end_to_end():
    model, tok, ctx = tiny_lora()
    method = make_method("mas", {"n_batches": 1, "per": "batch"})
    train(model, tok, ctx, method)
    assert math.isfinite(ctx.logs["task_loss"]) and math.isfinite(ctx.logs["mas_penalty"])
    assert method.penalty(model).item() > 0.0 and delta_w_size(model) > 0.0


# ---------------------------------------------------------------- LwF


def test_lwf_kl_hand_computed():
    cur = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    ref = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    t = 2.0
    # row 0: p_ref = softmax([1, 0]), p_cur = [0.5, 0.5]; row 1: identical -> 0
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    kl0 = (p * (p.log() - math.log(0.5))).sum().item()
    assert lwf_kl_loss(cur, ref, t).item() == pytest.approx(t * t * kl0 / 2, rel=1e-5)
    assert lwf_kl_loss(ref, ref, t).item() == pytest.approx(0.0, abs=1e-7)
    assert lwf_kl_loss(torch.zeros(0, 5), torch.zeros(0, 5), t).item() == 0.0


def test_lwf_hidden_mse():
    cur, ref = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [0.0, -2.0]])
    assert lwf_hidden_loss(cur, ref).item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert lwf_hidden_loss(ref, ref).item() == 0.0


def test_lwf_end_to_end():
    model, tok, ctx = tiny_lora()
    method = make_method("lwf", {})
    batch = ctx.encode(USER[:4], "cpu")
    assert method.distill_loss(model, batch).item() == pytest.approx(0.0, abs=1e-6)  # cur == ref
    train(model, tok, ctx, method)
    assert math.isfinite(ctx.logs["lwf_loss"]) and math.isfinite(ctx.logs["task_loss"])
    assert method.distill_loss(model, batch).item() > 0.0
    assert delta_w_size(model) > 0.0


def test_lwf_hidden_variant():
    model, _, ctx = tiny_lora()
    method = make_method("lwf", {"variant": "hidden", "lam": 3.0})
    batch = ctx.encode(USER[:4], "cpu")
    assert method.distill_loss(model, batch).item() == pytest.approx(0.0, abs=1e-7)
    set_lora_b(model, 0.1)
    loss = method.loss(model, batch, torch.tensor(1.0), ctx)
    assert ctx.logs["lwf_loss"] > 0.0
    assert loss.item() == pytest.approx(1.0 + 3.0 * ctx.logs["lwf_loss"], rel=1e-5)
    loss.backward()  # the term reaches the LoRA weights
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in lora_parameters(model).values())
    with pytest.raises(ValueError, match="variant"):
        make_method("lwf", {"variant": "mse"})


@pytest.mark.parametrize("variant", ["kl", "hidden"])
def test_lwf_uses_the_trainers_outputs_when_given(variant: str):
    from ussafety.models.losses import response_outputs

    model, _, ctx = tiny_lora()
    set_lora_b(model, 0.1)
    method = make_method("lwf", {"variant": variant})
    batch = ctx.encode(USER[:4], "cpu")
    shared = response_outputs(model, batch)
    assert method.distill_loss(model, batch, shared).item() == pytest.approx(
        method.distill_loss(model, batch).item(), rel=1e-6
    )
    forwards: list[int] = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *a: forwards.append(1))
    ctx.batch, ctx.outputs = batch, shared
    method.loss(model, batch, torch.tensor(0.0), ctx).backward()
    assert len(forwards) == 1  # only the reference: the current outputs are the shared ones
    ctx.batch = ctx.encode(USER[4:], "cpu")  # outputs of another batch are not used
    method.loss(model, batch, torch.tensor(0.0), ctx)
    assert len(forwards) == 3


@pytest.mark.parametrize("variant", ["kl", "hidden"])
def test_lwf_precomputed_reference_is_the_recomputed_one(variant: str):
    """The reference stored in prepare gives the on-the-fly reference's loss, and a step
    then runs no reference forward; a batch with a row not stored falls back to one."""
    from ussafety.models.losses import response_outputs

    model, _, ctx = tiny_lora()
    ctx.user_data = USER
    pre = make_method("lwf", {"variant": variant, "reference": "precompute"})
    pre.prepare(model, ctx)
    assert ctx.logs["lwf_precomputed_rows"] == len(USER) == len(pre.stored)
    again = make_method("lwf", {"variant": variant, "reference": "recompute"})
    again.prepare(model, ctx)
    assert not again.stored and ctx.logs["lwf_precomputed_rows"] == 0
    set_lora_b(model, 0.1)
    batch = ctx.encode([USER[5], USER[2], USER[7]], "cpu")  # any rows, any order, any padding
    assert len(set(row_keys(batch))) == 3
    assert pre.distill_loss(model, batch).item() == pytest.approx(again.distill_loss(model, batch).item(), rel=1e-5)
    assert pre.distill_loss(model, batch).item() > 0
    forwards: list[int] = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *a: forwards.append(1))
    ctx.batch, ctx.outputs = batch, response_outputs(model, batch)
    pre.loss(model, batch, torch.tensor(0.0), ctx).backward()
    assert len(forwards) == 1  # the trainer's forward only
    stranger = ctx.encode([USER[0], Example("not a user row", "never stored")], "cpu")
    ctx.batch, ctx.outputs = stranger, response_outputs(model, stranger)
    pre.loss(model, stranger, torch.tensor(0.0), ctx)
    assert len(forwards) == 3  # + the reference, computed on the fly


def test_lwf_precompute_trains_like_recompute_and_respects_its_budget(monkeypatch):
    final = {}
    for reference in ("precompute", "recompute"):
        model, tok, ctx = tiny_lora()
        ctx.user_data = USER
        train(model, tok, ctx, make_method("lwf", {"reference": reference}), steps=3)
        final[reference] = {n: p.detach().clone() for n, p in lora_parameters(model).items()}
    for n, p in final["precompute"].items():
        assert torch.allclose(p, final["recompute"][n], atol=1e-5)
    model, _, ctx = tiny_lora()
    ctx.user_data = USER
    auto = make_method("lwf", {})
    auto.prepare(model, ctx)
    assert auto.reference == "auto" and len(auto.stored) == len(USER)
    monkeypatch.setattr(lwf_module, "PRECOMPUTE_BUDGET_MB", 0.0)
    auto.prepare(model, ctx)
    assert not auto.stored  # over the budget: recomputed each step
    forced = make_method("lwf", {"reference": "precompute"})
    forced.prepare(model, ctx)
    assert len(forced.stored) == len(USER)
    with pytest.raises(ValueError, match="reference"):
        make_method("lwf", {"reference": "cache"})


# ---------------------------------------------------------------- the regularisers still act (toy)


@pytest.mark.parametrize("name,params", [("lwf", {}), ("ewc", {"n_fisher": 2}), ("mas", {"n_batches": 2})])
def test_regularizers_protect_safety_on_the_toy_model(name: str, params: dict):
    """At their default strengths (only the importance sample is sized for the toy's 12
    safety rows), LwF, EWC and MAS keep the loss of the safety refusals well below plain
    SFT's on the same poisoned rows, seed and LoRA initialisation."""
    sft = safety_loss_increase("sft")
    assert sft > 0.2
    assert safety_loss_increase(name, params) < 0.75 * sft
