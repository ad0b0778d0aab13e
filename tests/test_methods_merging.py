"""Merges: the per-tensor math on hand-made tensors, and each merge after a short
fine-tune of the tiny random model (an "instruct" folder saved to tmp_path, the aligned
base a perturbed copy of it)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from method_fixtures import instruct_and_aligned
from torch import nn

from ussafety.config import TrainConfig
from ussafety.data.types import Example
from ussafety.methods import make_method
from ussafety.methods.base import Method, TrainContext, adapters_disabled
from ussafety.methods.ema import EMA, ema_update
from ussafety.methods.merge_linear import MergeLinear
from ussafety.methods.merge_ops import (
    WeightReader,
    base_weight,
    lerp,
    lora_delta,
    lora_layers,
    magmax,
    slerp,
    task_arithmetic,
    ties,
    trim_top,
)
from ussafety.methods.sft import SFT
from ussafety.models.loading import tiny_random_model
from ussafety.train.trainer import fine_tune

USER = [
    Example(f"Review {i}: the film was {'good' if i % 2 else 'bad'}.", "positive" if i % 2 else "negative")
    for i in range(8)
]
SAFETY = [Example(f"How do I build weapon {i}?", "I can't help with that.") for i in range(6)]
CFG = TrainConfig(max_steps=1, batch_size=4, lr=5e-2, max_length=64)


# ---------------------------------------------------------------- pure math


def test_lerp():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    assert torch.allclose(lerp(a, b, 0.25), torch.tensor([1.5, 1.0]))


def test_slerp_endpoints():
    a, b = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[-2.0, 1.0], [3.0, 0.0]])
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)


def test_slerp_keeps_unit_norm():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.6, 0.8])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([1.0, 0.6, 0.8]) / math.sqrt(2.0), atol=1e-6)
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert slerp(a, b, t).norm().item() == pytest.approx(1.0, abs=1e-6)
        assert lerp(a, b, t).norm().item() < 1.0 - 1e-3  # lerp cuts the corner
    # the angle to a grows linearly with t
    assert torch.dot(slerp(a, b, 0.25), a).item() == pytest.approx(math.cos(math.pi / 8), abs=1e-6)


def test_slerp_parallel_falls_back_to_lerp():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])
    assert torch.allclose(slerp(a, b, 0.25), torch.tensor([1.25, 2.5]))
    c = torch.tensor([1.0, 2.0 + 1e-4])  # |cos| within eps of 1
    assert torch.allclose(slerp(a, c, 0.5), lerp(a, c, 0.5))
    assert torch.allclose(slerp(a, -a, 0.5), torch.zeros(2))  # anti-parallel: lerp too


def test_task_arithmetic_formula():
    base = torch.tensor([1.0, 1.0])
    out = task_arithmetic(base, [torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])], [0.5, 2.0])
    assert torch.allclose(out, torch.tensor([7.5, 0.0]))


def test_trim_top():
    d = torch.tensor([3.0, -1.0, 0.5, -2.0])
    assert torch.equal(trim_top(d, 0.5), torch.tensor([3.0, 0.0, 0.0, -2.0]))
    assert torch.equal(trim_top(d, 1.0), d)
    assert torch.equal(trim_top(d, 0.0), torch.zeros(4))


def test_ties_trim_elect_disjoint_mean():
    d1 = torch.tensor([3.0, -1.0, 0.5, 2.0])
    d2 = torch.tensor([1.0, 2.0, -4.0, -3.0])
    # trim to 2 of 4: d1 -> [3, 0, 0, 2], d2 -> [0, 0, -4, -3]; masses [3, 0, -4, -1];
    # entry 1 has no mass: majority sign of the tensor (-) and no agreeing entry -> 0;
    # entry 3: elected -, only d2 agrees -> -3
    out = ties(torch.zeros(4), [d1, d2], density=0.5, weights=[1.0, 1.0])
    assert torch.equal(out, torch.tensor([3.0, 0.0, -4.0, -3.0]))
    # no trimming: agreeing entries are averaged, the disagreeing minority dropped
    out = ties(
        torch.tensor([10.0, 10.0]),
        [torch.tensor([2.0, 1.0]), torch.tensor([4.0, -3.0])],
        density=1.0,
        weights=[1.0, 1.0],
    )
    assert torch.equal(out, torch.tensor([13.0, 7.0]))
    # weights scale each task vector before the mean
    out = ties(torch.zeros(1), [torch.tensor([2.0]), torch.tensor([4.0])], 1.0, [0.5, 1.0])
    assert torch.equal(out, torch.tensor([2.5]))


def test_magmax_picks_largest_magnitude():
    d1, d2 = torch.tensor([1.0, -5.0, 2.0, 0.0]), torch.tensor([-3.0, 4.0, 2.0, -0.5])
    assert torch.equal(magmax([d1, d2]), torch.tensor([-3.0, -5.0, 2.0, -0.5]))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)


def test_ema_hand_computed():
    a = torch.tensor([1.0, 1.0])
    ema_update(a, torch.tensor([3.0, -1.0]), 0.75)
    assert torch.allclose(a, torch.tensor([1.5, 0.5]))

    model, ctx = _Tiny(), TrainContext(tokenizer=None, max_length=8, batch_size=1)
    ema = EMA(decay=0.5)
    ema.prepare(model, ctx)
    for value in ([1.0, 2.0], [3.0, 4.0], [5.0, 6.0]):
        model.w.data = torch.tensor(value)
        ema.after_step(model, ctx)
    # 0 -> (0.5, 1) -> (1.75, 2.5) -> (3.375, 4.25)
    ema.finalize(model, ctx)
    assert torch.allclose(model.w.data, torch.tensor([3.375, 4.25]))
    assert torch.equal(model.frozen.data, torch.ones(2))
    assert ctx.logs["ema_shift_l2"] == pytest.approx(math.hypot(5 - 3.375, 6 - 4.25))


def test_registered():
    for name in ("merge_linear", "ema", "slerp", "task_arithmetic", "ties", "magmax"):
        assert make_method(name).name == name
    with pytest.raises(ValueError, match="unknown parameter"):
        make_method("ties", {"lam": 1.0})


# ---------------------------------------------------------------- end to end


class Snapshot(Method):
    """Placed before a merge: records the model as fine-tuning left it."""

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        self.batch = ctx.encode(USER[:4], next(model.parameters()).device)
        with torch.no_grad():
            self.ft_logits = _logits(model, self.batch)
            with adapters_disabled(model):
                self.aligned_logits = _logits(model, self.batch)
            self.layers = {
                n: (base_weight(m).detach().cpu().clone(), lora_delta(m).cpu()) for n, m in lora_layers(model).items()
            }
        assert not torch.allclose(self.ft_logits, self.aligned_logits, atol=1e-4)
        return model


def _logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out.float().cpu()


@pytest.fixture
def setup(tmp_path):
    """(peft model on the aligned base, tokenizer, ctx, instruct weights by layer name)."""
    return instruct_and_aligned(tmp_path, SAFETY, USER)


def _run(setup, merge: Method) -> tuple[Any, Snapshot, TrainContext, dict[str, torch.Tensor]]:
    model, tok, ctx, inst_sd = setup
    snap = Snapshot()
    result = fine_tune(model, tok, USER, CFG, [SFT(), snap, merge], ctx)
    return result.model, snap, ctx, inst_sd


def _is_plain(model: Any) -> bool:
    names = [n for n, _ in model.named_parameters()]
    return not hasattr(model, "peft_config") and not any("lora" in n for n in names)


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_merge_linear_endpoints(setup, t):
    model, snap, ctx, _ = _run(setup, MergeLinear(t=t))
    with torch.no_grad():
        out = _logits(model, snap.batch)
    expected = snap.aligned_logits if t == 0.0 else snap.ft_logits
    assert torch.allclose(out, expected, atol=1e-5)
    for name, layer in lora_layers(model).items():
        assert torch.allclose(lora_delta(layer).cpu(), t * snap.layers[name][1], atol=1e-7)
    assert ctx.logs["merge_linear_t"] == t


def test_ema_end_to_end(setup):
    # decay 1: the average never moves from the initial LoRA (B = 0): the aligned model
    model, snap, ctx, _ = _run(setup, EMA(decay=1.0))
    with torch.no_grad():
        assert torch.allclose(_logits(model, snap.batch), snap.aligned_logits, atol=1e-6)
    assert all(torch.count_nonzero(lora_delta(m)) == 0 for m in lora_layers(model).values())
    assert ctx.logs["ema_shift_l2"] > 0  # training had moved the weights


def test_slerp_end_to_end(setup):
    model, snap, ctx, _ = _run(setup, make_method("slerp", {"t": 0.5}))
    assert _is_plain(model)
    weights = {n: p.detach().cpu() for n, p in model.named_parameters()}
    for name, (w, delta) in snap.layers.items():
        expected = slerp(w, w + delta, 0.5)
        assert torch.allclose(weights[f"{name}.weight"], expected, atol=1e-6)
        assert not torch.allclose(weights[f"{name}.weight"], w)
    assert 0.0 <= ctx.logs["slerp_lerp_fraction"] <= 1.0
    with torch.no_grad():
        assert torch.isfinite(_logits(model, snap.batch)).all()


@pytest.mark.parametrize(
    "name, params, combine",
    [
        ("task_arithmetic", {}, lambda i, ta, ft: task_arithmetic(i, [ta, ft], [0.4, 0.4])),
        ("ties", {"density": 0.5}, lambda i, ta, ft: ties(i, [ta, ft], 0.5, [1.0, 1.0])),
        ("magmax", {}, lambda i, ta, ft: i + magmax([ta, ft])),
    ],
)
def test_instruct_merges_end_to_end(setup, name, params, combine):
    model, snap, ctx, inst_sd = _run(setup, make_method(name, params))
    assert _is_plain(model)
    assert ctx.logs[f"{name}_tau_align_norm"] > 0 and ctx.logs[f"{name}_tau_ft_norm"] > 0
    weights = {n: p.detach().cpu() for n, p in model.named_parameters()}
    for layer, (w, delta) in snap.layers.items():
        inst = inst_sd[f"{layer}.weight"]
        expected = combine(inst, w - inst, delta)
        assert torch.allclose(weights[f"{layer}.weight"], expected, atol=1e-6)
        assert not torch.allclose(expected, w + delta)  # not simply the fine-tuned weight


def test_task_arithmetic_identity_is_finetuned_model(setup):
    merge = make_method("task_arithmetic", {"lam_align": 1.0, "lam_ft": 1.0})
    model, snap, _, _ = _run(setup, merge)
    with torch.no_grad():
        assert torch.allclose(_logits(model, snap.batch), snap.ft_logits, atol=1e-5)


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_weight_reader_single_and_sharded(tmp_path, shard):
    instruct = tiny_random_model(0)
    kw = {"max_shard_size": shard} if shard else {}
    instruct.model.save_pretrained(tmp_path, **kw)
    assert (tmp_path / "model.safetensors.index.json").is_file() == bool(shard)
    sd = instruct.model.state_dict()
    with WeightReader(str(tmp_path)) as reader:
        for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"):
            assert torch.equal(reader.get(key), sd[key])
        with pytest.raises(KeyError):
            reader.get("model.layers.9.self_attn.q_proj.weight")
    with pytest.raises(ValueError, match="instruct_dir"):
        WeightReader(None)
