"""Memory and time estimates: counts exact against real (small) models, 7B shapes in the
published ranges, and the refusal of a run that cannot fit."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from ussafety.config import from_dict
from ussafety.methods.costs import method_cost
from ussafety.models import estimate as est
from ussafety.models.costs import DEVICES, GiB
from ussafety.models.estimate import estimate_run
from ussafety.models.shape import model_shape
from ussafety.study import gpu_cost
from ussafety.study.gpu_cost import DoesNotFit, check_fits, estimate_config, estimate_grid, judge_model

TINY = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=300,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)
LLAMA7B = "meta-llama/Llama-2-7b-chat-hf"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def real_tiny(tie: bool = False) -> torch.nn.Module:
    fields = {k: v for k, v in TINY.items() if k != "model_type"} | {"tie_word_embeddings": tie}
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(**fields))


@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_equals_the_real_models(tie):
    shape = model_shape(TINY | {"tie_word_embeddings": tie})
    assert shape.n_params == sum(p.numel() for p in real_tiny(tie).parameters())


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ALL_LINEAR, ["down_proj"]])
def test_lora_parameter_count_equals_peft(targets):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(real_tiny(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert model_shape(TINY).lora_params(4, targets) == trainable


def test_lora_targets_that_match_nothing_are_an_error():
    with pytest.raises(ValueError, match="match no Linear layer.*q_proj"):
        model_shape(TINY).lora_params(8, ["query_key_value"])
    with pytest.raises(ValueError, match="empty"):
        model_shape(TINY).lora_params(8, [])
    with pytest.raises(ValueError, match="rank"):
        model_shape(TINY).lora_params(0, ["q_proj"])


def test_the_head_is_not_a_lora_target_and_not_in_the_body():
    shape = model_shape(TINY)
    assert "lm_head" not in shape.linear_shapes
    assert shape.head_params == 64 * 300


def test_known_7b_shapes_match_their_published_sizes():
    llama = model_shape(LLAMA7B)
    assert 6.5e9 < llama.n_params < 7.0e9
    assert llama.n_params == 6_738_415_616  # Llama-2-7b's published count
    assert model_shape("mistralai/Mistral-7B-Instruct-v0.2").n_params == 7_241_732_096
    gemma = model_shape("google/gemma-2b-it")
    assert gemma.n_params == 2_506_172_416 and gemma.head_dim == 256 and gemma.n_kv_heads == 1
    assert model_shape("embedded").n_params == 134_515_008  # the GGUF's tensors add up to this
    # r=8 on the 7 linear layers of 32 Llama blocks: 8 * (in + out) summed.
    per_layer = 8 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert llama.lora_params(8, ALL_LINEAR) == 32 * per_layer


def test_tiny_random_shape_matches_the_tests_model():
    from ussafety.models.loading import tiny_random_model

    real = tiny_random_model().model
    assert model_shape("tiny-random").n_params == sum(p.numel() for p in real.parameters())


def test_a_local_folder_is_read_from_its_config_json(tmp_path):
    cfg = LlamaConfig(**{k: v for k, v in TINY.items() if k != "model_type"})
    cfg.save_pretrained(tmp_path)
    assert model_shape(str(tmp_path)).n_params == model_shape(TINY).n_params


def test_an_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'org/nope'.*Llama-2-7b-chat-hf"):
        model_shape("org/nope")


def test_llama2_7b_estimate_lands_in_plausible_ranges():
    e = estimate_run(
        LLAMA7B,
        dtype="bfloat16",
        lora_r=8,
        lora_targets=ALL_LINEAR,
        batch_size=8,
        seq_len=512,
        n_train_rows=1000,
        epochs=1,
        n_eval_prompts=550,
        max_new_tokens=128,
        gradient_checkpointing=True,
    )
    assert 13.0e9 < e.weights_bytes < 14.0e9  # ~13.5 GB of bf16 weights
    assert 19e6 < e.n_lora_params < 21e6
    assert e.lora_bytes == 16 * e.n_lora_params
    # Activations of 8 x 512 tokens through 32 layers: ~20 GB without checkpointing (the
    # Korthikanti-style count), ~1-2 GB with it.
    assert 15 * GiB < e.activations_bytes_no_ckpt < 25 * GiB
    assert 1 * GiB < e.activations_bytes_ckpt < 3 * GiB
    assert e.activations_bytes == e.activations_bytes_ckpt
    # KV cache of 32 prompts x (128 + 128) tokens: 32 x 256 x 32 x 2 x 4096 x 2 B = 4 GiB.
    assert e.kv_cache_bytes == 32 * 256 * 32 * 2 * 4096 * 2
    assert 14 * GiB < e.train_peak_bytes < 20 * GiB
    assert e.fits(DEVICES["H100"].memory_bytes) and not e.fits(DEVICES["T4"].memory_bytes)
    # 1000 rows of 512 tokens = 0.5 M tokens; LoRA with recomputation ~6N per token:
    # ~2e16 FLOPs, under a minute at 400 TFLOP/s.
    assert 1.5e16 < e.train_flops < 3e16
    assert 20 < e.train_s < 120
    assert e.optimizer_steps == 125


def test_lora_training_costs_two_thirds_of_full_fine_tuning():
    shape = model_shape(LLAMA7B)
    kw = dict(tokens=256, head_tokens=256, lora_params=0)
    fwd, _ = est.forward_flops(shape, **kw)
    lora = est.lora_train_flops(shape, checkpointing=False, **kw)
    full = est.lora_train_flops(shape, checkpointing=False, full_backward=True, **kw)
    assert lora / full == pytest.approx(2 / 3, rel=0.01)
    # ~6N per token for full fine-tuning (N without the embedding table).
    n = shape.n_params - shape.vocab * shape.hidden
    assert full / 256 == pytest.approx(6 * n, rel=0.03)
    assert est.lora_train_flops(shape, checkpointing=True, **kw) - lora == pytest.approx(fwd)


def test_checkpointing_and_flash_attention_change_activations_as_the_formula_says():
    shape = model_shape(TINY)
    kw = dict(rows=2, tokens=32, act_bytes=2)
    full = est.activation_bytes(shape, **kw)
    h, i = 64, 160
    per_token_layer = (4 * h + 2 * 64 + 2 * 32 + 4 * i) * 2
    assert full == 3 * 2 * 32 * per_token_layer + 2 * 32 * 2 * h * 2
    ckpt = est.activation_bytes(shape, checkpointing=True, **kw)
    assert ckpt == 2 * 32 * 3 * h * 2 + 2 * 32 * per_token_layer + 2 * 32 * 2 * h * 2
    eager = est.activation_bytes(shape, flash=False, **kw)
    assert eager - full == 3 * 2 * 32 * 4 * 32 * (4 + 2)  # heads x s fp32 + bf16 per token


def test_activation_formula_is_close_to_what_a_real_forward_keeps():
    """The count against autograd's saved tensors on a small Llama in fp32 (SDPA): within 35%."""
    model = real_tiny()
    model.config._attn_implementation = "sdpa"
    ids = torch.randint(0, 300, (2, 48))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.requires_grad or t.grad_fn is not None or t.is_floating_point():
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden = model.model(input_ids=ids).last_hidden_state
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    measured = sum(n for ptr, n in saved.items() if ptr not in params)
    predicted = est.activation_bytes(model_shape(TINY), rows=2, tokens=48, act_bytes=4)
    assert hidden.shape == (2, 48, 64)
    assert 0.65 < measured / predicted < 1.35, (measured, predicted)


