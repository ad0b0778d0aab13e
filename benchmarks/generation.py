"""Generation speed: the old HF ``generate`` path, the slot engine and llama.cpp, side by side.

All engines decode the same prompts (a fixed, evenly spaced subset of the committed test
splits, chat-formatted with the model's template, as the same token ids) greedily with
the same thread count, and are timed end to end (prefill included). Tokens/s counts
answer tokens up to and including EOS, the work an evaluation needs; padding that an
engine decodes for finished rows does not count.

* ``old``: ``generate(engine="hf", batch_size=32)``, HF ``model.generate`` on
  length-sorted left-padded batches (the path before issue 12 item 3);
* ``new``: ``generate(engine="slots")`` at each ``--batches`` size;
* ``llama.cpp``: llama-cpp-python's low-level API driven like the slot engine
  (continuous batching over ``--llama-batch`` sequences, one KV stream per sequence,
  finished sequences removed and their place refilled, the shared prompt prefix computed
  once and copied, greedy argmax over the logits), on the wheel's Q4_1 GGUF and, when
  given, an F32 GGUF (the same de-quantised weights our safetensors hold);
* ``llama-bench`` / ``llama-batched-bench`` from a llama.cpp build folder, if given:
  synthetic prompt-processing and generation throughput (no early EOS).

The full test evaluation (1,021 harmful + 200 XSTest prompts x 128 tokens, 664 SST-2
x 8) is projected from the subset per part (time per prompt x prompts), and with
``--full`` also measured with the new engine. ``--check N`` decodes N subset prompts one
at a time with HF ``generate`` and counts how many equal the new engine's batched
answers. Run it alone on the machine (the timings are the point):

    flock logs/heavy.lock python benchmarks/generation.py --threads 2 --full \\
        --llama-bin build/bin --gguf-f32 .cache/models/smollm2-135m-instruct-f32.gguf
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ussafety.config import ModelConfig
from ussafety.data.splits import harmful_split, task_split, xstest_safe_split
from ussafety.evaluate.generate import generate
from ussafety.models.chat import prompt_text
from ussafety.models.loading import embedded_gguf_path, load_model
from ussafety.records.store import git_state, package_versions, write_json_atomic

FULL = {"harmful": 1021, "xstest": 200, "sst2": 664}
TOKENS = {"harmful": 128, "xstest": 128, "sst2": 8}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def spaced(items: list[Any], k: int) -> list[Any]:
    """``k`` items evenly spaced over ``items`` (the split's id order mixes sets and lengths)."""
    if k >= len(items):
        return list(items)
    return [items[(i * len(items)) // k] for i in range(k)]


def workload(tok: Any, harmful: int, xstest: int, sst2: int) -> dict[str, list[str]]:
    """Chat-formatted prompts of each evaluation part (subset sizes; the full split if
    a size is at least the split's)."""
    parts = {"harmful": harmful_split("test"), "xstest": xstest_safe_split("test"), "sst2": task_split("sst2", "test")}
    sizes = {"harmful": harmful, "xstest": xstest, "sst2": sst2}
    return {name: [prompt_text(tok, ex) for ex in spaced(exs, sizes[name])] for name, exs in parts.items()}


def run_torch(model: Any, tok: Any, parts: dict[str, list[str]], threads: int, **kw: Any) -> dict[str, Any]:
    """Time each part with ``generate(**kw)``; return per-part stats, outputs and totals."""
    res: dict[str, Any] = {"parts": {}, "outputs": {}}
    for name, prompts in parts.items():
        stats: dict[str, Any] = {}
        t = time.perf_counter()
        out = generate(model, tok, prompts, max_new_tokens=TOKENS[name], threads=threads, stats=stats, **kw)
        stats["wall_s"] = time.perf_counter() - t
        stats["tok_s"] = stats["new_tokens"] / stats["wall_s"]
        res["parts"][name] = stats
        res["outputs"][name] = out
        print(
            f"  {name:8s} {len(prompts):5d} prompts  {stats['new_tokens']:7d} new tokens  "
            f"{stats['wall_s']:7.1f} s  {stats['tok_s']:6.1f} tok/s",
            flush=True,
        )
    return totals(res)


def totals(res: dict[str, Any]) -> dict[str, Any]:
    parts = res["parts"].values()
    wall = sum(p["wall_s"] for p in parts)
    new = sum(p["new_tokens"] for p in parts)
    res["wall_s"], res["new_tokens"], res["tok_s"] = wall, new, new / wall
    return res


def projected_full_s(res: dict[str, Any], parts: dict[str, list[str]]) -> float:
    """Full test evaluation time: each part's time per prompt x its full prompt count."""
    return sum(res["parts"][n]["wall_s"] / len(parts[n]) * FULL[n] for n in parts)


# -- llama.cpp ---------------------------------------------------------------------------
class LlamaCppBatched:
    """Greedy continuous batching through llama-cpp-python's C API (one KV stream per
    sequence). Same token ids, same stopping rule (EOS token or max new tokens)."""

    def __init__(self, gguf: Path, threads: int, batch: int, ctx_per_seq: int) -> None:
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(gguf).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cparams = L.llama_context_default_params()
        self.slots = batch + 1  # sequence 0 holds the shared prefix
        cparams.n_seq_max = self.slots
        cparams.n_ctx = self.slots * ctx_per_seq
        cparams.n_batch = cparams.n_ubatch = 2048
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = False
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.mem = L.llama_get_memory(self.ctx)
        self.cap = 2048
        self.batch = L.llama_batch_init(self.cap, 0, 1)

    def close(self) -> None:
        L = self.L
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """Decode (token, position, sequence, wants logits) entries in chunks of the batch
        capacity; the argmax token of each entry that wants logits, in order."""
        L, b = self.L, self.batch
        picks: list[int] = []
        for start in range(0, len(entries), self.cap):
            chunk = entries[start : start + self.cap]
            for i, (token, pos, seq, logits) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
                b.seq_id[i][0] = seq
                b.logits[i] = logits
            b.n_tokens = len(chunk)
            if L.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed (context too small?)")
            n_out = sum(1 for e in chunk if e[3])
            if n_out:
                ptr = L.llama_get_logits(self.ctx)
                scores = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
                picks += scores.argmax(axis=1).tolist()
        return picks

    def run(self, ids: list[list[int]], max_new: int, eos: int) -> tuple[list[list[int]], dict[str, Any]]:
        """Greedy answers (token ids, EOS included) of ``ids``; longest prompts first."""
        L = self.L
        L.llama_memory_clear(self.mem, True)
        p = min(len(x) for x in ids) - 1
        first = ids[0]
        for x in ids[1:]:
            while p > 0 and x[:p] != first[:p]:
                p -= 1
        if p:
            self._decode([(t, i, 0, False) for i, t in enumerate(first[:p])])
        queue = deque(sorted(range(len(ids)), key=lambda i: -len(ids[i])))
        free = list(range(1, self.slots))
        active: dict[int, dict[str, Any]] = {}  # seq -> prompt index, tokens, position
        out: list[list[int]] = [[] for _ in ids]
        t = time.perf_counter()
        new_tokens = 0
        while queue or active:
            if queue and free and (not active or len(free) >= max(1, (self.slots - 1) // 8)):
                entries, starting = [], []
                while queue and free:
                    i, seq = queue.popleft(), free.pop()
                    if p:
                        L.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
                    suffix = ids[i][p:]
                    entries += [(tok, p + k, seq, k == len(suffix) - 1) for k, tok in enumerate(suffix)]
                    starting.append((seq, i, len(ids[i])))
                for (seq, i, n), tok in zip(starting, self._decode(entries)):
                    active[seq] = {"i": i, "tokens": [tok], "pos": n}
            else:
                seqs = list(active)
                picks = self._decode([(active[s]["tokens"][-1], active[s]["pos"], s, True) for s in seqs])
                for s, tok in zip(seqs, picks):
                    active[s]["tokens"].append(tok)
                    active[s]["pos"] += 1
            for s in [s for s, a in active.items() if a["tokens"][-1] == eos or len(a["tokens"]) >= max_new]:
                a = active.pop(s)
                out[a["i"]] = a["tokens"]
                new_tokens += len(a["tokens"])
                L.llama_memory_seq_rm(self.mem, s, -1, -1)
                free.append(s)
        wall = time.perf_counter() - t
        return out, {
            "wall_s": wall,
            "new_tokens": new_tokens,
            "tok_s": new_tokens / wall,
            "prefix_tokens": p,
            "prompt_tokens": sum(len(x) for x in ids),
        }


def run_llama_cpp(
    gguf: Path, tok: Any, parts: dict[str, list[str]], threads: int, batch: int, torch_out: dict[str, list[str]]
) -> dict[str, Any]:
    ids = {n: [tok(p, add_special_tokens=False)["input_ids"] for p in ps] for n, ps in parts.items()}
    longest = max(len(x) for xs in ids.values() for x in xs)
    engine = LlamaCppBatched(gguf, threads, batch, ctx_per_seq=longest + max(TOKENS.values()) + 16)
    res: dict[str, Any] = {"gguf": gguf.name, "parts": {}, "batch": batch}
    try:
        for name, xs in ids.items():
            out, stats = engine.run(xs, TOKENS[name], tok.eos_token_id)
            texts = [tok.decode(o, skip_special_tokens=True).strip() for o in out]
            stats["same_as_torch_new"] = sum(a == b for a, b in zip(texts, torch_out[name])) / len(texts)
            res["parts"][name] = stats
            print(
                f"  {name:8s} {len(xs):5d} prompts  {stats['new_tokens']:7d} new tokens  "
                f"{stats['wall_s']:7.1f} s  {stats['tok_s']:6.1f} tok/s  "
                f"same answers as torch: {stats['same_as_torch_new']:.0%}",
                flush=True,
            )
    finally:
        engine.close()
    return totals(res)


def llama_tools(bin_dir: Path, ggufs: list[Path], threads: int, batches: list[int]) -> dict[str, Any]:
    """``llama-bench`` (pp64, tg128 at one sequence) and ``llama-batched-bench`` (64-token
    prompts, 128 new tokens, ``batches`` parallel sequences) on each GGUF."""
    res: dict[str, Any] = {}
    for gguf in ggufs:
        r: dict[str, Any] = {}
        bench = subprocess.run(
            [
                str(bin_dir / "llama-bench"),
                "-m",
                str(gguf),
                "-t",
                str(threads),
                "-p",
                "64",
                "-n",
                "128",
                "-r",
                "1",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r["llama_bench"] = [
            {"n_prompt": x["n_prompt"], "n_gen": x["n_gen"], "avg_ts": x["avg_ts"], "type": x.get("model_type")}
            for x in json.loads(bench.stdout)
        ]
        npl = ",".join(str(b) for b in batches)
        ctx = max(batches) * (64 + 128) + 64
        bb = subprocess.run(
            [
                str(bin_dir / "llama-batched-bench"),
                "-m",
                str(gguf),
                "-t",
                str(threads),
                "-tb",
                str(threads),
                "-c",
                str(ctx),
                "-b",
                "2048",
                "-ub",
                "512",
                "-npp",
                "64",
                "-ntg",
                "128",
                "-npl",
                npl,
                "--output-format",
                "jsonl",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r["batched_bench"] = [json.loads(line) for line in bb.stdout.splitlines() if line.startswith("{")]
        for x in r["llama_bench"]:
            print(f"  llama-bench {gguf.name}: pp{x['n_prompt']} tg{x['n_gen']}: {x['avg_ts']:.1f} tok/s")
        for x in r["batched_bench"]:
            print(
                f"  llama-batched-bench {gguf.name}: B={x['pl']}: S_TG {x['speed_tg']:.1f} tok/s, "
                f"S {x['speed']:.1f} tok/s"
            )
        res[gguf.name] = r
    return res


def save(path: Path, report: dict[str, Any]) -> None:
    """Write what has been measured so far (a long run that is stopped keeps its numbers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded", help="ModelConfig name (tiny-random: smoke test, no llama.cpp)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--harmful", type=int, default=200)
    ap.add_argument("--xstest", type=int, default=40)
    ap.add_argument("--sst2", type=int, default=130)
    ap.add_argument("--batches", default="64,128", help="slot engine batch sizes to time")
    ap.add_argument("--old-batch", type=int, default=32)
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--check", type=int, default=50, help="prompts compared with one-at-a-time HF generate")
    ap.add_argument("--full", action="store_true", help="also time the whole test evaluation (new engine)")
    ap.add_argument("--llama-batch", type=int, default=64)
    ap.add_argument("--gguf-f32", type=Path, help="F32 GGUF of the same weights (llama-quantize --allow-requantize)")
    ap.add_argument("--llama-bin", type=Path, help="llama.cpp build/bin with llama-bench, llama-batched-bench")
    ap.add_argument("--out", type=Path, default=Path("paper_outputs/benchmarks/generation.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    lm = load_model(ModelConfig(name=args.model))
    model, tok = lm.model, lm.tokenizer
    parts = workload(tok, args.harmful, args.xstest, args.sst2)
    batches = [int(b) for b in args.batches.split(",")]
    report: dict[str, Any] = {
        "machine": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "avx512": "avx512f" in Path("/proc/cpuinfo").read_text(),
            "loadavg_start": os.getloadavg(),
        },
        "model": {
            "source": lm.source,
            "dtype": str(next(model.parameters()).dtype),
            "gguf": str(embedded_gguf_path().name),
        },
        "workload": {
            n: {"prompts": len(p), "max_new_tokens": TOKENS[n], "full_prompts": FULL[n]} for n, p in parts.items()
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "versions": package_versions(),
        "git": git_state(),
        "llama_cpp_python": importlib.util.find_spec("llama_cpp") is not None,
    }
    if report["llama_cpp_python"]:
        import llama_cpp

        report["versions"]["llama_cpp_python"] = llama_cpp.__version__

    print(
        f"threads={args.threads}  cpu={report['machine']['cpu']}  subset "
        + ", ".join(f"{n} {len(p)} x {TOKENS[n]}" for n, p in parts.items()),
        flush=True,
    )
    new: dict[str, Any] = {}
    for b in batches:
        print(f"new (slots) batch {b}", flush=True)
        new[str(b)] = run_torch(model, tok, parts, args.threads, engine="slots", batch_size=b)
        new[str(b)]["projected_full_s"] = projected_full_s(new[str(b)], parts)
        save(args.out, report | {"new": {k: {x: y for x, y in r.items() if x != "outputs"} for k, r in new.items()}})
    best = max(new, key=lambda b: new[b]["tok_s"])
    report["new"] = {b: {k: v for k, v in r.items() if k != "outputs"} for b, r in new.items()}
    report["new_best_batch"] = int(best)
    best_out = new[best]["outputs"]

    if not args.skip_old:
        print(f"old (HF generate) batch {args.old_batch}", flush=True)
        old = run_torch(model, tok, parts, args.threads, engine="hf", batch_size=args.old_batch)
        old["projected_full_s"] = projected_full_s(old, parts)
        old["same_answers_as_new"] = {
            n: sum(a == b for a, b in zip(old["outputs"][n], best_out[n])) / len(best_out[n]) for n in parts
        }
        report["old"] = {k: v for k, v in old.items() if k != "outputs"}
        save(args.out, report)

    if args.check:
        picks = spaced(parts["harmful"], args.check)
        print(f"check: {len(picks)} harmful prompts one at a time (HF generate) vs batched slots", flush=True)
        t = time.perf_counter()
        single = [
            generate(model, tok, [p], max_new_tokens=TOKENS["harmful"], engine="hf", threads=args.threads)[0]
            for p in picks
        ]
        single_s = time.perf_counter() - t
        batched = generate(
            model,
            tok,
            picks,
            max_new_tokens=TOKENS["harmful"],
            engine="slots",
            batch_size=int(best),
            threads=args.threads,
        )
        same = [a == b for a, b in zip(single, batched)]
        report["check_one_at_a_time"] = {
            "prompts": len(picks),
            "max_new_tokens": TOKENS["harmful"],
            "identical": sum(same),
            "one_at_a_time_s": single_s,
            "differing": [i for i, s in enumerate(same) if not s],
        }
        print(f"  identical: {sum(same)}/{len(same)}", flush=True)
        save(args.out, report)

    ggufs = [embedded_gguf_path()] + ([args.gguf_f32] if args.gguf_f32 else [])
    if args.model != "embedded":
        ggufs = []
    if report["llama_cpp_python"] and ggufs:
        report["llama_cpp"] = {}
        for gguf in ggufs:
            print(f"llama.cpp (llama-cpp-python, continuous batching {args.llama_batch}) {gguf.name}", flush=True)
            try:
                r = run_llama_cpp(gguf, tok, parts, args.threads, args.llama_batch, best_out)
                r["projected_full_s"] = projected_full_s(r, parts)
            except Exception as e:  # recorded, so the torch numbers still come out
                r = {"error": repr(e)}
                print(f"  failed: {e!r}", flush=True)
            report["llama_cpp"][gguf.name] = r
            save(args.out, report)
    if ggufs and args.llama_bin and (args.llama_bin / "llama-bench").is_file():
        print("llama.cpp tools", flush=True)
        try:
            report["llama_tools"] = llama_tools(args.llama_bin, ggufs, args.threads, [1, 64, 128])
        except (subprocess.CalledProcessError, ValueError, KeyError) as e:
            report["llama_tools"] = {"error": repr(e)}
            print(f"  failed: {e!r}", flush=True)
        save(args.out, report)

    if args.full:
        full_parts = workload(tok, FULL["harmful"], FULL["xstest"], FULL["sst2"])
        print(f"full test evaluation, new engine batch {best}", flush=True)
        full = run_torch(model, tok, full_parts, args.threads, engine="slots", batch_size=int(best))
        report["full_measured"] = {k: v for k, v in full.items() if k != "outputs"}

    print(f"\n== tokens/s (answer tokens incl. EOS / wall, prefill included), {args.threads} threads, same prompts ==")
    rows = []
    if "old" in report:
        rows.append((f"old HF generate, batch {args.old_batch}", report["old"]))
    rows += [(f"new slots, batch {b}", report["new"][b]) for b in report["new"]]
    for name, r in report.get("llama_cpp", {}).items():
        if "tok_s" in r:
            rows.append((f"llama.cpp {name}, batch {args.llama_batch}", r))
    for label, r in rows:
        proj = r.get("projected_full_s")
        print(
            f"  {label:55s} {r['tok_s']:7.1f} tok/s   subset {r['wall_s']:6.1f} s"
            + (f"   full eval (projected) {proj / 60:5.1f} min" if proj else "")
        )
    if "full_measured" in report:
        print(f"  full test evaluation measured (new, batch {best}): {report['full_measured']['wall_s'] / 60:.1f} min")
    report["machine"]["loadavg_end"] = os.getloadavg()
    save(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
