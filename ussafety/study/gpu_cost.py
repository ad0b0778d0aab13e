"""What a GPU study costs before it runs: per run config, per grid, and the runs that cannot fit.

Why: ``ussafety.study.cost`` estimates from the timings of finished records, which a GPU
study does not have before its first run; this module estimates from the model's shapes
(:mod:`ussafety.models.estimate`), so ``ussafety reproduce --preset paper --estimate`` gives
the GPU-hours of a study never run and refuses, before any weights load, a run whose
memory cannot fit. Every fact about a run is read from the resolved :class:`RunConfig` and
the code that runs it, never restated: the evaluation's prompt counts from the committed
split files, the task's answer length from ``ussafety.data.tasks``, the SFT cache key from
``ussafety.config.training_key``, the LoRA backend from ``ussafety.models.backend``, a
method's cost from ``ussafety.methods.costs``, a judge's answer length from its class.
What only a measurement can say is written here, with how it was measured: token counts.
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ussafety.config import RunConfig, from_dict, training_key
from ussafety.data.tasks import TASKS
from ussafety.methods.costs import method_cost
from ussafety.models.backend import choose_backend, method_needs_base_weight_grads
from ussafety.models.costs import DeviceSpec, GiB, JudgeModel
from ussafety.models.estimate import RunEstimate, estimate_run
from ussafety.study.cost import eval_counts

TASK_TOKENS: dict[str, dict[str, int]] = {
    # train: mean tokens of a chat-formatted training row; response: of its response part;
    # prompt / prompt_max: mean and longest chat-formatted evaluation prompt of the task.
    "sst2": {"train": 75, "response": 3, "prompt": 90, "prompt_max": 125},
    "gsm8k": {"train": 250, "response": 145, "prompt": 105, "prompt_max": 200},
    "code": {"train": 135, "response": 70, "prompt": 230, "prompt_max": 525},
}
"""Typical token counts per task of ``ussafety.data.tasks.TASKS`` (a test keeps the keys
equal). Measured on the data mirror with SmolLM2's tokenizer and chat template
(``ussafety.models.chat``): 1000 training rows (means SST-2 66/2, GSM8K 218/127, Code
Alpaca 118/62 tokens per row/response) and the committed test splits (prompts: SST-2 mean
76, max 108; GSM8K 91, 173; HumanEval 202, 456), then raised ~15% for the 32k-vocabulary
Llama-2/Mistral tokenizers. An upload is estimated at ``max_length`` (an upper bound)."""
SAFETY_PROMPT_TOKENS = 85
"""Mean chat-formatted safety prompt, measured as above on the test split: harmful 77
(HarmBench's contextual behaviours carry long contexts), XSTest safe 40; +15%."""
SAFETY_PROMPT_MAX_TOKENS = 1200
"""The longest harmful test prompt (1025 tokens, a contextual behaviour) +15%: sets the
first generation batch's KV cache."""

JUDGE_CHECKPOINTS: dict[str, str] = {
    "llama_guard": "meta-llama/Llama-Guard-3-8B",
    "harmbench": "cais/HarmBench-Llama-2-13b-cls",
}
"""The checkpoint an LLM judge is estimated with (the paper's; the judge loads whatever
folder it is given). StrongREJECT grades with any local chat model: not estimated."""


def judge_model(name: str) -> JudgeModel:
    """The LLM judge ``name`` as the estimate sees it: its checkpoint, and the answer length
    and batch size its class (``ussafety.evaluate.judges.llm``) generates with."""
    from ussafety.evaluate.judges.llm import LLM_JUDGES

    if name not in JUDGE_CHECKPOINTS:
        raise ValueError(f"no model known for judge '{name}' (known: {', '.join(JUDGE_CHECKPOINTS)})")
    cls = LLM_JUDGES[name]
    batch = inspect.signature(cls.__init__).parameters["batch_size"].default
    return JudgeModel(name=name, model=JUDGE_CHECKPOINTS[name], max_new_tokens=cls.max_new_tokens, batch_size=batch)


def as_run_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """``cfg`` itself, or the mapping validated (and its aliases resolved) as a run config."""
    return cfg if isinstance(cfg, RunConfig) else from_dict(dict(cfg))


def estimate_config(
    cfg: RunConfig | Mapping[str, Any],
    *,
    device: str | DeviceSpec = "H200",
    flops_per_s: float | None = None,
    mem_bw_bytes_per_s: float | None = None,
    backend: str | None = None,
) -> RunEstimate:
    """:func:`~ussafety.models.estimate.estimate_run` for a run config (or its dict).

    The backend is chosen as the loader chooses it on a CUDA machine with Unsloth installed
    (``backend`` overrides ``model.backend``): Unsloth checkpoints activations, PEFT (which
    ``auto`` gives EWC/MAS) does not; a combination the loader refuses raises its
    ``BackendError``. Merges and Safe LoRA share the SFT training of their ``training_key``.
    """
    cfg = as_run_config(cfg)
    trains = bool(cfg.task.name or cfg.task.upload)
    method = method_cost(cfg.method.name, cfg.method.params)
    chosen = choose_backend(
        backend or cfg.model.backend,
        cuda=True,
        unsloth_importable=True,
        needs_base_weight_grads=method_needs_base_weight_grads(cfg.method.name),
    )
    tokens = TASK_TOKENS.get(cfg.task.name or "", {}) if trains else {}
    eval_task = cfg.eval.task_name(cfg.task.name)
    eval_tokens = TASK_TOKENS.get(eval_task or "", {})
    counts = eval_counts(cfg)
    llm_judges = [
        judge_model(name)
        for name in (spec.partition("=")[0].strip() for spec in cfg.eval.judges)
        if name in JUDGE_CHECKPOINTS
    ]
    label = (f"sft+{cfg.merge.name}" if cfg.merge.name else cfg.method.name) if trains else "base"
    return estimate_run(
        cfg.model.name,
        name=cfg.name,
        dtype=cfg.model.dtype,
        lora_r=cfg.train.lora.r,
        lora_targets=list(cfg.train.lora.target_modules),
        batch_size=cfg.train.batch_size,
        grad_accum=cfg.train.grad_accum,
        seq_len=cfg.train.max_length,
        train_tokens_per_row=tokens.get("train"),
        response_tokens_per_row=tokens.get("response"),
        n_train_rows=cfg.task.n_train if trains else 0,
        epochs=float(cfg.train.epochs),
        max_steps=cfg.train.max_steps,
        method=method,
        gradient_checkpointing=chosen == "unsloth",
        n_eval_prompts=counts["harmful"] + counts["xstest"],
        max_new_tokens=cfg.eval.max_new_tokens,
        prompt_tokens=SAFETY_PROMPT_TOKENS,
        max_prompt_tokens=SAFETY_PROMPT_MAX_TOKENS,
        n_task_prompts=counts["task"],
        task_max_new_tokens=(cfg.eval.task_max_new_tokens or TASKS[eval_task].max_new_tokens) if eval_task else None,
        task_prompt_tokens=eval_tokens.get("prompt"),
        task_max_prompt_tokens=eval_tokens.get("prompt_max"),
        eval_batch_size=cfg.eval.batch_size,
        # every judge labels the harmful answers and the XSTest safe ones (over-refusal)
        judges=llm_judges,
        n_judged=counts["harmful"] + counts["xstest"],
        device=device,
        flops_per_s=flops_per_s,
        mem_bw_bytes_per_s=mem_bw_bytes_per_s,
        training_key=training_key(cfg) if trains and method.trains_like_sft else None,
        label=label,
    )


# --------------------------------------------------------------------------- many runs


@dataclass
class GridEstimate:
    """Many runs: GPU-hours in total (a training shared by several runs counted once) and
    each run's peak memory."""

    runs: list[RunEstimate]
    charged_train_s: list[float]  # per run: its training time, 0 when an earlier run trained it

    @property
    def total_s(self) -> float:
        return sum(self.charged_train_s) + sum(r.eval_s + r.judge_s for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        return self.total_s / 3600

    @property
    def peak_bytes(self) -> int:
        return max((r.peak_bytes for r in self.runs), default=0)

    @property
    def trainings(self) -> int:
        """Trainings actually run (a shared SFT training once)."""
        return sum(1 for r, s in zip(self.runs, self.charged_train_s) if r.train_rows and s > 0)

    def not_fitting(self, gpu_bytes: int) -> list[RunEstimate]:
        """The runs whose estimated peak exceeds ``gpu_bytes``."""
        return [r for r in self.runs if not r.fits(gpu_bytes)]

    def groups(self) -> list[dict[str, Any]]:
        """Runs grouped by (model, method): count, GPU-hours charged, and the largest peak."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r, train_s in zip(self.runs, self.charged_train_s):
            g = out.setdefault(
                (r.model, r.method),
                {"model": r.model, "method": r.method, "runs": 0, "gpu_hours": 0.0, "peak_bytes": 0},
            )
            g["runs"] += 1
            g["gpu_hours"] += (train_s + r.eval_s + r.judge_s) / 3600
            g["peak_bytes"] = max(g["peak_bytes"], r.peak_bytes)
        return list(out.values())

    def summary(self, gpu_bytes: int | None = None) -> str:
        """A plain-text table per (model, method) and the totals."""
        lines = [
            f"{len(self.runs)} runs, {self.gpu_hours:.1f} GPU-hours "
            f"(device {self.runs[0].device if self.runs else '-'}; rates assumed until measured), "
            f"largest peak {self.peak_bytes / GiB:.1f} GiB",
            f"{'model':36s} {'method':20s} {'runs':>5s} {'GPU-h':>7s} {'peak GiB':>9s}",
        ]
        for g in self.groups():
            flag = "  DOES NOT FIT" if gpu_bytes is not None and g["peak_bytes"] > gpu_bytes else ""
            lines.append(
                f"{g['model']:36s} {g['method']:20s} {g['runs']:5d} {g['gpu_hours']:7.2f} "
                f"{g['peak_bytes'] / GiB:9.1f}{flag}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": len(self.runs),
            "gpu_hours": self.gpu_hours,
            "peak_bytes": self.peak_bytes,
            "trainings": self.trainings,
            "train_hours": sum(self.charged_train_s) / 3600,
            "generation_hours": sum(r.eval_s for r in self.runs) / 3600,
            "judge_hours": sum(r.judge_s for r in self.runs) / 3600,
            "median_run_minutes": statistics.median(r.total_s for r in self.runs) / 60 if self.runs else 0.0,
            "groups": self.groups(),
        }


def estimate_grid(runs: Iterable[RunEstimate]) -> GridEstimate:
    """Sum ``runs``: a training shared by several runs (same :attr:`RunEstimate.training_key`)
    is charged to the first of them only, as the pipeline trains it once."""
    runs = list(runs)
    seen: set[str] = set()
    charged = []
    for r in runs:
        if r.training_key is not None and r.training_key in seen:
            charged.append(0.0)
            continue
        if r.training_key is not None:
            seen.add(r.training_key)
        charged.append(r.train_s)
    return GridEstimate(runs=runs, charged_train_s=charged)


# --------------------------------------------------------------------------- refusing a run


class DoesNotFit(RuntimeError):
    """A run's estimated peak memory exceeds what the GPU has."""


def visible_gpu_bytes() -> int | None:
    """Free memory of the current CUDA device (``torch.cuda.mem_get_info``), None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def refusal(estimate: RunEstimate, gpu_bytes: int) -> str:
    """Why ``estimate`` cannot run in ``gpu_bytes``, and what would help (one paragraph)."""
    g = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    phase = "training" if estimate.train_peak_bytes >= estimate.eval_peak_bytes else "evaluation"
    hints = []
    if phase == "training":
        if not estimate.gradient_checkpointing:
            saved = g(estimate.activations_bytes_no_ckpt - estimate.activations_bytes_ckpt)
            if method_needs_base_weight_grads(estimate.method):
                hints.append(
                    f"checkpointing activations would save {saved}, but this method runs under "
                    "PEFT (Unsloth computes no base-weight gradient), whose LoRA the trainer "
                    "does not checkpoint"
                )
            else:
                hints.append(
                    f"the Unsloth backend (model.backend: auto or unsloth, on CUDA with it "
                    f"installed) checkpoints activations: {saved} less"
                )
        hints.append(
            f"halving train.batch_size (doubling grad_accum) saves about "
            f"{g((estimate.activations_bytes + estimate.logits_bytes) // 2)}"
        )
        if estimate.method_bytes > estimate.activations_bytes:
            hints.append(
                f"method '{estimate.method}' keeps {g(estimate.method_bytes)} of its own "
                "(EWC/MAS: 8 bytes per adapted weight; adapt fewer modules to shrink it)"
            )
    else:
        if estimate.judge_bytes:
            hints.append(f"the LLM judge takes {g(estimate.judge_bytes)}: judge in a separate pass")
        hints.append(f"a smaller eval.batch_size shrinks the KV cache ({g(estimate.kv_cache_bytes)})")
    return (
        f"run '{estimate.name}' ({estimate.model}, {estimate.method}) needs about "
        f"{g(estimate.peak_bytes)} at its {phase} peak but the GPU has {g(gpu_bytes)}; " + "; ".join(hints) + "."
    )


def check_fits(estimate: RunEstimate, gpu_bytes: int | None = None) -> int:
    """Raise :class:`DoesNotFit` (saying what would help) when ``estimate`` cannot fit.

    ``gpu_bytes``: the memory to fit in; default, the visible GPU's free memory. Without
    CUDA it must be given (e.g. ``DEVICES["H100"].memory_bytes``). Returns the bytes used
    for the check.
    """
    if gpu_bytes is None:
        gpu_bytes = visible_gpu_bytes()
        if gpu_bytes is None:
            raise ValueError(
                "no CUDA device is visible: pass gpu_bytes (e.g. "
                "DEVICES['H200'].memory_bytes) to check a run against a GPU"
            )
    if estimate.fits(gpu_bytes):
        return gpu_bytes
    raise DoesNotFit(refusal(estimate, gpu_bytes) + f"\n{estimate.summary()}")
