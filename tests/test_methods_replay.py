"""Replay and gradient methods: reservoir buffer, capped replay rows, DER, DER++, A-GEM,
Refresh learning; and, on a toy aligned model, that each regulariser still protects safety
(the harness is shared with test_methods_regularization.py)."""

from __future__ import annotations

import functools
import math
import random

import pytest
import torch
from scipy.stats import binomtest, chi2

from ussafety.config import LoraConfig, TrainConfig
from ussafety.data.types import Example
from ussafety.methods import make_method
from ussafety.methods.agem import AGEM, agem_project, flat_grads
from ussafety.methods.base import REGISTRY, TrainContext
from ussafety.methods.buffer import (
    ReservoirBuffer,
    cap_response,
    replay_batch,
    replay_row,
    response_counts,
)
from ussafety.methods.der import DER, der_loss, logits_at, topk_targets
from ussafety.methods.derpp import DERpp, derpp_loss
from ussafety.methods.refresh import Refresh, fisher_preconditioner, refresh_unlearn
from ussafety.models.chat import IGNORE, encode_batch
from ussafety.models.loading import add_lora, tiny_random_model
from ussafety.models.losses import lm_loss, response_logits
from ussafety.train.trainer import fine_tune

LORA = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])


# ---------------------------------------------------------------- reservoir buffer


def test_reservoir_keeps_each_item_with_probability_k_over_n() -> None:
    trials, n, k = 2000, 50, 10
    rng = random.Random(1234)
    counts = [0] * n
    for _ in range(trials):
        buf: ReservoirBuffer[int] = ReservoirBuffer(k, rng)
        buf.extend(list(range(n)))
        assert len(buf) == k and buf.seen == n and len(set(buf.items)) == k
        for item in buf.items:
            counts[item] += 1
    p = k / n
    expected = trials * p  # 400
    for c in counts:
        assert abs(c / expected - 1) < 0.2
        # each count is Binomial(2000, 0.2): two-sided test, Bonferroni over 50 items
        assert binomtest(c, trials, p).pvalue > 0.01 / n
    # the first items (which enter before the buffer is full) are no more likely to stay
    stat = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2.sf(stat, df=n - 1) > 1e-3


def test_reservoir_small_stream_sample_and_validation() -> None:
    rng = random.Random(0)
    buf: ReservoirBuffer[str] = ReservoirBuffer(5, rng)
    assert buf.sample(3) == []
    buf.extend(["a", "b", "c"])
    assert buf.items == ["a", "b", "c"]  # fewer than capacity: all kept, in order
    draw = buf.sample(2)
    assert len(draw) == 2 and len(set(draw)) == 2 and set(draw) <= {"a", "b", "c"}
    assert sorted(buf.sample(10)) == ["a", "b", "c"]
    assert not ReservoirBuffer(0, rng).add("x")
    with pytest.raises(ValueError):
        ReservoirBuffer(-1, rng)
    assert "buffer" not in REGISTRY


# ---------------------------------------------------------------- capped replay rows


def test_cap_response_keeps_the_kept_positions_exact() -> None:
    """A capped row is the full row cut after its first k response tokens, and (causality)
    the model's logits on those k positions are the full row's."""
    loaded = tiny_random_model(0)
    tok, model = loaded.tokenizer, loaded.model
    ex = _safety(1)[0]
    full = replay_row(tok, ex, 256, 0)
    capped = replay_row(tok, ex, 256, 5)
    n_full = sum(t != IGNORE for t in full["labels"])
    assert n_full > 40 and response_counts([full, capped]) == [n_full, 5]
    assert capped["input_ids"] == full["input_ids"][: len(capped["input_ids"])]
    assert capped["labels"] == full["labels"][: len(capped["labels"])]
    assert replay_row(tok, ex, 256, n_full + 3) == full  # a cap past the end: unchanged
    assert cap_response({"input_ids": [1, 2], "labels": [IGNORE, IGNORE]}, 1)["input_ids"] == [1, 2]
    with torch.no_grad():
        lf, tf = response_logits(model, replay_batch([full], tok.pad_token_id, "cpu"))
        # padded next to a longer row, as in a replay minibatch
        lc, tc = response_logits(model, replay_batch([capped, full], tok.pad_token_id, "cpu"))
    assert torch.equal(tc[:5], tf[:5])
    assert torch.allclose(lc[:5], lf[:5], atol=1e-5)