def test_kv_cache_formula():
    shape = model_shape("mistralai/Mistral-7B-Instruct-v0.2")
    assert est.kv_cache_bytes(shape, rows=4, tokens=100) == 4 * 100 * 32 * 2 * 8 * 128 * 2


def test_decoding_is_bound_by_bandwidth_or_launches_not_flops():
    shape = model_shape(LLAMA7B)
    dev = DEVICES["H200"]
    weights = shape.n_params * 2
    s = est.generation_seconds(
        shape,
        n_prompts=32,
        prompt_tokens=64,
        new_tokens=100,
        batch_size=32,
        weights_bytes=weights,
        dtype_bytes=2,
        device=dev,
    )
    step = max(weights / dev.mem_bw_bytes_per_s, 32 * dev.launch_overhead_s)
    assert s == pytest.approx(100 * step, rel=0.05)
    assert (
        est.generation_seconds(
            shape,
            n_prompts=0,
            prompt_tokens=64,
            new_tokens=10,
            batch_size=8,
            weights_bytes=weights,
            dtype_bytes=2,
            device=dev,
        )
        == 0.0
    )


def test_a_measured_rate_replaces_the_assumed_one():
    kw = dict(n_train_rows=2000, seq_len=1024, batch_size=16, gradient_checkpointing=True)
    slow = estimate_run(LLAMA7B, flops_per_s=100e12, **kw)
    fast = estimate_run(LLAMA7B, flops_per_s=400e12, **kw)
    assert slow.train_s == pytest.approx(4 * fast.train_s)
    with pytest.raises(ValueError, match="flops_per_s"):
        estimate_run(LLAMA7B, flops_per_s=0.0)


