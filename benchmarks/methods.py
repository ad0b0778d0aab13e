"""Each method's training step time and peak memory next to SFT's, on the same batches.

Every method runs in its own subprocess (so one method's allocations never count for
another's peak) with the same model set-up, the same LoRA initialisation and the same
user batches, in a fixed order: the method's settings are those of its study file
``params/methods/poisoned_sst2/<method>.yaml`` (the CPU-budget choices included), its
``prepare`` is timed on its own, then one warm-up step and ``--steps`` timed steps of
the real trainer (``MethodTrainer`` with the method's hooks) run, and for methods that
act after training the ``finalize`` is timed too.

Step time: wall time from the trainer's ``on_step_begin`` to ``on_step_end`` (forward,
backward, clipping, the method's hooks, optimizer), the median over the timed steps (one
step disturbed by other work on the machine does not move it). Lisa's steps differ by
state: its step time is the mean over one cycle of its schedule (``align_steps``
alignment steps, ``user_steps`` user steps) of each state's median (both states are
measured when ``--steps`` >= 2 with the default schedule). SFT is measured first and
again last; the reference is the mean of both, and their ratio (``sft_step_drift``)
shows how much the machine's speed changed during the benchmark.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed steps; on CPU
the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``
after the warm-up step; a 2 ms RSS sampler where that is not available), and its
excess over the resident set before ``prepare`` (model, data, LoRA: the memory the
training itself adds).

Targets (issue 12, item 4; issue 3 before), checked on the step-time ratio and the
peak-memory ratio: the regularizers (L2, EWC, MAS) <= 1.15x SFT, LwF <= 1.6x, DER <= 1.8x,
DER++ <= 2.0x, A-GEM <= 2.2x. Beside them, ``amortized_ratio``: a whole study run's
training time (``prepare`` + the run's number of steps at the measured step time) over
SFT's, since some methods move work into ``prepare`` (EWC/MAS importances, DER's stored
targets, LwF's precomputed reference). The machine's load average at the start and end
is recorded: step times are wall-clock, and other work on the machine inflates them.

    python benchmarks/methods.py [--model embedded|tiny-random] [--steps 3] [--max-length 256]
                                 [--methods sft,ewc,der] [--out paper_outputs/benchmarks/methods.json]

Run it on an otherwise idle machine: step times are wall-clock.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ussafety.config import RunConfig, load_config
from ussafety.models.chat import Collator, encode_train
from ussafety.paths import PROJECT_ROOT
from ussafety.records.store import git_state, package_versions, write_json_atomic

TARGETS = {"l2": 1.15, "ewc": 1.15, "mas": 1.15, "lwf": 1.6, "der": 1.8, "derpp": 2.0, "agem": 2.2}
PARAMS_DIR = PROJECT_ROOT / "params" / "methods" / "poisoned_sst2"
DEFAULT_PARAMS = PROJECT_ROOT / "params" / "foundation" / "sft_poisoned_p0.1.yaml"
MB = 1024 * 1024


# ---------------------------------------------------------------- memory


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory between :meth:`reset` and :meth:`peak_mb`: CUDA allocator peak, or the
    process's peak RSS (``VmHWM`` reset via ``clear_refs``; an RSS sampler otherwise)."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.how = "torch.cuda.max_memory_allocated" if self.cuda else "VmHWM (clear_refs)"
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0
        if not self.cuda and not self._clear_refs():
            self.how = "RSS sampled every 2 ms (psutil)"

    @staticmethod
    def _clear_refs() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            return _status_kb("VmHWM") is not None
        except OSError:
            return False

    def current_mb(self) -> float:
        if self.cuda:
            return torch.cuda.memory_allocated() / MB
        kb = _status_kb("VmRSS")
        if kb is not None:
            return kb / 1024
        import psutil

        return psutil.Process().memory_info().rss / MB

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif self.how.startswith("VmHWM"):
            self._clear_refs()
        else:
            self._stop_sampler()
            import psutil

            proc, self._stop = psutil.Process(), threading.Event()
            self._sampled = proc.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(0.002):
                    self._sampled = max(self._sampled, proc.memory_info().rss)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()

    def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None

    def peak_mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / MB
        hwm = _status_kb("VmHWM") if self.how.startswith("VmHWM") else None
        if hwm is not None:
            return hwm / 1024
        self._stop_sampler()
        return self._sampled / MB


# ---------------------------------------------------------------- one method (worker process)


def method_config(
    method: str, params_dir: Path, model: str | None, max_length: int | None, batch: int | None
) -> RunConfig:
    """The study's config of ``method`` (its params file, else the default poisoned file
    with the method swapped in), with the benchmark's model and sizes."""
    path = params_dir / f"{method}.yaml"
    overrides: dict[str, Any] = {}
    if not path.is_file():
        path, overrides = DEFAULT_PARAMS, {"method": {"name": method, "params": {}}}
    if model:
        overrides["model"] = {"name": model}
    train: dict[str, Any] = {}
    if max_length:
        train["max_length"] = max_length
    if batch:
        train["batch_size"] = batch
    if train:
        overrides["train"] = train
    return load_config(path, overrides)