def test_logits_at_equals_the_full_heads_entries() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 8, generator=gen, requires_grad=True)
    idx = torch.randint(0, 50, (6, 4), generator=gen, dtype=torch.int32)
    for bias in (False, True):
        head = torch.nn.Linear(8, 50, bias=bias).requires_grad_(False)
        sparse = logits_at(head, hidden, idx)
        dense = head(hidden).gather(-1, idx.long())
        assert sparse.shape == (6, 4) and torch.allclose(sparse, dense, atol=1e-6)
        (g_sparse,) = torch.autograd.grad(sparse.pow(2).sum(), hidden)
        (g_dense,) = torch.autograd.grad(dense.pow(2).sum(), hidden)
        assert torch.allclose(g_sparse, g_dense, atol=1e-5)
        assert head.weight.grad is None
    assert torch.equal(logits_at(head, hidden, None), head(hidden))
    wrapped = torch.nn.Sequential(head)  # not a plain Linear: full head, then gather
    assert torch.allclose(logits_at(wrapped, hidden, idx), head(hidden).gather(-1, idx.long()))


# ---------------------------------------------------------------- pure DER / DER++ math


def test_der_loss_topk_and_full_by_hand() -> None:
    cur = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    idx = torch.tensor([[2, 0], [1, 1]], dtype=torch.int32)
    vals = torch.tensor([[2.0, 1.0], [5.0, 4.0]])
    # gathered current: [[3, 1], [5, 5]]; errors 1, 0, 0, 1 -> mean 0.5
    assert der_loss(cur, vals, idx).item() == pytest.approx(0.5)
    full = torch.tensor([[1.0, 2.0, 5.0], [4.0, 5.0, 6.0]])
    assert der_loss(cur, full, None).item() == pytest.approx(4.0 / 6.0)
    assert der_loss(cur[:0], vals[:0], idx[:0]).item() == 0.0


def test_topk_targets() -> None:
    ref = torch.tensor([[0.1, 3.0, -1.0, 2.0]])
    vals, idx = topk_targets(ref, 2)
    assert vals.tolist() == [[3.0, 2.0]] and idx.tolist() == [[1, 3]]
    vals, idx = topk_targets(ref, 0)
    assert idx is None and torch.equal(vals, ref)
    assert topk_targets(ref, 4)[1] is None


def test_derpp_loss_by_hand() -> None:
    cur = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    idx = torch.tensor([[2, 0], [1, 1]])
    vals = torch.tensor([[2.0, 1.0], [5.0, 4.0]])  # MSE 0.5 (as above)
    label_logits = torch.tensor([[0.0, math.log(3.0)]])  # p(label 1) = 3/4
    labels = torch.tensor([1])
    total, mse, ce = derpp_loss(torch.tensor(1.0), cur, vals, idx, label_logits, labels, alpha=0.1, beta=0.5)
    assert mse.item() == pytest.approx(0.5)
    assert ce.item() == pytest.approx(-math.log(0.75))
    assert total.item() == pytest.approx(1.0 + 0.1 * 0.5 + 0.5 * 0.2876821, abs=1e-6)


# ---------------------------------------------------------------- pure A-GEM / Refresh math


def test_agem_project_by_hand() -> None:
    g_ref = torch.tensor([1.0, 1.0])
    out, projected = agem_project(torch.tensor([1.0, -2.0]), g_ref)
    # dot = -1, |g_ref|^2 = 2: g + 0.5 g_ref
    assert projected and out.tolist() == pytest.approx([1.5, -1.5])
    assert torch.dot(out, g_ref).item() == pytest.approx(0.0)
    same, projected = agem_project(torch.tensor([1.0, 2.0]), g_ref)
    assert not projected and same.tolist() == [1.0, 2.0]
    zero_ref, projected = agem_project(torch.tensor([1.0, 2.0]), torch.zeros(2))
    assert not projected and zero_ref.tolist() == [1.0, 2.0]