def test_short_rows_are_bound_by_reading_the_weights():
    e = estimate_run(LLAMA7B, n_train_rows=80, batch_size=8, train_tokens_per_row=4, seq_len=512)
    dev = DEVICES["H200"]
    floor = 2 * (e.weights_bytes / dev.mem_bw_bytes_per_s + 32 * dev.launch_overhead_s)
    assert e.train_s == pytest.approx(10 * floor)


def test_ewc_keeps_eight_bytes_per_adapted_weight_and_does_not_fit_an_h100():
    sft = estimate_run(LLAMA7B, lora_targets=ALL_LINEAR, gradient_checkpointing=False)
    ewc = estimate_run(LLAMA7B, lora_targets=ALL_LINEAR, method=method_cost("ewc"), gradient_checkpointing=False)
    adapted = model_shape(LLAMA7B).adapted_weight_params(ALL_LINEAR)
    assert ewc.method_bytes == 8 * adapted
    assert ewc.train_peak_bytes - sft.train_peak_bytes == 8 * adapted
    assert not ewc.fits(DEVICES["H100"].memory_bytes) and ewc.fits(DEVICES["H200"].memory_bytes)


def test_methods_add_their_costs():
    base = estimate_run(LLAMA7B, gradient_checkpointing=True)
    der = estimate_run(LLAMA7B, method=method_cost("der"), gradient_checkpointing=True)
    # The replayed minibatch's graph is alive with the task batch's: 8 + 8 rows at once.
    assert der.activations_bytes == est.activation_bytes(
        model_shape(LLAMA7B),
        rows=16,
        tokens=512,
        act_bytes=2,
        lora_r=8,
        lora_targets=est.DEFAULT_TARGETS,
        checkpointing=True,
    )
    assert der.logits_bytes == 2 * base.logits_bytes
    assert der.train_s > 1.9 * base.train_s
    lwf = estimate_run(LLAMA7B, method=method_cost("lwf"), gradient_checkpointing=True)
    assert base.train_s < lwf.train_s < der.train_s
    agem = estimate_run(LLAMA7B, method=method_cost("agem"), gradient_checkpointing=True)
    assert agem.method_bytes == 2 * 4 * agem.n_lora_params
    safeinstr = estimate_run(LLAMA7B, method=method_cost("safeinstr"), n_train_rows=1000)
    assert safeinstr.train_rows == 1030
    assert method_cost("ewc").prepare_full_backward_passes == 128  # per example, 16 x 8 rows
    assert method_cost("ewc", {"per": "batch"}).prepare_full_backward_passes == 16
    assert method_cost("mas", {"n_batches": 2}).prepare_full_backward_rows == 16
    ewc = estimate_run(LLAMA7B, method=method_cost("ewc"), n_train_rows=16, seq_len=128, batch_size=8)
    ewc_batched = estimate_run(
        LLAMA7B, method=method_cost("ewc", {"per": "batch"}), n_train_rows=16, seq_len=128, batch_size=8
    )
    assert ewc.train_flops == ewc_batched.train_flops and ewc.train_s > ewc_batched.train_s
    assert method_cost("der", {"minibatch_size": 4}).replay_rows == 4
    assert method_cost("derpp").replay_rows == 16
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_cost("nope")