def base_model(cfg: RunConfig, tmp: Path) -> tuple[Any, str, str]:
    """(loaded model, instruct folder, what the base is). The aligned base when it is
    cached (never built here), else the instruct model itself; the tiny random model is
    saved to ``tmp`` so the merges can read "instruct" weights from a folder."""
    from ussafety.models.loading import TINY_RANDOM, load_model, model_dir_for
    from ussafety.train.align import aligned_dir

    if cfg.model.name == TINY_RANDOM:
        loaded = load_model(cfg.model, seed=cfg.seed)
        loaded.model.save_pretrained(tmp / "instruct")
        return loaded, str(tmp / "instruct"), "tiny-random (instruct = base)"
    aligned = aligned_dir(cfg)
    if cfg.align.enabled and (aligned / "alignment.json").is_file():
        return load_model(cfg.model, path=aligned, seed=cfg.seed), model_dir_for(cfg.model), str(aligned)
    return load_model(cfg.model, seed=cfg.seed), model_dir_for(cfg.model), "instruct (no cached aligned base)"


def fixed_batches(cfg: RunConfig, n_batches: int) -> tuple[list[Any], list[Any]]:
    """(timed rows, all rows): the first ``n_batches * batch_size`` rows of the study's
    poisoned SST-2 upload in a seeded order (the same for every method), and the upload."""
    import random

    from ussafety.pipeline import train_rows

    rows = train_rows(cfg)
    random.Random(cfg.seed).shuffle(rows)
    need = n_batches * cfg.train.batch_size
    return (rows * (need // len(rows) + 1))[:need], rows


def tokens(tokenizer: Any, rows: list[Any], max_length: int) -> tuple[int, int]:
    """(tokens, response tokens) of ``rows`` as the trainer encodes them."""
    enc = [encode_train(tokenizer, r, max_length) for r in rows]
    return (sum(len(e["input_ids"]) for e in enc), sum(sum(1 for t in e["labels"] if t != -100) for e in enc))


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import TrainerCallback, set_seed

    from ussafety.data import load
    from ussafety.methods import TrainContext, make_method
    from ussafety.models.loading import add_lora
    from ussafety.train.trainer import EncodedDataset, MethodTrainer, _HookCallback, training_args

    cfg = method_config(args.worker, Path(args.params_dir), args.model, args.max_length, args.batch)
    memory = PeakMemory()
    set_seed(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="ussafety-bench-") as tmp:
        loaded, instruct_dir, base = base_model(cfg, Path(tmp))
        tok = loaded.tokenizer
        model = add_lora(loaded, cfg.train.lora, seed=cfg.seed)
        n_steps = 1 + args.steps
        rows, all_rows = fixed_batches(cfg, n_steps)
        safety = load(cfg.method.safety_set, limit=cfg.method.n_safety, seed=cfg.seed + 1)
        ctx = TrainContext(
            tokenizer=tok,
            max_length=cfg.train.max_length,
            batch_size=cfg.train.batch_size,
            safety_data=safety,
            user_data=all_rows,
            aligned_dir=None,
            instruct_dir=instruct_dir,
            seed=cfg.seed,
        )
        per_epoch = -(-len(all_rows) // (cfg.train.batch_size * cfg.train.grad_accum))
        ctx.total_steps = cfg.train.max_steps if cfg.train.max_steps > 0 else int(per_epoch * cfg.train.epochs)
        method = make_method(cfg.method.name, cfg.method.params)
        extra = method.extra_data(ctx)  # SafeInstr's rows: reported, not in the timed batches
        data = EncodedDataset(tok, rows, cfg.train.max_length)

        memory.reset()
        base_mb = memory.current_mb()
        start = time.perf_counter()
        method.prepare(model, ctx)
        if memory.cuda:
            torch.cuda.synchronize()
        prepare_s = time.perf_counter() - start
        prepare_peak_mb = memory.peak_mb()

        times: list[float] = []
        states: list[str | None] = []
        peak: dict[str, float] = {}

        class Timer(TrainerCallback):
            def on_step_begin(self, a, state, control, **kw):
                if state.global_step == 1:  # the warm-up step is done: measure from here
                    memory.reset()
                states.append(getattr(method, "state", None))
                if memory.cuda:
                    torch.cuda.synchronize()
                self.t = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                if memory.cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - self.t)

            def on_train_end(self, a, state, control, **kw):
                peak["mb"] = memory.peak_mb()

        train_cfg = cfg.train
        targs = training_args(train_cfg, cfg.seed, str(Path(tmp) / "out"), len(data))
        targs.max_steps = n_steps
        targs.train_sampling_strategy = "sequential"
        targs.disable_tqdm = True
        targs.logging_steps = 10**6
        trainer = MethodTrainer(
            model=model,
            args=targs,
            train_dataset=data,
            data_collator=Collator(tok.pad_token_id),
            hooks=[method],
            ctx=ctx,
            callbacks=[_HookCallback([method], ctx), Timer()],
        )
        trainer.train()
        model.eval()
        start = time.perf_counter()
        method.finalize(model, ctx)
        finalize_s = time.perf_counter() - start

    timed, timed_states = times[1:], states[1:]
    step_s = statistics.median(timed)
    by_state = {s: [t for t, st in zip(timed, timed_states) if st == s] for s in set(timed_states)}
    schedule = None
    fields = vars(method)
    if "align_steps" in fields and len(by_state) == 2:  # Lisa: the mean over one cycle
        weights = {"align": fields["align_steps"], "user": fields["user_steps"]}
        schedule = {str(s): statistics.median(v) for s, v in by_state.items()}
        step_s = sum(weights[s] * schedule[s] for s in schedule) / sum(weights.values())
    user_tok, user_resp = tokens(tok, rows[cfg.train.batch_size :], cfg.train.max_length)
    safety_tok, safety_resp = tokens(tok, safety, cfg.train.max_length)
    all_tok, _ = tokens(tok, all_rows, cfg.train.max_length)
    extra_tok, _ = tokens(tok, extra, cfg.train.max_length) if extra else (0, 0)
    return {
        "method": cfg.method.name,
        "params": cfg.method.params,
        "base": base,
        "device": "cuda" if memory.cuda else "cpu",
        "threads": torch.get_num_threads(),
        "prepare_s": prepare_s,
        "warmup_step_s": times[0],
        "step_times_s": timed,
        "step_mean_s": sum(timed) / len(timed),
        "step_states": timed_states if any(timed_states) else None,
        "step_s_by_state": schedule,
        "step_s": step_s,
        "finalize_s": finalize_s,
        "memory_measure": memory.how,
        "base_mb": base_mb,
        "prepare_peak_mb": prepare_peak_mb,
        "peak_mb": peak["mb"],
        "peak_extra_mb": peak["mb"] - base_mb,
        "timed_user_tokens": user_tok,
        "timed_user_response_tokens": user_resp,
        "user_tokens_per_row": user_tok / len(rows[cfg.train.batch_size :]),
        "user_response_tokens_per_row": user_resp / len(rows[cfg.train.batch_size :]),
        "safety_tokens_per_row": safety_tok / len(safety),
        "safety_response_tokens_per_row": safety_resp / len(safety),
        "extra_rows": len(extra),
        "data_tokens_ratio": (all_tok + extra_tok) / all_tok,
        "run_steps": ctx.total_steps,
        "batch_size": cfg.train.batch_size,
        "max_length": cfg.train.max_length,
        "model": cfg.model.name,
        "lora": {"r": cfg.train.lora.r, "targets": cfg.train.lora.target_modules},
    }


# ---------------------------------------------------------------- all methods (parent)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
        with open("/proc/meminfo", encoding="utf-8") as fh:
            info["memory_gb"] = round(int(fh.readline().split()[1]) / 1024**2, 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def measure(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in a fresh subprocess and return its measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            method,
            "--worker-out",
            str(out),
            "--steps",
            str(args.steps),
            "--params-dir",
            str(args.params_dir),
        ]
        for flag, value in (("--model", args.model), ("--max-length", args.max_length), ("--batch", args.batch)):
            if value:
                cmd += [flag, str(value)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{method}: benchmark worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def compare(results: dict[str, dict[str, Any]], sft_again: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Ratios to SFT (the mean of its two measurements when there are two) and the
    issue's targets for each method."""
    sft = dict(results["sft"])
    if sft_again is not None:
        for key in ("step_s", "peak_mb", "peak_extra_mb"):
            sft[key] = (results["sft"][key] + sft_again[key]) / 2
    out = {}
    for name, r in results.items():
        target = TARGETS.get(name)
        step = r["step_s"] / sft["step_s"]
        mem = r["peak_mb"] / sft["peak_mb"]
        extra = r["peak_extra_mb"] / sft["peak_extra_mb"] if sft["peak_extra_mb"] > 0 else float("nan")
        amortized = None
        if r.get("run_steps") and "prepare_s" in r and "prepare_s" in sft:
            n = r["run_steps"]
            amortized = (r["prepare_s"] + n * r["step_s"]) / (sft["prepare_s"] + n * sft["step_s"])
        out[name] = {
            "step_time_ratio": step,
            "peak_memory_ratio": mem,
            "peak_extra_memory_ratio": extra,
            "amortized_ratio": amortized,
            "target": target,
            "step_time_met": None if target is None else step <= target,
            "peak_memory_met": None if target is None else mem <= target,
        }
    return out


def table(results: dict[str, dict[str, Any]], ratios: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'method':16} {'prepare_s':>9} {'step_s':>8} {'step x':>7} {'run x':>6} {'peak_MB':>8} "
        f"{'mem x':>6} {'extra_MB':>8} {'extra x':>7} {'finalize_s':>10}  target"
    )
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        q = ratios[name]
        if q["target"] is None:
            verdict = ""
        else:
            verdict = (
                f"<= {q['target']:.2f}x: step {'met' if q['step_time_met'] else 'NOT met'}, "
                f"memory {'met' if q['peak_memory_met'] else 'NOT met'}"
            )
        run = q.get("amortized_ratio")
        lines.append(
            f"{name:16} {r['prepare_s']:9.2f} {r['step_s']:8.3f} {q['step_time_ratio']:7.2f} "
            f"{'' if run is None else f'{run:.2f}':>6} "
            f"{r['peak_mb']:8.0f} {q['peak_memory_ratio']:6.2f} {r['peak_extra_mb']:8.0f} "
            f"{q['peak_extra_memory_ratio']:7.2f} {r['finalize_s']:10.2f}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ussafety.study.reports import METHOD_ORDER

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded (default), tiny-random, a hub id or folder")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (default 3)")
    parser.add_argument("--max-length", type=int, help="train.max_length (default: the study's, 256)")
    parser.add_argument("--batch", type=int, help="train.batch_size (default: the study's, 8)")
    parser.add_argument("--methods", help="comma-separated (default: every method); sft is always measured")
    parser.add_argument("--params-dir", default=str(PARAMS_DIR), help="the methods' params files")
    parser.add_argument(
        "--out",
        default=str(PROJECT_ROOT / "paper_outputs" / "benchmarks" / "methods.json"),
        help="result JSON (default paper_outputs/benchmarks/methods.json)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.worker:
        write_json_atomic(Path(args.worker_out), run_worker(args))
        return 0
    methods = [m.strip() for m in (args.methods or ",".join(METHOD_ORDER)).split(",") if m.strip()]
    methods = ["sft"] + [m for m in methods if m != "sft"]
    load_start = load_average()
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        print(f"measuring {m} ...", file=sys.stderr, flush=True)
        results[m] = measure(m, args)
    sft_again = None
    if len(methods) > 1:
        print("measuring sft again (drift check) ...", file=sys.stderr, flush=True)
        sft_again = measure("sft", args)
    ratios = compare(results, sft_again)
    print(table(results, ratios))
    drift = sft_again["step_s"] / results["sft"]["step_s"] if sft_again else None
    if drift is not None:
        print(
            f"sft step time, last / first measurement: {drift:.2f} "
            "(far from 1: the machine's speed changed; rerun when it is idle)"
        )
    first = results["sft"]
    report = {
        "what": "training step time and peak memory per method relative to SFT, same batches "
        "(see benchmarks/methods.py)",
        "targets": TARGETS,
        "args": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
        "setup": {
            k: first[k]
            for k in (
                "model",
                "base",
                "device",
                "threads",
                "batch_size",
                "max_length",
                "lora",
                "memory_measure",
                "user_tokens_per_row",
                "user_response_tokens_per_row",
                "safety_tokens_per_row",
                "safety_response_tokens_per_row",
            )
        },
        "results": results,
        "sft_again": sft_again,
        "sft_step_drift": drift,
        "ratios": ratios,
        "machine": {**machine(), "load_average_start": load_start, "load_average_end": load_average()},
        "versions": package_versions(),
        "git": git_state(),
    }
    write_json_atomic(Path(args.out), report)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