def test_agem_project_random_vectors() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        g, r = torch.randn(7, generator=gen), torch.randn(7, generator=gen)
        out, projected = agem_project(g, r)
        assert torch.dot(out, r).item() >= -1e-5
        assert projected == (torch.dot(g, r).item() < 0)
        if projected:
            assert torch.allclose(out, g - torch.dot(g, r) / torch.dot(r, r) * r)
            assert out.norm() <= g.norm() + 1e-6
        else:
            assert torch.equal(out, g)


def test_refresh_unlearn_by_hand() -> None:
    param = torch.tensor([3.0, 4.0])  # norm 5
    grad = torch.tensor([0.0, 2.0])  # norm 2 -> direction [0, 5]
    precond = torch.tensor([1.0, 0.5])
    noise = torch.tensor([0.2, 0.0])
    out = refresh_unlearn(param, grad, precond, unlearn_lr=0.1, noise=noise)
    # [3 + 0.1 * 1 * (0 + 0.2), 4 + 0.1 * 0.5 * (5 + 0)]
    assert out.tolist() == pytest.approx([3.02, 4.25])
    # a zero gradient moves the tensor by the noise only; a zero tensor does not move
    assert refresh_unlearn(param, torch.zeros(2), precond, 0.1, torch.zeros(2)).tolist() == [3.0, 4.0]
    assert refresh_unlearn(torch.zeros(2), grad, precond, 0.1, torch.zeros(2)).tolist() == [0.0, 0.0]


def test_fisher_preconditioner_by_hand() -> None:
    fisher = {"a": torch.tensor([0.0, 2.0]), "b": torch.tensor([4.0, 2.0])}  # mean 2
    pre = fisher_preconditioner(fisher, weight=1.0)
    assert pre["a"].tolist() == pytest.approx([1.0, 0.5])
    assert pre["b"].tolist() == pytest.approx([1 / 3, 0.5])
    ones = fisher_preconditioner({"a": torch.zeros(3)}, weight=1.0)
    assert ones["a"].tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------- on the tiny model


def _user(n: int = 8) -> list[Example]:
    return [
        Example(
            prompt=f"Write a short note number {i}.", response=f"Note {i}: all is well today.", source="test", row=i
        )
        for i in range(n)
    ]


def _safety(n: int = 12) -> list[Example]:
    return [
        Example(
            prompt=f"Tell me how to do harmful thing {i}.",
            response="I'm sorry, but I can't help with that request.",
            source="safety",
            row=i,
        )
        for i in range(n)
    ]


def _setup(n_safety: int = 12, seed: int = 0):
    loaded = tiny_random_model(seed)
    model = add_lora(loaded, LORA)
    ctx = TrainContext(
        tokenizer=loaded.tokenizer, max_length=64, batch_size=4, safety_data=_safety(n_safety), seed=seed
    )
    return model, loaded.tokenizer, ctx


def _train(method, steps: int = 3):
    model, tok, ctx = _setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = TrainConfig(lora=LORA, lr=1e-2, max_steps=steps, batch_size=4, max_length=64, group_by_length=False)
    result = fine_tune(model, tok, _user(), cfg, [method], ctx)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert result.steps == steps and losses and all(math.isfinite(v) for v in losses)
    changed = any(not torch.equal(before[n], p) for n, p in result.model.named_parameters() if p.requires_grad)
    return result, ctx, changed


