"""Pipeline speed on this machine, printed as ratios (never asserted by tests).

(a) LoRA training: our trainer (response-only loss with the output head applied only
    on response positions, dynamic padding, length grouping) next to the plain recipe
    (HF Trainer + PEFT, rows padded to max_length, labels = input ids, full logits),
    on the same rows. Reports response tokens/s, padded tokens/s and model FLOP/s as a
    fraction of a measured fp32 matmul peak.
(b) Generation: our batched left-padded greedy generation next to one prompt at a time.

    python benchmarks/pipeline.py [--model embedded|tiny-random] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer

from ussafety.config import LoraConfig, ModelConfig, TrainConfig
from ussafety.data import load
from ussafety.evaluate.generate import generate
from ussafety.methods import TrainContext, make_method
from ussafety.models.chat import Collator, prompt_text
from ussafety.models.loading import add_lora, load_model
from ussafety.records.store import git_state, package_versions, write_json_atomic
from ussafety.train.trainer import EncodedDataset, fine_tune, training_args


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Measured fp32 matmul FLOP/s with all threads (the roofline we compare against)."""
    x = torch.randn(n, n)
    x @ x
    t = time.perf_counter()
    for _ in range(reps):
        x @ x
    return reps * 2 * n**3 / (time.perf_counter() - t)


def model_flops(model, tokens: int, head_positions: int) -> float:
    """LoRA training FLOPs: 2N forward + 2N input-gradient backward per token for the
    frozen body (no weight gradients), plus the output head where it is computed."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = base.get_input_embeddings().weight
    body = sum(p.numel() for n, p in base.named_parameters() if p is not emb and "lora_" not in n)
    head = emb.numel()
    return 4 * body * tokens + 4 * head * head_positions


def plain_rows(tokenizer, examples, max_length):
    """The plain recipe: whole chat text, padded to max_length, loss on every token."""
    rows = []
    for ex in examples:
        text = tokenizer.apply_chat_template(ex.messages(), tokenize=False)
        enc = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length, padding="max_length")
        labels = [t if m else -100 for t, m in zip(enc["input_ids"], enc["attention_mask"])]
        rows.append({"input_ids": enc["input_ids"], "labels": labels})
    return rows


def bench_training(model_cfg: ModelConfig, steps: int, batch: int, max_length: int) -> dict:
    rows = load("sst2", split="train", limit=steps * batch, seed=0)
    cfg = TrainConfig(lora=LoraConfig(r=8, alpha=16), batch_size=batch, max_steps=steps, max_length=max_length, lr=1e-4)
    peak = matmul_peak()
    out = {"matmul_peak_gflops": peak / 1e9}

    lm = load_model(model_cfg)
    model = add_lora(lm, cfg.lora)
    data = EncodedDataset(lm.tokenizer, rows, max_length)
    ctx = TrainContext(tokenizer=lm.tokenizer, max_length=max_length, batch_size=batch)
    res = fine_tune(model, lm.tokenizer, rows, cfg, [make_method("sft")], ctx)
    padded = sum(data.lengths)  # upper bound on processed tokens with dynamic padding
    flops = model_flops(model, padded, data.response_tokens())
    out["ours"] = {
        "wall_s": res.wall_s,
        "response_tok_s": data.response_tokens() / res.wall_s,
        "tok_s": padded / res.wall_s,
        "flops_frac_of_peak": flops / res.wall_s / peak,
    }

    lm = load_model(model_cfg)
    model = add_lora(lm, cfg.lora)
    plain = plain_rows(lm.tokenizer, rows, max_length)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(cfg, 0, tmp, len(plain))
        args.train_sampling_strategy = "random"
        trainer = Trainer(
            model=model, args=args, train_dataset=plain, data_collator=Collator(lm.tokenizer.pad_token_id)
        )
        t = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t
    n_tok = len(plain) * max_length
    flops = model_flops(model, n_tok, n_tok)
    out["plain_trainer_peft"] = {
        "wall_s": wall,
        "response_tok_s": data.response_tokens() / wall,
        "tok_s": n_tok / wall,
        "flops_frac_of_peak": flops / wall / peak,
    }
    out["speedup_rows_per_s"] = wall / res.wall_s
    return out


def bench_generation(model_cfg: ModelConfig, n: int, new_tokens: int, batches: list[int]) -> dict:
    """Batched generation at each batch size next to one prompt at a time, on the same
    ``n`` AdvBench prompts (the evaluation's workload: chat template, greedy)."""
    lm = load_model(model_cfg)
    prompts = [prompt_text(lm.tokenizer, ex) for ex in load("advbench", limit=n, seed=0)]
    t = time.perf_counter()
    single = [generate(lm.model, lm.tokenizer, [p], max_new_tokens=new_tokens, batch_size=1)[0] for p in prompts]
    t_single = time.perf_counter() - t
    out = {"prompts": n, "new_tokens": new_tokens, "one_at_a_time_s": t_single, "by_batch": {}}
    for batch in batches:
        t = time.perf_counter()
        batched = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch)
        t_batched = time.perf_counter() - t
        out["by_batch"][str(batch)] = {
            "batched_s": t_batched,
            "speedup": t_single / t_batched,
            "same_outputs": sum(a == b for a, b in zip(batched, single)) / n,
        }
    best = max(out["by_batch"].items(), key=lambda kv: kv[1]["speedup"])
    out["best_batch"], out["speedup"] = int(best[0]), best[1]["speedup"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--gen-prompts", type=int, default=0)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument(
        "--gen-batches",
        default="16,32,64",
        help="comma-separated batch sizes; prompts = the largest unless --gen-prompts",
    )
    parser.add_argument("--skip-training", action="store_true", help="only the generation benchmark")
    parser.add_argument(
        "--out",
        help="also write the result JSON to this file (a folder gets pipeline.json), "
        "e.g. paper_outputs/benchmarks/pipeline.json",
    )
    args = parser.parse_args()
    cfg = ModelConfig(name=args.model)
    batches = [int(b) for b in args.gen_batches.split(",")]
    training = None if args.skip_training else bench_training(cfg, args.steps, args.batch, args.max_length)
    result = {
        "training": training,
        "generation": bench_generation(cfg, args.gen_prompts or max(batches), args.gen_tokens, batches),
        "threads": torch.get_num_threads(),
        "args": vars(args),
        "versions": package_versions(),
        "git": git_state(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        if out.is_dir() or args.out.endswith("/"):
            out = out / "pipeline.json"
        if training is None and out.is_file():  # keep the training part measured earlier
            old = json.loads(out.read_text())
            result["training"] = old.get("training")
            result["training_measured_at"] = old.get("training_measured_at") or old.get("git")
        write_json_atomic(out, result)


if __name__ == "__main__":
    main()
