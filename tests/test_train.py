from dataclasses import dataclass, field

import pytest
import torch

from ussafety.config import LoraConfig, TrainConfig
from ussafety.data.types import Example
from ussafety.methods import Method, TrainContext, make_method, register
from ussafety.models.chat import encode_batch
from ussafety.models.loading import add_lora, tiny_random_model
from ussafety.models.losses import lm_loss, reference_lm_loss
from ussafety.train.trainer import fine_tune

ROWS = [Example(prompt=f"q{i}", response="the same answer") for i in range(8)]


def test_response_only_loss_equals_full_logits_loss() -> None:
    lm = tiny_random_model()
    batch = encode_batch(lm.tokenizer, ROWS[:3] + [Example(prompt="long " * 9, response="b")], 64)
    assert torch.allclose(lm_loss(lm.model, batch), reference_lm_loss(lm.model, batch), atol=1e-5)


@register("_recorder")
@dataclass
class Recorder(Method):
    """Records the order in which the trainer calls the hooks."""

    calls: list[str] = field(default_factory=list)

    def prepare(self, model, ctx):
        self.calls.append("prepare")

    def loss(self, model, batch, task_loss, ctx):
        self.calls.append("loss")
        return task_loss

    def after_backward(self, model, ctx):
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
        self.calls.append("after_backward")

    def after_step(self, model, ctx):
        self.calls.append("after_step")

    def finalize(self, model, ctx):
        self.calls.append("finalize")
        return model


def test_trainer_calls_hooks_in_order_and_learns() -> None:
    lm = tiny_random_model()
    with torch.no_grad():  # default 0.02-std tied embeddings cap the logits near uniform
        lm.model.get_input_embeddings().weight.normal_(0, 1.0)
    model = add_lora(lm, LoraConfig(r=4, alpha=8))
    ctx = TrainContext(tokenizer=lm.tokenizer, max_length=64, batch_size=4)
    batch = encode_batch(lm.tokenizer, ROWS[:4], 64)
    before = float(lm_loss(model, batch).detach())
    rec = make_method("_recorder")
    cfg = TrainConfig(lora=LoraConfig(r=4, alpha=8), batch_size=4, epochs=5, lr=1e-1)
    result = fine_tune(model, lm.tokenizer, ROWS, cfg, [rec], ctx)
    assert result.steps == 10 and ctx.total_steps == 10
    assert rec.calls[0] == "prepare" and rec.calls[-1] == "finalize"
    assert rec.calls[1:4] == ["loss", "after_backward", "after_step"]
    assert rec.calls.count("after_step") == 10
    assert float(lm_loss(result.model, batch).detach()) < before / 2


def test_make_method_rejects_unknown_names_and_params() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        make_method("no_such_method")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_method("sft", {"alpha": 1})


def _count_forwards(model) -> list[int]:
    """Grows by one entry per forward pass of the decoder."""
    calls: list[int] = []
    model.get_base_model().get_decoder().register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("name, forwards_per_step", [("sft", 1), ("lwf", 2)])
def test_one_trainer_forward_per_step_shared_with_the_methods(name: str, forwards_per_step: int) -> None:
    """LwF reuses the trainer's forward pass (ctx.outputs): one extra pass, the reference."""
    lm = tiny_random_model()
    model = add_lora(lm, LoraConfig(r=4, alpha=8))
    calls = _count_forwards(model)
    seen: list[bool] = []

    @dataclass
    class Spy(Method):
        def loss(self, model, batch, task_loss, ctx):
            seen.append(ctx.outputs is not None and ctx.batch is batch and ctx.outputs.logits.requires_grad)
            return task_loss

    ctx = TrainContext(tokenizer=lm.tokenizer, max_length=64, batch_size=4)
    cfg = TrainConfig(lora=LoraConfig(r=4, alpha=8), batch_size=4, max_steps=3, lr=1e-2)
    fine_tune(model, lm.tokenizer, ROWS, cfg, [make_method(name), Spy()], ctx)
    assert len(calls) == 3 * forwards_per_step and seen == [True] * 3
    assert ctx.outputs is None  # never kept past a step (it holds the graph)
    assert ctx.logs["prepare_s"] >= 0.0


def test_step_batch_replaces_the_batch_before_the_forward() -> None:
    lm = tiny_random_model()
    model = add_lora(lm, LoraConfig(r=4, alpha=8))
    other = encode_batch(lm.tokenizer, [Example(prompt="x", response="a different answer")] * 4, 64)
    losses: list[float] = []

    @dataclass
    class Swap(Method):
        def step_batch(self, batch, ctx):
            return other

        def loss(self, model, batch, task_loss, ctx):
            assert batch is other and ctx.batch is other
            with torch.no_grad():
                losses.append((float(task_loss), float(lm_loss(model, other))))
            return task_loss

    ctx = TrainContext(tokenizer=lm.tokenizer, max_length=64, batch_size=4)
    cfg = TrainConfig(lora=LoraConfig(r=4, alpha=8), batch_size=4, max_steps=2, lr=1e-2)
    fine_tune(model, lm.tokenizer, ROWS, cfg, [Swap()], ctx)
    assert len(losses) == 2 and all(a == pytest.approx(b, rel=1e-6) for a, b in losses)