def test_every_registered_method_has_a_cost_and_the_table_holds_only_what_the_classes_do_not_say():
    from ussafety.methods import REGISTRY, load_all, trains_like_sft
    from ussafety.methods.costs import COSTS, uncosted_methods

    load_all()
    public = {n for n in REGISTRY if not n.startswith("_")}
    assert uncosted_methods() == []
    assert set(COSTS) <= public  # no cost for a method that does not exist
    for name in public:  # whether it reuses SFT's training is the class's word, not the table's
        assert method_cost(name).trains_like_sft == trains_like_sft(REGISTRY[name]), name
        assert (name in COSTS) != trains_like_sft(REGISTRY[name]), name


def test_method_costs_read_the_defaults_from_the_method_classes(monkeypatch):
    from ussafety.methods import REGISTRY, load_all

    load_all()

    @dataclasses.dataclass
    class WiderDER(REGISTRY["der"]):  # the same method with another default
        minibatch_size: int = 5

    assert method_cost("der").replay_rows == 8
    monkeypatch.setitem(REGISTRY, "der", WiderDER)
    assert method_cost("der").replay_rows == 5
    with pytest.raises(ValueError, match="unknown parameter"):
        method_cost("der", {"minibatch": 4})


def test_an_llm_judge_adds_its_weights_and_time():
    plain = estimate_run(LLAMA7B, n_eval_prompts=300, n_train_rows=0)
    judged = estimate_run(LLAMA7B, n_eval_prompts=300, n_train_rows=0, judges=[judge_model("llama_guard")])
    guard = model_shape("meta-llama/Llama-Guard-3-8B")
    assert 8.0e9 < guard.n_params < 8.1e9
    assert judged.judge_bytes > guard.n_params * 2
    assert judged.eval_peak_bytes - plain.eval_peak_bytes == judged.judge_bytes
    assert judged.judge_s > 0 and plain.judge_s == 0
    assert plain.train_peak_bytes == 0 and plain.train_s == 0
    with pytest.raises(ValueError, match="no model known for judge"):
        judge_model("strongreject")


def test_refusal_says_how_much_is_needed_and_what_would_help():
    e = estimate_run(LLAMA7B, method=method_cost("ewc"), gradient_checkpointing=False)
    with pytest.raises(DoesNotFit) as err:
        check_fits(e, gpu_bytes=DEVICES["H100"].memory_bytes)
    text = str(err.value)
    assert "needs about" in text and "training peak" in text and "79.6 GiB" in text
    assert "checkpointing activations would save" in text and "runs under PEFT" in text
    assert "batch_size" in text and "EWC/MAS" in text
    sft = estimate_run(LLAMA7B, lora_targets=ALL_LINEAR, gradient_checkpointing=False, batch_size=64)
    with pytest.raises(DoesNotFit, match="the Unsloth backend .* checkpoints activations"):
        check_fits(sft, gpu_bytes=DEVICES["H100"].memory_bytes)
    assert check_fits(e, gpu_bytes=DEVICES["H200"].memory_bytes) == DEVICES["H200"].memory_bytes


def test_refusal_of_an_evaluation_that_does_not_fit_names_the_judge():
    e = estimate_run(LLAMA7B, n_train_rows=0, n_eval_prompts=300, judges=[judge_model("llama_guard")])
    with pytest.raises(DoesNotFit, match="evaluation peak.*LLM judge"):
        check_fits(e, gpu_bytes=24 * GiB)


def test_without_cuda_the_gpu_size_must_be_given(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="pass gpu_bytes"):
        check_fits(estimate_run("tiny-random", seq_len=64, lora_targets=["q_proj"]))


def test_with_cuda_the_free_memory_is_used(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (10 * GiB, 80 * GiB))
    e = estimate_run(LLAMA7B, gradient_checkpointing=True)
    with pytest.raises(DoesNotFit, match="10.0 GiB"):
        check_fits(e)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="dtype"):
        estimate_run(LLAMA7B, dtype="int3")
    with pytest.raises(ValueError, match="batch_size"):
        estimate_run(LLAMA7B, batch_size=0)
    with pytest.raises(ValueError, match="unknown device"):
        estimate_run(LLAMA7B, device="TPU")


