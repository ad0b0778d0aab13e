import torch

from ussafety.data.types import Example
from ussafety.evaluate.generate import generate
from ussafety.models.chat import prompt_text
from ussafety.models.loading import tiny_random_model


def test_batched_left_padded_generation_equals_one_at_a_time() -> None:
    lm = tiny_random_model(seed=3)
    with torch.no_grad():  # larger weights so the random model says varied things
        for p in lm.model.parameters():
            p.normal_(0, 0.3)
    prompts = [prompt_text(lm.tokenizer, Example(prompt=p)) for p in
               ["hi", "a much longer question about several things?", "mid length one", "x"]]
    batched = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=12, batch_size=4)
    single = [generate(lm.model, lm.tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert any(len(s) > 0 for s in single)


def test_generation_restores_padding_side_and_training_mode() -> None:
    lm = tiny_random_model()
    lm.model.train()
    generate(lm.model, lm.tokenizer, ["abc"], max_new_tokens=2)
    assert lm.tokenizer.padding_side == "right" and lm.model.training
    assert generate(lm.model, lm.tokenizer, [], max_new_tokens=2) == []
    assert torch.is_grad_enabled()
