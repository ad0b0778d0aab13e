"""GPU benchmark of the 7B path: what ``ussafety.models.estimate`` assumes, measured.

(a) LoRA training (r=8 on all linear layers, bf16, the trainer's response-only loss):
    tokens/s and peak memory with plain PEFT (without and with gradient checkpointing)
    and with Unsloth (in a subprocess: ``import unsloth`` patches transformers for the
    whole process), on the same batches, for a SmolLM2-135M-shaped model (or the real
    one with ``--model-135m FOLDER``) and a randomly initialised Llama-2-7B-shaped model.
(b) The DER-like step (a replayed batch with a second, no-grad forward under
    ``disable_adapter``) and the EWC-like step (``F * (delta W)^2`` over every adapted
    weight, fp32) next to the SFT step, on the same GPU.
(c) Generation tokens/s with HF ``generate`` (greedy, KV cache, batch 32, also with LoRA
    unmerged as in evaluation), with the evaluation's own ``generate`` (its slot engine),
    and with vLLM when it is installed (subprocess), plus vLLM's greedy agreement with HF
    on the same token ids.
Also the measured bf16 matmul rate (the roofline), the GPU, package versions, and next
to each measurement the estimate's prediction, so its assumptions can be replaced
(``effective_flops_per_s`` is what to pass as ``flops_per_s``).

Every measurement is wrapped: a missing package (unsloth, vllm) is recorded as
"not installed", an out-of-memory or other error as such, and the script goes on.

    python benchmarks/gpu.py                        # on a CUDA machine (a few minutes)
    python benchmarks/gpu.py --models 7b --steps 4  # a part
    python benchmarks/gpu.py --cpu-dry-run --out /tmp/gpu.json   # tiny model, CPU, seconds

Weights are random (throughput and memory do not depend on their values), so nothing
needs to be downloaded: the lent GPU machine reaches no hub.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runs from a plain checkout (the GPU machine has no install)
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "paper_outputs" / "benchmarks" / "gpu.json"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "unsloth",
    "unsloth_zoo",
    "vllm",
    "triton",
    "flash_attn",
    "xformers",
    "bitsandbytes",
)
RESULT = "RESULT "  # a worker's last stdout line: RESULT {json}

MODELS = {  # name -> (shape known to ussafety.models.shape, batch, sequence length)
    "135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", 8, 512),
    "7b": ("meta-llama/Llama-2-7b-chat-hf", 8, 512),
    "tiny": ("tiny-random", 2, 32),
}


# --------------------------------------------------------------------------- plumbing


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
    }
    if env["cuda"]:
        p = torch.cuda.get_device_properties(0)
        env.update(
            gpu=p.name,
            gpu_memory_bytes=p.total_memory,
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
        )
    return env


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(fn: Callable[..., dict[str, Any]], *args: Any, **kw: Any) -> dict[str, Any]:
    """``fn(...)`` with ``status: ok``, or the reason it gave no number."""
    try:
        return {"status": "ok", **fn(*args, **kw)}
    except ModuleNotFoundError as err:
        return {"status": "not installed", "error": str(err)}
    except torch.cuda.OutOfMemoryError as err:
        return {"status": "out of memory", "error": str(err).splitlines()[0]}
    except Exception as err:
        return {"status": "error", "error": f"{type(err).__name__}: {err}"[:2000]}
    finally:
        free_memory()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int | None:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)


def unavailable(package: str, cuda: bool) -> dict[str, Any] | None:
    """Why a package-backed measurement cannot run here, or None if it can."""
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return {"status": "not installed", "error": f"{package} is not installed (see docs/gpu.md)"}
    if not cuda:
        return {"status": "needs CUDA", "error": f"{package} runs on a CUDA GPU only"}
    return None


# --------------------------------------------------------------------------- measurements


def matmul_rate(device: str, dtype: torch.dtype, n: int, reps: int = 10) -> dict[str, Any]:
    """Dense matmul FLOP/s: the ceiling model FLOP/s are compared with."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    rate = reps * 2 * n**3 / (time.perf_counter() - t)
    return {"flops_per_s": rate, "tflops": rate / 1e12, "n": n, "dtype": str(dtype)}


def byte_tokenizer() -> Any:
    """A byte-level tokenizer built in code (no download), saved beside random weights so
    that Unsloth and vLLM can load the folder; its 259 ids fit every model's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )


def build_model(shape: str, path: str | None, device: str, dtype: torch.dtype) -> Any:
    """The model from ``path``, or randomly initialised with ``shape``'s config, on ``device``."""
    from transformers import AutoModelForCausalLM

    from ussafety.models.shape import model_config

    if path:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(model_config(shape), dtype=dtype)