def test_summary_and_dict():
    e = estimate_run(LLAMA7B, n_eval_prompts=10, name="r1")
    text = e.summary()
    assert text.startswith("r1: meta-llama/Llama-2-7b-chat-hf, sft, on H200")
    assert "assumed until measured" in text
    d = e.to_dict()
    assert d["peak_bytes"] == e.peak_bytes and json.dumps(d)


PAPER_PRESET = Path(__file__).resolve().parents[1] / "params" / "presets" / "paper.yaml"


def paper_cfg(**changes):
    """The paper preset as a plain dict (what estimate_config also takes), with changes."""
    import yaml

    d = yaml.safe_load(PAPER_PRESET.read_text())
    for dotted, value in changes.items():
        node = d
        *path, last = dotted.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return d


def test_estimate_config_reads_a_run_config_object():
    from ussafety.config import load_config

    cfg = load_config(PAPER_PRESET)
    assert estimate_config(cfg).to_dict() == estimate_config(cfg.to_dict()).to_dict()
    assert estimate_config(cfg).n_params == model_shape(cfg.model.name).n_params


def test_estimate_config_reads_the_paper_preset():
    d = paper_cfg()
    e = estimate_config(d)
    assert e.model == "meta-llama/Llama-2-7b-chat-hf" and e.method == "sft"
    assert e.gradient_checkpointing  # backend auto: Unsloth on a GPU that has it
    assert e.train_rows == 1000 and e.optimizer_steps == math.ceil(1000 / 16)
    assert e.weights_bytes == model_shape(LLAMA7B).n_params * 2  # dtype auto = bf16
    assert e.judge_bytes > 0  # judges: [..., llama_guard]
    assert e.training_key is not None  # sft: its training is shared with merges
    assert e.fits(DEVICES["H200"].memory_bytes)
    assert estimate_config(d, backend="peft").activations_bytes > 5 * e.activations_bytes


def test_estimate_config_counts_the_committed_split_or_the_sample():
    shape = model_shape(LLAMA7B)
    dev = DEVICES["H200"]
    kw = dict(
        batch_size=32,
        weights_bytes=shape.n_params * 2 + 4 * shape.lora_params(8, ALL_LINEAR),
        dtype_bytes=2,
        device=dev,
        lora_params=shape.lora_params(8, ALL_LINEAR),
    )
    test = estimate_config(paper_cfg())  # eval.split: test, task sst2 (its answers: 8 tokens)
    n = gpu_cost.eval_counts(from_dict(paper_cfg()))
    assert n == {"harmful": 1021, "xstest": 200, "task": 664}  # today's files (docs/splits.md)
    expected = est.generation_seconds(
        shape, n_prompts=n["harmful"] + n["xstest"], prompt_tokens=gpu_cost.SAFETY_PROMPT_TOKENS, new_tokens=128, **kw
    ) + est.generation_seconds(shape, n_prompts=n["task"], prompt_tokens=90, new_tokens=8, **kw)
    assert test.eval_s == pytest.approx(expected)
    # The first batch holds the longest harmful prompts: the KV cache is sized for them.
    assert test.kv_cache_bytes == est.kv_cache_bytes(shape, rows=32, tokens=gpu_cost.SAFETY_PROMPT_MAX_TOKENS + 128)
    sample = estimate_config(
        paper_cfg(
            **{
                "eval.split": "sample",
                "eval.harmful_sets": ["advbench"],
                "eval.n_per_harmful_set": 10,
                "eval.n_xstest": 5,
                "eval.n_task": 7,
            }
        )
    )
    expected = est.generation_seconds(
        shape, n_prompts=15, prompt_tokens=gpu_cost.SAFETY_PROMPT_TOKENS, new_tokens=128, **kw
    ) + est.generation_seconds(shape, n_prompts=7, prompt_tokens=90, new_tokens=8, **kw)
    assert sample.eval_s == pytest.approx(expected)
    gsm8k = estimate_config(paper_cfg(**{"task.name": "gsm8k", "eval.task_max_new_tokens": 256}))
    assert gsm8k.eval_s > test.eval_s  # 500 items of 256 new tokens against 664 of 8