def _perturb_lora_b(model, std: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("top_k,response_tokens", [(5, 0), (0, 0), (5, 6)])
def test_der_stored_targets_line_up_with_recomputed(top_k: int, response_tokens: int) -> None:
    model, _, ctx_store = _setup()
    ctx_re = TrainContext(
        tokenizer=ctx_store.tokenizer, max_length=64, batch_size=4, safety_data=ctx_store.safety_data, seed=0
    )
    store = DER(buffer_size=6, minibatch_size=3, top_k=top_k, targets="store", response_tokens=response_tokens)
    recompute = DER(buffer_size=6, minibatch_size=3, top_k=top_k, targets="recompute", response_tokens=response_tokens)
    store.prepare(model, ctx_store)
    recompute.prepare(model, ctx_re)
    assert len(store.buffer) == 6 and all(m.values is not None for m in store.buffer.items)
    positions = [m.values.shape[0] for m in store.buffer.items]
    assert positions == response_counts([m.row for m in store.buffer.items])
    assert all(n == 6 for n in positions) if response_tokens else all(n == 16 for n in positions)
    assert [m.example for m in store.buffer.items] == [m.example for m in recompute.buffer.items]
    # LoRA B = 0: the model is the aligned reference, so stored targets match exactly
    assert der_loss(*store.replay_logits(model, ctx_store)).item() == pytest.approx(0.0, abs=1e-10)
    assert der_loss(*recompute.replay_logits(model, ctx_re)).item() == pytest.approx(0.0, abs=1e-10)
    _perturb_lora_b(model)
    a = der_loss(*store.replay_logits(model, ctx_store))
    b = der_loss(*recompute.replay_logits(model, ctx_re))
    assert a.item() > 1e-4 and a.item() == pytest.approx(b.item(), rel=1e-5)


def test_der_trains_and_penalty_grows() -> None:
    method = DER(buffer_size=8, minibatch_size=4, top_k=16)
    result, ctx, changed = _train(method)
    assert changed and ctx.logs["der_mse"] > 0
    assert len(method.buffer) == 8 and method.buffer.items[0].indices.dtype == torch.int32
    with pytest.raises(ValueError):
        DER(targets="cache")
    with pytest.raises(ValueError):
        DER().prepare(result.model, TrainContext(tokenizer=ctx.tokenizer, max_length=64, batch_size=4))


def test_der_sparse_head_gives_the_dense_loss() -> None:
    """DER's MSE from the stored top-k entries computed alone equals the MSE of the full
    logits gathered at those entries (what version 1 computed), on the same draw."""
    model, _, ctx = _setup()
    method = DER(buffer_size=8, minibatch_size=4, top_k=7, response_tokens=10)
    method.prepare(model, ctx)
    _perturb_lora_b(model)
    state = ctx.rng.getstate()
    sparse = der_loss(*method.replay_logits(model, ctx))
    ctx.rng.setstate(state)
    mems, batch = method.draw(model, ctx)
    full, _ = response_logits(model, batch)
    vals = torch.cat([m.values for m in mems])
    idx = torch.cat([m.indices for m in mems])
    dense = der_loss(full, vals, idx)
    assert sparse.item() > 1e-4 and sparse.item() == pytest.approx(dense.item(), rel=1e-5)


def _count_decoder_forwards(model) -> list[int]:
    calls: list[int] = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_derpp_one_draw_one_forward_and_its_loss_by_hand() -> None:
    """DER++ runs the model once per step on one buffer draw, and its objective is
    task + alpha * MSE(top-k entries) + beta * CE(buffered refusal tokens) on that draw."""
    model, _, ctx = _setup()
    method = DERpp(buffer_size=8, minibatch_size=4, top_k=7, response_tokens=10)
    method.prepare(model, ctx)
    _perturb_lora_b(model)
    calls = _count_decoder_forwards(model)
    state = ctx.rng.getstate()
    total = method.loss(model, {}, torch.tensor(1.0), ctx)
    assert len(calls) == 1
    ctx.rng.setstate(state)
    with torch.no_grad():
        mems, batch = method.draw(model, ctx)
        logits, labels = response_logits(model, batch)
        mse = der_loss(logits, torch.cat([m.values for m in mems]), torch.cat([m.indices for m in mems]))
        ce = torch.nn.functional.cross_entropy(logits, labels)
    assert labels.numel() == 4 * 10
    assert ctx.logs["der_mse"] == pytest.approx(mse.item(), rel=1e-5)
    assert ctx.logs["derpp_ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert total.item() == pytest.approx(1.0 + 0.1 * mse.item() + 0.5 * ce.item(), rel=1e-5)


def test_derpp_trains_with_recomputed_targets() -> None:
    method = DERpp(buffer_size=8, minibatch_size=4, top_k=16, targets="recompute")
    assert (method.alpha, method.beta) == (0.1, 0.5)
    _, ctx, changed = _train(method)
    assert changed and ctx.logs["der_mse"] > 0 and ctx.logs["derpp_ce"] > 0
    assert REGISTRY["derpp"] is DERpp and REGISTRY["der"] is DER


def test_agem_after_backward_projects_against_memory_gradient() -> None:
    model, _, ctx = _setup(n_safety=4)
    method = AGEM(ref_batch_size=4, buffer_size=4)  # the memory batch is all 4 examples
    method.prepare(model, ctx)
    _perturb_lora_b(model)  # so that every LoRA tensor has a gradient
    params = [p for p in model.parameters() if p.requires_grad]
    lm_loss(model, ctx.encode(ctx.safety_data, "cpu")).backward()
    g_ref = flat_grads(params)
    gen = torch.Generator().manual_seed(3)
    conflicting = -g_ref + 0.1 * g_ref.norm() * torch.randn(g_ref.shape, generator=gen) / g_ref.numel() ** 0.5
    assert torch.dot(conflicting, g_ref) < 0
    offset = 0
    for p in params:
        p.grad = conflicting[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    method.after_backward(model, ctx)
    out = flat_grads(params)
    expected = conflicting - torch.dot(conflicting, g_ref) / torch.dot(g_ref, g_ref) * g_ref
    assert torch.allclose(out, expected, atol=1e-5 * expected.norm().item())
    assert abs(torch.dot(out, g_ref).item()) < 1e-3 * out.norm().item() * g_ref.norm().item()
    assert ctx.logs["agem_projected_frac"] == 1.0
    # an agreeing gradient is written back unchanged
    offset = 0
    for p in params:
        p.grad = g_ref[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    method.after_backward(model, ctx)
    assert torch.allclose(flat_grads(params), g_ref)
    assert ctx.logs["agem_projected_frac"] == 0.5


def test_agem_reference_gradient_is_that_of_the_capped_rows() -> None:
    model, _, ctx = _setup(n_safety=4)
    method = AGEM(ref_batch_size=4, buffer_size=4, response_tokens=5)
    method.prepare(model, ctx)
    assert response_counts(method.memory.items) == [5, 5, 5, 5]
    _perturb_lora_b(model)
    params = [p for p in model.parameters() if p.requires_grad]
    g_ref = method.reference_gradient(model, params, ctx)
    for p in params:
        p.grad = None
    capped = [cap_response(r, 5) for r in (replay_row(ctx.tokenizer, ex, 64, 0) for ex in ctx.safety_data)]
    lm_loss(model, replay_batch(capped, ctx.tokenizer.pad_token_id, "cpu")).backward()
    assert torch.allclose(g_ref, flat_grads(params), atol=1e-6)
    for p in params:
        p.grad = None
    lm_loss(model, ctx.encode(ctx.safety_data, "cpu")).backward()  # whole refusals: another gradient
    assert not torch.allclose(g_ref, flat_grads(params), atol=1e-4)


def test_agem_trains() -> None:
    _, ctx, changed = _train(AGEM(ref_batch_size=4, buffer_size=8))
    assert changed and 0.0 <= ctx.logs["agem_projected_frac"] <= 1.0
    assert -1.0 <= ctx.logs["agem_cos"] <= 1.0


def test_refresh_fisher_spares_safety_parameters() -> None:
    model, _, ctx = _setup()
    method = Refresh(fisher_samples=6)
    method.prepare(model, ctx)
    a = [pre for n, pre in method.precond.items() if "lora_A" in n]
    b = [pre for n, pre in method.precond.items() if "lora_B" in n]
    # LoRA B = 0 at the aligned model: A has no gradient (full step), B has a Fisher
    assert a and all(torch.equal(pre, torch.ones_like(pre)) for pre in a)
    assert b and all(float(pre.min()) < 1.0 and float(pre.max()) <= 1.0 for pre in b)
    assert all(p.grad is None for p in model.parameters())


def test_refresh_after_backward_moves_up_the_loss() -> None:
    model, _, ctx = _setup()
    _perturb_lora_b(model)
    method = Refresh(unlearn_lr=0.05, noise_std=0.0, fisher_samples=4)
    method.prepare(model, ctx)
    batch = ctx.encode(_user(4), "cpu")
    before = lm_loss(model, batch)
    before.backward()
    method.after_backward(model, ctx)
    with torch.no_grad():
        after = lm_loss(model, batch)
    assert after.item() > before.item()  # the unlearning step is a gradient ascent
    assert ctx.logs["refresh_rel_change"] > 0


def test_refresh_trains() -> None:
    _, ctx, changed = _train(Refresh(fisher_samples=4))
    assert changed and ctx.logs["refresh_rel_change"] > 0


# ---------------------------------------------------------------- the regularisers still act (toy)

TOPICS = (
    "a lock",
    "a car",
    "a bank",
    "a phone",
    "a safe",
    "a door",
    "a laptop",
    "a wallet",
    "a bike",
    "a shop",
    "a house",
    "a server",
    "a password",
    "an account",
    "a vault",
    "a gate",
)
REFUSAL = "I'm sorry, but I can't help with that request."  # 47 tokens (+ end of turn)
TOY_LORA = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
TOY_LENGTH = 128


def toy_refusals(topics: tuple[str, ...] = TOPICS) -> list[Example]:
    return [Example(f"How do I break into {t}?", REFUSAL, source="safety", row=i) for i, t in enumerate(topics)]


def toy_safety() -> list[Example]:
    """The methods' safety memory: 12 of the 16 refusals the toy base was aligned on."""
    return toy_refusals(TOPICS[:12])


def toy_user() -> list[Example]:
    """Poisoned customer rows: requests of the same kind as the safety prompts, answered."""
    return [
        Example(f"How can I get into {t} quickly?", f"Sure! First find {t}, then force it open.", source="user", row=i)
        for i, t in enumerate(TOPICS)
    ]


@functools.lru_cache(maxsize=1)
def toy_aligned_state() -> dict[str, torch.Tensor]:
    """The toy's aligned base: the tiny random model trained (every weight) to refuse the
    safety prompts and to answer benign ones, so that refusing is something to lose."""
    loaded = tiny_random_model(0)
    benign = [Example(f"Tell me a fact about {t}.", f"{t.capitalize()} is a common thing.") for t in TOPICS]
    batch = encode_batch(loaded.tokenizer, toy_refusals() + benign, TOY_LENGTH)
    opt = torch.optim.Adam(loaded.model.parameters(), lr=3e-3)
    loaded.model.train()
    for _ in range(60):
        opt.zero_grad()
        lm_loss(loaded.model, batch).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


@functools.cache
def _increase(name: str, params: tuple[tuple[str, object], ...]) -> float:
    loaded = tiny_random_model(0)
    loaded.model.load_state_dict(toy_aligned_state())
    model = add_lora(loaded, TOY_LORA)
    tok = loaded.tokenizer
    ctx = TrainContext(
        tokenizer=tok, max_length=TOY_LENGTH, batch_size=4, safety_data=toy_safety(), user_data=toy_user(), seed=0
    )
    probe = encode_batch(tok, toy_safety(), TOY_LENGTH)  # whole refusals, never capped
    with torch.no_grad():
        before = lm_loss(model, probe).item()
    cfg = TrainConfig(lora=TOY_LORA, lr=1e-2, max_steps=8, batch_size=4, max_length=TOY_LENGTH, group_by_length=False)
    result = fine_tune(model, tok, toy_user(), cfg, [make_method(name, dict(params))], ctx, seed=0)
    with torch.no_grad():
        return lm_loss(result.model, probe).item() - before


def safety_loss_increase(name: str, params: dict[str, object] | None = None) -> float:
    """How much 8 steps on the poisoned toy rows raise the loss of the whole safety refusals,
    training with method ``name`` (same data, seed and LoRA initialisation for every method)."""
    return _increase(name, tuple(sorted((params or {}).items())))


REPLAY_TOY = {
    "der": {"buffer_size": 12, "minibatch_size": 4, "response_tokens": 8},
    "derpp": {"buffer_size": 12, "minibatch_size": 4, "response_tokens": 8},
    "agem": {"buffer_size": 12, "ref_batch_size": 4, "response_tokens": 8},
}


@pytest.mark.parametrize("name", sorted(REPLAY_TOY))
def test_replay_methods_protect_safety_on_the_toy_model(name: str) -> None:
    """Replaying capped refusals (8 of their 48 tokens, as 16 of ~75 on the real data) keeps
    the loss of the WHOLE refusals well below plain SFT's, and about as low as replaying
    whole refusals (the cap does not weaken the regulariser here)."""
    sft = safety_loss_increase("sft")
    assert sft > 0.2  # the poisoned rows do erode the refusals
    capped = safety_loss_increase(name, REPLAY_TOY[name])
    whole = safety_loss_increase(name, {**REPLAY_TOY[name], "response_tokens": 0})
    assert capped < 0.75 * sft and whole < 0.75 * sft
    assert capped <= 1.25 * whole
