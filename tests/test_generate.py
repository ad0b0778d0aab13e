"""Generation gives the tokens of one-prompt-at-a-time greedy decoding, whatever the
engine, batch size, cache budget, prompt lengths and stopping points.

The reference is HF ``model.generate`` on a single unpadded prompt: no padding, no
shared prefix, no slot cache, so it checks our decode loop against an independent
implementation. The tiny random model's tokenizer is byte-level (one token per byte),
so prompt lengths differ by hundreds of tokens; its end-of-turn embedding is scaled up
so that some answers end early with EOS and others run to ``max_new_tokens``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ussafety.config import LoraConfig
from ussafety.data.types import Example
from ussafety.evaluate.generate import generate, generate_for, slot_engine_supported
from ussafety.models.chat import prompt_text
from ussafety.models.loading import LoadedModel, add_lora, tiny_random_model

TEXTS = [
    "hi",
    "a much longer question about several things? " * 6,
    "mid length one",
    "x",
    "why",
    "tell me a story about a cat and a dog who were friends",
    "?",
    "ok then",
    "explain " * 20,
    "no",
]
MAX_NEW = 24


def chatty_model(eos_scale: float = 4.0) -> LoadedModel:
    """Tiny model with larger weights (varied outputs) and a louder EOS (early stops)."""
    lm = tiny_random_model(seed=3)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.normal_(0, 0.3)
        lm.model.get_input_embeddings().weight[lm.tokenizer.eos_token_id] *= eos_scale
    return lm


def one_at_a_time(model: Any, tok: Any, prompts: list[str], max_new: int) -> tuple[list[str], list[int]]:
    """Reference outputs (and new-token counts) from HF generate, one prompt per call."""
    outs, counts = [], []
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            g = model.generate(
                **enc,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = g[0, enc["input_ids"].shape[1] :]
        outs.append(tok.decode(new, skip_special_tokens=True).strip())
        counts.append(len(new))
    return outs, counts


@pytest.fixture(scope="module")
def chatty() -> tuple[LoadedModel, list[str], list[str], list[int]]:
    lm = chatty_model()
    prompts = [prompt_text(lm.tokenizer, Example(prompt=t)) for t in TEXTS]
    ref, counts = one_at_a_time(lm.model, lm.tokenizer, prompts, MAX_NEW)
    return lm, prompts, ref, counts


def test_reference_has_early_eos_full_length_answers_and_varied_prompt_lengths(chatty: Any) -> None:
    lm, prompts, ref, counts = chatty
    lengths = [len(lm.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert max(lengths) - min(lengths) > 200
    assert any(c < MAX_NEW for c in counts) and any(c == MAX_NEW for c in counts)
    assert len(set(ref)) > 3


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 16])
def test_slot_engine_equals_one_at_a_time(chatty: Any, batch_size: int) -> None:
    """Batch sizes below the prompt count exercise refilling freed slots mid-decode."""
    lm, prompts, ref, _ = chatty
    got = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=batch_size, engine="slots")
    assert got == ref


def test_hf_engine_equals_one_at_a_time(chatty: Any) -> None:
    lm, prompts, ref, _ = chatty
    assert generate(lm.model, lm.tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=4, engine="hf") == ref


def test_stats_count_answer_tokens_and_the_work_done(chatty: Any) -> None:
    """The slot engine computes exactly the answer tokens; HF generate also decodes padding
    for rows that already ended (the waste the slot engine removes)."""
    lm, prompts, _, counts = chatty
    slots: dict[str, Any] = {}
    hf: dict[str, Any] = {}
    generate(lm.model, lm.tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=3, stats=slots)
    generate(lm.model, lm.tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=10, engine="hf", stats=hf)
    assert slots["engine"] == "slots" and hf["engine"] == "hf"
    assert slots["new_tokens"] == hf["new_tokens"] == slots["decoded_tokens"] == sum(counts)
    assert hf["decoded_tokens"] == MAX_NEW * len(prompts) > sum(counts)
    assert slots["prompt_tokens"] == hf["prompt_tokens"] > slots["prefix_tokens"] * len(prompts) > 0


def test_small_cache_budget_resizes_and_still_matches(chatty: Any) -> None:
    """A budget of a few rows' worth of columns: the long prompt decodes nearly alone,
    then the cache is reallocated with fewer columns and more rows for the short ones."""
    lm, prompts, ref, _ = chatty
    cfg = lm.model.config
    column = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    got = generate(
        lm.model,
        lm.tokenizer,
        prompts,
        max_new_tokens=MAX_NEW,
        batch_size=8,
        engine="slots",
        kv_budget_bytes=column * 600,
    )
    assert got == ref


def test_eager_attention_matches(chatty: Any) -> None:
    lm, prompts, ref, _ = chatty
    saved = lm.model.config._attn_implementation
    lm.model.config._attn_implementation = "eager"
    try:
        assert generate(lm.model, lm.tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=3, engine="slots") == ref
    finally:
        lm.model.config._attn_implementation = saved


def test_prompts_without_common_prefix_and_identical_prompts() -> None:
    """No shared prefix (raw text), and identical prompts (prefix = all but the last token)."""
    lm = chatty_model()
    raw = ["hello world", "x", "zzz top", "a" * 40]
    ref, _ = one_at_a_time(lm.model, lm.tokenizer, raw, 12)
    assert generate(lm.model, lm.tokenizer, raw, max_new_tokens=12, batch_size=2) == ref
    same = generate(lm.model, lm.tokenizer, ["abc"] * 3, max_new_tokens=12)
    assert same == [one_at_a_time(lm.model, lm.tokenizer, ["abc"], 12)[0][0]] * 3
    assert (
        generate(lm.model, lm.tokenizer, ["q"], max_new_tokens=12)
        == one_at_a_time(lm.model, lm.tokenizer, ["q"], 12)[0]
    )


def test_lora_wrapped_model_matches() -> None:
    """Evaluation decodes PEFT models with unmerged adapters; the slot engine drives them."""
    lm = chatty_model()
    peft = add_lora(lm, LoraConfig())
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    assert slot_engine_supported(peft) is None
    prompts = [prompt_text(lm.tokenizer, Example(prompt=t)) for t in TEXTS[:6]]
    ref, _ = one_at_a_time(peft, lm.tokenizer, prompts, 16)
    assert generate(peft, lm.tokenizer, prompts, max_new_tokens=16, batch_size=4) == ref


def test_progress_counts_every_prompt_and_order_is_the_callers(chatty: Any) -> None:
    lm, prompts, ref, _ = chatty
    seen: list[int] = []
    perm = [3, 1, 0, 2, 9, 8, 4, 7, 6, 5]
    got = generate(
        lm.model, lm.tokenizer, [prompts[i] for i in perm], max_new_tokens=MAX_NEW, batch_size=4, progress=seen.append
    )
    assert got == [ref[i] for i in perm]
    assert sum(seen) == len(prompts)


def test_one_and_zero_new_tokens(chatty: Any) -> None:
    lm, prompts, _, _ = chatty
    ref1, _ = one_at_a_time(lm.model, lm.tokenizer, prompts, 1)
    assert generate(lm.model, lm.tokenizer, prompts, max_new_tokens=1, batch_size=3) == ref1
    assert generate(lm.model, lm.tokenizer, prompts, max_new_tokens=0) == [""] * len(prompts)


def test_generate_for_formats_examples() -> None:
    lm = chatty_model()
    examples = [Example(prompt=t) for t in TEXTS[:3]]
    prompts = [prompt_text(lm.tokenizer, ex) for ex in examples]
    assert (
        generate_for(lm.model, lm.tokenizer, examples, max_new_tokens=8, batch_size=2)
        == one_at_a_time(lm.model, lm.tokenizer, prompts, 8)[0]
    )


def test_unsupported_models_fall_back_to_hf_or_refuse_slots() -> None:
    lm = chatty_model()
    lm.model.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in (slot_engine_supported(lm.model) or "")
    prompts = ["hello there", "x"]
    expected = [generate(lm.model, lm.tokenizer, [p], max_new_tokens=6, engine="hf")[0] for p in prompts]
    assert generate(lm.model, lm.tokenizer, prompts, max_new_tokens=6) == expected
    with pytest.raises(ValueError, match="slot engine"):
        generate(lm.model, lm.tokenizer, prompts, max_new_tokens=6, engine="slots")
    with pytest.raises(ValueError, match="engine"):
        generate(lm.model, lm.tokenizer, prompts, engine="fast")  # type: ignore[arg-type]


def test_generation_restores_padding_side_training_mode_and_threads() -> None:
    lm = tiny_random_model()
    lm.model.train()
    threads = torch.get_num_threads()
    generate(lm.model, lm.tokenizer, ["abc"], max_new_tokens=2, threads=1)
    generate(lm.model, lm.tokenizer, ["abc"], max_new_tokens=2, engine="hf")
    assert lm.tokenizer.padding_side == "right" and lm.model.training
    assert torch.get_num_threads() == threads
    assert generate(lm.model, lm.tokenizer, [], max_new_tokens=2) == []
    assert torch.is_grad_enabled()
    with pytest.raises(ValueError, match="empty prompt"):
        generate(lm.model, lm.tokenizer, ["abc", ""], max_new_tokens=2)