@pytest.mark.parametrize("split", ["test", "validation"])
@pytest.mark.parametrize("task", ["sst2", "gsm8k", "code"])
def test_evaluation_sizes_are_read_from_the_committed_split_files(split, task):
    folder = Path(__file__).resolve().parents[1] / "ussafety" / "data" / "splits"
    size = {p.stem: len(json.loads(p.read_text())["splits"][split]) for p in folder.glob("*.json")}
    task_file = {"sst2": "sst2_v1", "gsm8k": "gsm8k_v1", "code": "humaneval_v1"}[task]
    cfg = from_dict(paper_cfg(**{"task.name": task, "eval.split": split}))
    assert gpu_cost.eval_counts(cfg) == {
        "harmful": size["harmful_v1"],
        "xstest": size["xstest_safe_v1"],
        "task": size[task_file],
    }
    base = from_dict(paper_cfg(**{"task.name": None, "eval.split": split}))  # nothing scored but safety
    assert gpu_cost.eval_counts(base)["task"] == 0


def test_task_tokens_cover_exactly_the_tasks_and_answer_lengths_are_the_tasks():
    from ussafety.data.tasks import TASKS

    assert set(gpu_cost.TASK_TOKENS) == set(TASKS)
    shape = model_shape(LLAMA7B)
    for task in TASKS:  # no eval.task_max_new_tokens: the task's own answer length, as the suite uses
        e = estimate_config(paper_cfg(**{"task.name": task, "eval.task_max_new_tokens": None}))
        n = gpu_cost.eval_counts(from_dict(paper_cfg(**{"task.name": task})))
        tokens = gpu_cost.TASK_TOKENS[task]
        lora = shape.lora_params(8, ALL_LINEAR)
        kw = dict(
            batch_size=32,
            weights_bytes=shape.n_params * 2 + 4 * lora,
            dtype_bytes=2,
            device=DEVICES["H200"],
            lora_params=lora,
        )
        task_s = est.generation_seconds(
            shape, n_prompts=n["task"], prompt_tokens=tokens["prompt"], new_tokens=TASKS[task].max_new_tokens, **kw
        )
        safety_s = est.generation_seconds(
            shape,
            n_prompts=n["harmful"] + n["xstest"],
            prompt_tokens=gpu_cost.SAFETY_PROMPT_TOKENS,
            new_tokens=128,
            **kw,
        )
        assert e.eval_s == pytest.approx(task_s + safety_s), task


def test_the_training_key_is_the_pipelines():
    from ussafety.config import training_key

    for changes in ({}, {"merge.name": "ties"}, {"seed": 2}, {"task.name": "gsm8k"}):
        cfg = from_dict(paper_cfg(**changes))
        assert estimate_config(cfg).training_key == training_key(cfg)


def test_a_merge_only_method_is_estimated_as_sft_plus_the_merge():
    as_method = estimate_config(paper_cfg(**{"method.name": "slerp"}))
    as_merge = estimate_config(paper_cfg(**{"merge.name": "slerp"}))
    assert as_method.method == as_merge.method == "sft+slerp"
    assert as_method.to_dict() == as_merge.to_dict()


def test_judges_are_read_from_their_classes():
    from ussafety.evaluate.judges.llm import HarmBenchJudge, LlamaGuardJudge

    guard, harmbench = judge_model("llama_guard"), judge_model("harmbench")
    assert guard.max_new_tokens == LlamaGuardJudge.max_new_tokens and guard.model == "meta-llama/Llama-Guard-3-8B"
    assert harmbench.max_new_tokens == HarmBenchJudge.max_new_tokens
    assert guard.batch_size == 8  # LLMJudge's default batch


def test_the_estimate_chooses_the_backend_as_the_loader_does():
    from ussafety.models.backend import BackendError

    assert not estimate_config(paper_cfg(**{"method.name": "mas"})).gradient_checkpointing  # auto: PEFT
    assert estimate_config(paper_cfg(**{"model.backend": "unsloth"})).gradient_checkpointing
    with pytest.raises(BackendError, match="base weights"):
        estimate_config(paper_cfg(**{"model.backend": "unsloth", "method.name": "ewc"}))


