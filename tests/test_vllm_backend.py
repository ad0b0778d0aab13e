"""The vLLM generation backend on a CPU machine: argument checks, the error when vLLM (or
a GPU) is missing, the calls it makes to vLLM (through a stand-in module that records
them), and the comparison with HF outputs. The real comparison needs CUDA and vLLM."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from ussafety.evaluate import vllm_backend as vb
from ussafety.evaluate.vllm_backend import (
    VllmGenerator,
    VllmUnavailable,
    check_against_hf,
    compare_outputs,
    divergence_offset,
)
from ussafety.models.loading import tiny_tokenizer


def adapter(tmp_path: Path, name: str, r: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": 2 * r}))
    return folder


class FakeVllm:
    """Stands in for the ``vllm`` package: records what the backend asks of it and answers
    each prompt with its last three tokens reversed, a " ok" suffix and the EOS token."""

    def __init__(self, tok):
        self.tok = tok
        self.engines: list[dict] = []
        self.calls: list[dict] = []
        fake = self

        class LLM:
            def __init__(self, **kw):
                fake.engines.append(kw)

            def generate(self, prompts, params, lora_request=None, use_tqdm=True):
                fake.calls.append({"prompts": prompts, "params": params, "lora": lora_request})
                suffix = fake.tok(" ok", add_special_tokens=False)["input_ids"]
                outs = []
                for p in prompts:
                    ids = list(reversed(p["prompt_token_ids"][-3:])) + suffix + [fake.tok.eos_token_id]
                    outs.append(
                        types.SimpleNamespace(
                            outputs=[
                                types.SimpleNamespace(
                                    token_ids=tuple(ids), text="(vLLM's own detokenisation, not used)"
                                )
                            ]
                        )
                    )
                return outs

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LoRARequest:
            def __init__(self, name, lora_id, path):
                self.args = (name, lora_id, path)

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams
        self.lora_module = types.ModuleType("vllm.lora.request")
        self.lora_module.LoRARequest = LoRARequest


@pytest.fixture
def fake_vllm(monkeypatch):
    tok = tiny_tokenizer()
    fake = FakeVllm(tok)
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", fake.lora_module)
    monkeypatch.setattr(vb, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return fake


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"dtype": "int8"}, "dtype"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_lora_rank": -1}, "max_lora_rank"),
    ],
)
def test_engine_arguments_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        VllmGenerator("some/model", **kw)
    with pytest.raises(ValueError, match="model_dir"):
        VllmGenerator("")


def test_prompts_must_be_a_list_of_strings():
    gen = VllmGenerator("some/model")
    with pytest.raises(TypeError, match="not one string"):
        gen.generate("one prompt")
    with pytest.raises(TypeError, match="item 1 is int"):
        gen.generate(["a", 3])
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate(["a"], max_new_tokens=0)


def test_no_prompts_need_no_engine():
    gen = VllmGenerator("some/model")
    assert gen.generate([]) == []
    assert gen._llm is None


def test_a_folder_that_is_not_an_adapter_fails_before_the_engine(tmp_path):
    gen = VllmGenerator("some/model", max_lora_rank=8)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        gen.generate(["a"], adapter_dir=tmp_path)
    assert gen._llm is None


def test_lora_ranks():
    assert vb.max_lora_rank_for(1) == 8 and vb.max_lora_rank_for(8) == 8
    assert vb.max_lora_rank_for(9) == 16 and vb.max_lora_rank_for(64) == 64
    with pytest.raises(ValueError, match="largest"):
        vb.max_lora_rank_for(1024)


def test_adapter_rank_is_read_from_its_config(tmp_path):
    assert vb.adapter_rank(adapter(tmp_path, "a", 12)) == 12


# --------------------------------------------------------------------------- missing vLLM or GPU


def test_missing_vllm_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert vb.vllm_available() is False
    with pytest.raises(VllmUnavailable, match="vLLM is not installed: pip install vllm.*HF path"):
        VllmGenerator("some/model").generate(["hello"])
    with pytest.raises(ImportError):  # callers catching ImportError catch it too
        vb.generate("some/model", ["hello"])


def test_vllm_without_a_gpu_says_to_use_the_hf_path(monkeypatch):
    monkeypatch.setattr(vb, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VllmUnavailable, match="needs a CUDA GPU.*ussafety.evaluate.generate"):
        VllmGenerator("some/model").generate(["hello"])


def test_importing_the_backend_imports_neither_vllm_nor_torch():
    import subprocess

    code = "import sys, ussafety.evaluate.vllm_backend; print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- what is asked of vLLM


def test_greedy_generation_through_vllm_keeps_the_hf_contract(fake_vllm):
    tok = fake_vllm.tok
    gen = VllmGenerator("/models/base", tokenizer=tok, dtype="bfloat16", seed=3)
    prompts = ["<|im_start|>user\nabc<|im_end|>\n", "<|im_start|>user\nxyz!<|im_end|>\n"]
    out = gen.generate(prompts, max_new_tokens=7)
    (engine,) = fake_vllm.engines
    assert engine["model"] == "/models/base" and engine["dtype"] == "bfloat16" and engine["seed"] == 3
    assert "enable_lora" not in engine
    (call,) = fake_vllm.calls
    assert call["params"].kw["temperature"] == 0.0 and call["params"].kw["max_tokens"] == 7
    assert call["params"].kw["stop_token_ids"] == [tok.eos_token_id]
    assert call["lora"] is None
    # Token ids exactly as the HF path encodes them: the template's own BOS, none added.
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [
        tok(p, add_special_tokens=False)["input_ids"] for p in prompts
    ]
    # Decoded by the HF tokenizer, special tokens dropped, stripped, in the caller's order.
    expected = []
    for p in prompts:
        ids = list(reversed(tok(p, add_special_tokens=False)["input_ids"][-3:]))
        expected.append(
            tok.decode(
                ids + tok(" ok", add_special_tokens=False)["input_ids"] + [tok.eos_token_id], skip_special_tokens=True
            ).strip()
        )
    assert out == expected
    assert out[0].endswith("ok") and "<|im_end|>" not in out[0]
    gen.generate(prompts[:1], max_new_tokens=2)
    assert len(fake_vllm.engines) == 1  # the engine is built once


def test_adapters_are_served_as_lora_requests_with_stable_ids(fake_vllm, tmp_path):
    first, second = adapter(tmp_path, "run1", 8), adapter(tmp_path, "run2", 16)
    gen = VllmGenerator("/models/base", tokenizer=fake_vllm.tok, max_lora_rank=16)
    gen.generate(["a"], adapter_dir=first)
    gen.generate(["b"], adapter_dir=second)
    gen.generate(["c"], adapter_dir=first)
    assert fake_vllm.engines[0]["enable_lora"] is True and fake_vllm.engines[0]["max_lora_rank"] == 16
    ids = [c["lora"].args for c in fake_vllm.calls]
    assert ids[0] == ids[2] and ids[0][1] != ids[1][1]
    assert ids[0][2] == str(first.resolve()) and ids[1][2] == str(second.resolve())
    assert min(i[1] for i in ids) >= 1  # vLLM reserves 0


def test_an_adapter_above_the_engines_rank_or_without_lora_is_refused(fake_vllm, tmp_path):
    big = adapter(tmp_path, "big", 32)
    with pytest.raises(ValueError, match="rank 32 > the engine's max_lora_rank 16"):
        VllmGenerator("/m", tokenizer=fake_vllm.tok, max_lora_rank=16).generate(["a"], adapter_dir=big)
    with pytest.raises(ValueError, match="without LoRA support"):
        VllmGenerator("/m", tokenizer=fake_vllm.tok).generate(["a"], adapter_dir=big)


def test_one_shot_generate_sizes_the_engine_for_the_adapter(fake_vllm, tmp_path):
    out = vb.generate("/m", ["hi"], 5, adapter_dir=adapter(tmp_path, "a", 12), tokenizer=fake_vllm.tok)
    assert len(out) == 1 and fake_vllm.engines[0]["max_lora_rank"] == 16


# --------------------------------------------------------------------------- comparison


def test_divergence_offset():
    assert divergence_offset("same", "same") is None
    assert divergence_offset("abcX", "abcY") == 3
    assert divergence_offset("abc", "abcdef") == 3
    assert divergence_offset("", "x") == 0


def test_compare_outputs_counts_exact_matches_and_finds_the_earliest_divergence():
    ref = ["I cannot help with that.", "Sure, here is", "positive", "The answer is 42"]
    cand = ["I cannot help with that.", "Sure, here are", "negative", "The answer is 42"]
    c = compare_outputs(ref, cand)
    assert c.n == 4 and c.n_exact == 2 and c.exact_match_rate == 0.5
    assert [d.index for d in c.divergences] == [1, 2]
    assert c.first_divergence.index == 2 and c.first_divergence.offset == 0
    assert c.divergences[0].offset == len("Sure, here ")
    assert c.divergences[0].reference.endswith("is") and c.divergences[0].candidate.endswith("are")
    d = c.to_dict()
    assert d["exact_match_rate"] == 0.5 and d["first_divergence"]["index"] == 2
    assert json.dumps(d)


def test_compare_outputs_edge_cases():
    same = compare_outputs(["a", "b"], ["a", "b"])
    assert same.exact_match_rate == 1.0 and same.first_divergence is None
    assert compare_outputs([], []).exact_match_rate == 1.0
    with pytest.raises(ValueError, match="2 reference outputs but 1"):
        compare_outputs(["a", "b"], ["a"])


def test_check_against_hf_runs_vllm_on_the_same_prompts(fake_vllm):
    tok = fake_vllm.tok
    gen = VllmGenerator("/m", tokenizer=tok)
    prompts = ["abc", "def"]
    agreeing = gen.generate(prompts, 4)
    c = check_against_hf(gen, prompts, [agreeing[0], "something else"], 4)
    assert c.n_exact == 1 and c.first_divergence.index == 1
    with pytest.raises(ValueError, match="2 prompts but 1 HF outputs"):
        check_against_hf(gen, prompts, ["x"], 4)


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.skipif(
    not (torch.cuda.is_available() and vb.vllm_available()),
    reason="compares real vLLM with HF generate: needs a CUDA GPU and vLLM installed",
)
def test_vllm_matches_hf_generate_on_a_gpu(tmp_path):
    from ussafety.evaluate.generate import generate as hf_generate
    from ussafety.models.loading import tiny_random_model

    lm = tiny_random_model(seed=0)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    prompts = [
        lm.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("How do I bake bread?", "Name a colour.", "2+2?", "Say hi.")
    ]
    hf = hf_generate(lm.model.to("cuda"), lm.tokenizer, prompts, max_new_tokens=16)
    gen = VllmGenerator(tmp_path, tokenizer=lm.tokenizer, dtype="float32", gpu_memory_utilization=0.3)
    c = check_against_hf(gen, prompts, hf, 16)
    assert c.exact_match_rate >= 0.75, c.to_dict()
