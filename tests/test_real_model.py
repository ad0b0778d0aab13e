"""The real embedded model, briefly (marked: deselect with -m 'not real_model')."""

import pytest

from ussafety.config import LoraConfig, ModelConfig
from ussafety.data.types import Example
from ussafety.evaluate.generate import generate_for
from ussafety.models.chat import encode_batch
from ussafety.models.loading import add_lora, load_model
from ussafety.models.losses import lm_loss
from ussafety.paths import PROJECT_ROOT

pytestmark = pytest.mark.real_model


def test_embedded_model_answers_and_takes_a_lora_step(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf")
    monkeypatch.setenv("USSAFETY_CACHE", str(PROJECT_ROOT / ".cache"))
    lm = load_model(ModelConfig(name="embedded"))
    answer = generate_for(
        lm.model, lm.tokenizer, [Example(prompt="What is the capital of France?")], max_new_tokens=12
    )[0]
    assert "Paris" in answer
    model = add_lora(lm, LoraConfig(r=4, alpha=8))
    batch = encode_batch(lm.tokenizer, [Example(prompt="Say hi.", response="Hi!")], 64)
    loss = lm_loss(model, batch)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and 0 < float(loss) < 20