def batches(n: int, batch: int, seq: int, vocab: int, device: str, seed: int = 0) -> list[torch.Tensor]:
    """``n`` fixed batches of random token ids (the same for every backend)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (batch, seq), generator=g).to(device) for _ in range(n)]


def response_logits(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits on the second half of each row (the "response") and their targets, with the
    head applied on those positions only, as ``ussafety``'s trainer does."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    h = base.model(input_ids=ids).last_hidden_state
    start = ids.shape[1] // 2
    logits = base.get_output_embeddings()(h[:, start - 1 : -1])
    return logits.flatten(0, 1), ids[:, start:].flatten()


def sft_loss(model: Any, ids: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    logits, targets = response_logits(model, ids)
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def der_loss(model: Any, ids: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    """SFT + 0.3 x MSE(current logits, adapter-off logits) on a replayed batch: one
    forward and backward more, and one no-grad forward under ``disable_adapter``."""
    replay = ctx["replay"]
    cur, _ = response_logits(model, replay)
    with torch.no_grad(), model.disable_adapter():
        ref, _ = response_logits(model, replay)
    return sft_loss(model, ids, ctx) + 0.3 * (cur.float() - ref.float()).pow(2).mean()


def lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]


def ewc_loss(model: Any, ids: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    """SFT + ``lam/2 * sum F * (delta W)^2`` with ``delta W = scale * B @ A`` in fp32 for
    every adapted layer and an fp32 ``F`` per base weight, as ``ussafety.methods.ewc``."""
    if "fisher" not in ctx:
        ctx["layers"] = lora_layers(model)
        ctx["fisher"] = [
            torch.rand(layer.get_base_layer().weight.shape, dtype=torch.float32, device=ids.device)
            for layer in ctx["layers"]
        ]
    pen = sum(
        ((layer.lora_B["default"].weight.float() * layer.scaling["default"]) @ layer.lora_A["default"].weight.float())
        .pow(2)
        .mul(f)
        .sum()
        for layer, f in zip(ctx["layers"], ctx["fisher"])
    )
    return sft_loss(model, ids, ctx) + 0.5 * 1e3 * pen


LOSSES = {"sft": sft_loss, "der": der_loss, "ewc": ewc_loss}


def train_steps(
    model: Any, data: list[torch.Tensor], loss_fn: Callable[..., torch.Tensor], warmup: int
) -> dict[str, Any]:
    """Time ``len(data) - warmup`` optimizer steps (AdamW on the trainable parameters)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ctx: dict[str, Any] = {"replay": data[0]}
    reset_peak()
    t0 = None
    loss = torch.zeros(())
    for i, ids in enumerate(data):
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        loss = loss_fn(model, ids, ctx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    steps = len(data) - warmup
    wall = time.perf_counter() - (t0 or time.perf_counter())
    out = {
        "steps": steps,
        "step_s": wall / steps,
        "tokens_per_s": steps * data[0].numel() / wall,
        "peak_bytes": peak_bytes(),
        "loss": float(loss.detach()),
    }
    del opt, ctx
    return out


def estimate_step(
    shape: str, batch: int, seq: int, method: str, ckpt: bool, dtype: str, measured: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The estimate's training peak (without the CUDA context, which max_memory_allocated
    does not count) and per-step FLOPs; with a measurement, the effective FLOP/s."""
    from ussafety.methods.costs import method_cost
    from ussafety.models.estimate import estimate_run

    one_step: dict[str, dict[str, Any]] = {
        "der": {"minibatch_size": batch, "targets": "recompute"},  # as der_loss does
        "ewc": {"n_fisher": 0},
    }  # one step: no importance pass
    params = one_step.get(method)
    e = estimate_run(
        shape,
        dtype=dtype,
        lora_r=8,
        lora_targets=TARGETS,
        batch_size=batch,
        seq_len=seq,
        n_train_rows=batch,
        method=method_cost(method, params),
        gradient_checkpointing=ckpt,
    )
    flops = e.train_flops
    out = {
        "train_peak_bytes": e.train_peak_bytes - e.overhead_bytes,
        "step_flops": flops,
        "activations_bytes": e.activations_bytes,
        "method_bytes": e.method_bytes,
    }
    if measured and measured.get("status") == "ok":
        out["effective_flops_per_s"] = flops / measured["step_s"]
        if measured.get("peak_bytes"):
            out["measured_over_estimated_peak"] = measured["peak_bytes"] / out["train_peak_bytes"]
    return out


def generate_rate(model: Any, prompts: list[torch.Tensor], new_tokens: int) -> dict[str, Any]:
    """Greedy generation of exactly ``new_tokens`` per prompt batch (the HF path's
    arguments: no sampling, one beam, KV cache), tokens/s over all batches."""
    model.eval()
    outs = []
    with torch.inference_mode():
        model.generate(
            input_ids=prompts[0][:, :8],
            attention_mask=torch.ones_like(prompts[0][:, :8]),
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=0,
        )  # warm-up
        sync()
        t = time.perf_counter()
        for ids in prompts:
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                pad_token_id=0,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            outs.append(gen[:, ids.shape[1] :].tolist())
        sync()
        wall = time.perf_counter() - t
    rows = sum(ids.shape[0] for ids in prompts)
    return {
        "prompts": rows,
        "prompt_tokens": prompts[0].shape[1],
        "new_tokens": new_tokens,
        "batch": prompts[0].shape[0],
        "wall_s": wall,
        "tokens_per_s": rows * new_tokens / wall,
        "step_s": wall / (len(prompts) * new_tokens),
        "outputs": outs,
    }


def ussafety_generate_rate(model: Any, n: int, prompt_tokens: int, new_tokens: int, batch: int) -> dict[str, Any]:
    """The evaluation's own ``ussafety.evaluate.generate.generate`` (its default engine) on
    ``n`` random ASCII prompts (one byte-level token per character). Tokens/s counts
    ``new_tokens`` per prompt: exact unless a random model happens to emit EOS."""
    import random
    import string

    from ussafety.evaluate.generate import generate, slot_engine_supported

    tok = byte_tokenizer()
    rng = random.Random(1)
    prompts = ["".join(rng.choice(string.ascii_letters) for _ in range(prompt_tokens)) for _ in range(n)]
    generate(model, tok, prompts[:2], max_new_tokens=2, batch_size=batch)  # warm-up
    sync()
    t = time.perf_counter()
    generate(model, tok, prompts, max_new_tokens=new_tokens, batch_size=batch)
    sync()
    wall = time.perf_counter() - t
    return {
        "engine": "slots" if slot_engine_supported(model) is None else "hf",
        "prompts": n,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "batch": batch,
        "wall_s": wall,
        "tokens_per_s": n * new_tokens / wall,
    }


# --------------------------------------------------------------------------- subprocess workers


def run_worker(kind: str, args: list[str], timeout: int) -> dict[str, Any]:
    """Run ``--worker kind`` in a fresh interpreter; its ``RESULT`` line, or why none came."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"worker {kind} ran past {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if not lines:
        return {
            "status": "error",
            "error": f"worker {kind} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}",
        }
    return json.loads(lines[-1][len(RESULT) :])


def worker_unsloth(a: argparse.Namespace) -> dict[str, Any]:
    import unsloth  # noqa: F401 (first: it patches transformers and peft)
    from unsloth import FastLanguageModel

    model, _tok = FastLanguageModel.from_pretrained(
        a.folder, dtype=torch.bfloat16, load_in_4bit=False, max_seq_length=a.seq
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=TARGETS,
        bias="none",
        random_state=0,
        use_gradient_checkpointing="unsloth",
    )
    data = batches(a.warmup + a.steps, a.batch, a.seq, a.vocab, "cuda")
    return train_steps(model, data, sft_loss, a.warmup)


def worker_vllm(a: argparse.Namespace) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    reference = json.loads(Path(a.reference).read_text())
    prompts = [{"prompt_token_ids": ids} for ids in reference["prompts"]]
    llm = LLM(model=a.folder, dtype="bfloat16", gpu_memory_utilization=0.6, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=a.new_tokens, min_tokens=a.new_tokens, ignore_eos=True)
    llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t
    got = [list(o.outputs[0].token_ids) for o in outs]
    produced = sum(len(g) for g in got)
    same, firsts = 0, []
    for hf, vl in zip(reference["outputs"], got):
        if hf == vl:
            same += 1
        else:
            firsts.append(next((i for i, (x, y) in enumerate(zip(hf, vl)) if x != y), min(len(hf), len(vl))))
    return {
        "prompts": len(prompts),
        "wall_s": wall,
        "tokens_per_s": produced / wall,
        "greedy_agreement_with_hf": {
            "exact_match_rate": same / len(got),
            "mean_first_divergence_token": (sum(firsts) / len(firsts) if firsts else None),
            "earliest_divergence_token": min(firsts) if firsts else None,
        },
    }


# --------------------------------------------------------------------------- one model


def bench_model(name: str, a: argparse.Namespace, device: str, cuda: bool) -> dict[str, Any]:
    shape, batch, seq = MODELS[name]
    batch, seq = a.batch or batch, a.seq or seq
    dtype = torch.bfloat16 if cuda else torch.float32
    dtype_name = "bfloat16" if cuda else "float32"
    path = a.model_135m if name == "135m" else None
    out: dict[str, Any] = {
        "shape": shape,
        "weights": path or "random init (same shapes)",
        "batch": batch,
        "seq_len": seq,
        "dtype": dtype_name,
    }
    t = time.perf_counter()
    model = build_model(shape, path, device, dtype)
    out["build_s"] = time.perf_counter() - t
    out["params"] = sum(p.numel() for p in model.parameters())
    vocab = min(model.config.vocab_size, 32000)
    steps = a.warmup + a.steps
    data = batches(steps, batch, seq, vocab, device)
    prompts = batches(a.gen_batches, a.gen_batch, a.gen_prompt_tokens, vocab, device, seed=1)

    # Random weights to a folder (with a byte tokenizer) for the subprocess backends.
    folder = None
    want_unsloth = unavailable("unsloth", cuda) is None and "unsloth" not in a.skip
    want_vllm = unavailable("vllm", cuda) is None and "vllm" not in a.skip
    if want_unsloth or want_vllm:
        folder = path or str(Path(a.work_dir) / name)
        if not path:
            model.save_pretrained(folder, safe_serialization=True)
            byte_tokenizer().save_pretrained(folder)

    hf_base = measure(generate_rate, model, prompts, a.gen_new_tokens)
    reference = hf_base.pop("outputs", None)
    out["generate_hf_base"] = hf_base
    out["generate_ussafety"] = measure(
        ussafety_generate_rate, model, a.gen_batch * a.gen_batches, a.gen_prompt_tokens, a.gen_new_tokens, a.gen_batch
    )

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    )
    out["lora_params"] = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    for method in ("sft", "der", "ewc"):
        key = f"train_peft_{method}"
        out[key] = measure(train_steps, peft_model, data, LOSSES[method], a.warmup)
        out[key]["estimate"] = measure(estimate_step, shape, batch, seq, method, False, dtype_name, out[key])
    base = peft_model.get_base_model()
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    out["train_peft_sft_ckpt"] = measure(train_steps, peft_model, data, sft_loss, a.warmup)
    out["train_peft_sft_ckpt"]["estimate"] = measure(
        estimate_step, shape, batch, seq, "sft", True, dtype_name, out["train_peft_sft_ckpt"]
    )
    base.gradient_checkpointing_disable()
    gen_lora = measure(generate_rate, peft_model, prompts, a.gen_new_tokens)
    gen_lora.pop("outputs", None)
    out["generate_hf_lora_unmerged"] = gen_lora

    sft = out["train_peft_sft"]
    for method in ("der", "ewc"):
        other = out[f"train_peft_{method}"]
        if sft.get("status") == other.get("status") == "ok":
            out[f"{method}_vs_sft"] = {
                "step_time_ratio": other["step_s"] / sft["step_s"],
                "extra_peak_bytes": (
                    other["peak_bytes"] - sft["peak_bytes"] if sft["peak_bytes"] is not None else None
                ),
            }
    del peft_model, base, model, data
    free_memory()

    worker_args = [
        "--folder",
        str(folder),
        "--batch",
        str(batch),
        "--seq",
        str(seq),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--vocab",
        str(vocab),
    ]
    out["train_unsloth_sft"] = (
        unavailable("unsloth", cuda)
        or ({"status": "skipped"} if "unsloth" in a.skip else None)
        or run_worker("unsloth", worker_args, a.worker_timeout)
    )
    if out["train_unsloth_sft"].get("status") == "ok":
        out["train_unsloth_sft"]["estimate"] = measure(
            estimate_step, shape, batch, seq, "sft", True, dtype_name, out["train_unsloth_sft"]
        )
        if sft.get("status") == "ok":
            out["unsloth_speedup"] = sft["step_s"] / out["train_unsloth_sft"]["step_s"]
    vllm = unavailable("vllm", cuda) or ({"status": "skipped"} if "vllm" in a.skip else None)
    if vllm is None:
        if reference is None:
            vllm = {"status": "error", "error": "no HF reference outputs to compare with"}
        else:
            ref_file = Path(a.work_dir) / f"{name}-hf-reference.json"
            ref_file.write_text(
                json.dumps(
                    {
                        "prompts": [row for b in prompts for row in b.tolist()],
                        "outputs": [row for b in reference for row in b],
                    }
                )
            )
            vllm = run_worker(
                "vllm",
                worker_args + ["--reference", str(ref_file), "--new-tokens", str(a.gen_new_tokens)],
                a.worker_timeout,
            )
    out["generate_vllm"] = vllm
    if vllm.get("status") == "ok" and hf_base.get("status") == "ok":
        out["vllm_speedup"] = vllm["tokens_per_s"] / hf_base["tokens_per_s"]
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out",
        help=f"result JSON (default {DEFAULT_OUT.relative_to(ROOT)}; --cpu-dry-run writes only where --out says)",
    )
    p.add_argument(
        "--cpu-dry-run", action="store_true", help="a tiny random model on the CPU, to prove the script runs (seconds)"
    )
    p.add_argument("--models", default="135m,7b", help="comma-separated: 135m, 7b")
    p.add_argument("--model-135m", help="a local folder with the real SmolLM2-135M (default: random weights)")
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, help="training batch (default: per model, 8)")
    p.add_argument("--seq", type=int, help="training sequence length (default: per model, 512)")
    p.add_argument("--gen-batch", type=int, default=32, help="generation batch (the paper preset's)")
    p.add_argument("--gen-batches", type=int, default=2)
    p.add_argument("--gen-prompt-tokens", type=int, default=64)
    p.add_argument("--gen-new-tokens", type=int, default=128)
    p.add_argument("--matmul-n", type=int, default=8192)
    p.add_argument("--skip", default="", help="comma-separated: unsloth, vllm")
    p.add_argument("--work-dir", help="where random weights are saved for Unsloth/vLLM (default: a temp dir)")
    p.add_argument("--worker-timeout", type=int, default=420)
    # worker-only arguments
    p.add_argument("--worker", choices=["unsloth", "vllm"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    p.add_argument("--reference", help=argparse.SUPPRESS)
    p.add_argument("--new-tokens", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.skip = {s for s in a.skip.split(",") if s}
    if a.cpu_dry_run:
        a.models = "tiny"
        a.steps, a.warmup = min(a.steps, 2), min(a.warmup, 1)
        a.gen_batch, a.gen_batches, a.gen_prompt_tokens, a.gen_new_tokens = 2, 1, 8, 4
        a.matmul_n = min(a.matmul_n, 256)
    return a


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    a = parse_args(argv)
    if a.worker:
        fn = worker_unsloth if a.worker == "unsloth" else worker_vllm
        print(RESULT + json.dumps(measure(fn, a), default=str), flush=True)
        return None
    cuda = torch.cuda.is_available()
    if not cuda and not a.cpu_dry_run:
        raise SystemExit("no CUDA GPU is visible: run on a GPU machine, or use --cpu-dry-run")
    device = "cuda" if cuda else "cpu"
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "environment": environment(),
        "versions": versions(),
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(a).items()},
        "dry_run": a.cpu_dry_run,
    }
    result["matmul"] = measure(matmul_rate, device, torch.bfloat16 if cuda else torch.float32, a.matmul_n)
    with tempfile.TemporaryDirectory(prefix="ussafety-gpu-") as tmp:
        a.work_dir = a.work_dir or tmp
        result["models"] = {}
        for name in [m for m in a.models.split(",") if m]:
            if name not in MODELS:
                raise SystemExit(f"unknown model '{name}' (known: {', '.join(MODELS)})")
            print(f"[gpu bench] {name} ...", file=sys.stderr, flush=True)
            result["models"][name] = measure(bench_model, name, a, device, cuda)
    result["wall_s"] = time.perf_counter() - t0
    out = Path(a.out) if a.out else (None if a.cpu_dry_run else DEFAULT_OUT)
    if out is not None:
        write_json_atomic(out, result)
        print(f"[gpu bench] wrote {out}", file=sys.stderr)
    print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