def test_judge_specs_with_a_folder_are_recognised():
    named = estimate_config(paper_cfg(**{"eval.judges": ["keyword", "llama_guard=/models/lg3"]}))
    plain = estimate_config(paper_cfg(**{"eval.judges": ["keyword", "llama_guard"]}))
    none = estimate_config(paper_cfg(**{"eval.judges": ["keyword", "learned"]}))
    assert named.judge_bytes == plain.judge_bytes > 0 and none.judge_bytes == 0
    assert named.judge_s == plain.judge_s > 0


def test_estimate_config_handles_base_runs_merges_and_ewc():
    base = estimate_config(paper_cfg(**{"task.name": None, "eval.task": "gsm8k"}))
    assert base.method == "base" and base.train_s == 0 and base.eval_s > 0
    merge = estimate_config(paper_cfg(**{"merge.name": "ties"}))
    assert merge.method == "sft+ties" and merge.training_key == estimate_config(paper_cfg()).training_key
    ewc = estimate_config(paper_cfg(**{"method.name": "ewc"}))
    assert ewc.training_key is None and not ewc.gradient_checkpointing  # PEFT for EWC
    other_seed = estimate_config(paper_cfg(seed=1))
    assert other_seed.training_key != estimate_config(paper_cfg()).training_key


def test_grid_charges_a_shared_training_once():
    a = estimate_config(paper_cfg())
    b = estimate_config(paper_cfg(**{"merge.name": "ties"}))
    c = estimate_config(paper_cfg(**{"method.name": "der"}))
    grid = estimate_grid([a, b, c])
    assert grid.charged_train_s == [a.train_s, 0.0, c.train_s]
    assert grid.total_s == pytest.approx(a.total_s + b.eval_s + b.judge_s + c.total_s)
    assert grid.gpu_hours == pytest.approx(grid.total_s / 3600)
    assert grid.peak_bytes == max(a.peak_bytes, b.peak_bytes, c.peak_bytes)
    assert grid.not_fitting(DEVICES["H200"].memory_bytes) == []
    assert grid.not_fitting(20 * GiB) == [r for r in (a, b, c) if r.peak_bytes > 20 * GiB]
    text = grid.summary(gpu_bytes=20 * GiB)
    assert "3 runs" in text and "sft+ties" in text and "DOES NOT FIT" in text
    assert grid.to_dict()["runs"] == 3


def test_gpu_benchmark_cpu_dry_run_writes_every_section(tmp_path):
    """benchmarks/gpu.py end to end on a tiny model: every measurement has a status, the
    packages this machine lacks are recorded as such, the estimate sits beside each step."""
    import importlib.util as iu

    spec = iu.spec_from_file_location("gpu_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py")
    bench = iu.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    bench.main(["--cpu-dry-run", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["matmul"]["status"] == "ok" and result["matmul"]["tflops"] > 0
    assert set(result["versions"]) >= {"torch", "transformers", "peft", "unsloth", "vllm"}
    tiny = result["models"]["tiny"]
    assert tiny["status"] == "ok", tiny.get("error")
    assert tiny["params"] == model_shape("tiny-random").n_params
    for key in ("train_peft_sft", "train_peft_der", "train_peft_ewc", "train_peft_sft_ckpt"):
        assert tiny[key]["status"] == "ok", (key, tiny[key].get("error"))
        assert tiny[key]["tokens_per_s"] > 0 and math.isfinite(tiny[key]["loss"])
        assert tiny[key]["estimate"]["status"] == "ok" and tiny[key]["estimate"]["effective_flops_per_s"] > 0
    assert tiny["train_peft_ewc"]["estimate"]["method_bytes"] > 0
    assert tiny["der_vs_sft"]["step_time_ratio"] > 1
    for key in ("generate_hf_base", "generate_hf_lora_unmerged", "generate_ussafety"):
        assert tiny[key]["status"] == "ok" and tiny[key]["tokens_per_s"] > 0
    for key, package in (("train_unsloth_sft", "unsloth"), ("generate_vllm", "vllm")):
        installed = result["versions"][package] != "not installed"
        assert tiny[key]["status"] == ("needs CUDA" if installed else "not installed")
