"""Greedy generation with vLLM, interchangeable with the HF path (``generate.generate``).

Why: at 7B scale, evaluation is most of a run's GPU time (``ussafety.study.gpu_cost``: HF
``generate`` decodes one token per step for the whole batch, bound by kernel launches
and weight reads), and vLLM's continuous batching and paged KV cache make it several
times faster. It is only worth using if it gives the same answers, so this module
keeps the HF path's contract exactly and :func:`compare_outputs` measures agreement:

* input: already chat-formatted prompt strings, tokenised with the *same* HF tokenizer
  and ``add_special_tokens=False`` (the chat template already wrote BOS; vLLM's own
  string tokenisation would add a second one), passed to vLLM as token ids;
* decoding: greedy (``temperature=0``), at most ``max_new_tokens``, stopping at the
  tokenizer's EOS;
* output: the new tokens decoded by the same HF tokenizer with
  ``skip_special_tokens=True`` and stripped, one string per prompt in the caller's order.

A LoRA adapter folder (PEFT's ``save_pretrained``) is served unmerged through a
``LoRARequest``; one engine serves any number of adapters of the same base, so a grid
of runs loads the 7B weights once. vLLM is imported on first use only: it is not a
dependency, and needs a CUDA GPU.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTYPES = ("bfloat16", "float16", "float32", "auto")
VLLM_INSTALL = (
    "pip install vllm (a wheel built for this machine's torch and CUDA; see "
    "docs/gpu.md), or evaluate with the HF path (ussafety.evaluate.generate)"
)


class VllmUnavailable(ImportError):
    """vLLM cannot run here: not installed, or no CUDA GPU. The message says what to do."""


def vllm_available() -> bool:
    """Whether ``vllm`` is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def _import_vllm() -> tuple[Any, Any, Any]:
    """``(LLM, SamplingParams, LoRARequest)``, or :class:`VllmUnavailable` saying why not."""
    if not vllm_available():
        raise VllmUnavailable(f"vLLM is not installed: {VLLM_INSTALL}")
    import torch

    if not torch.cuda.is_available():
        raise VllmUnavailable(
            "vLLM generation needs a CUDA GPU and none is visible; use the HF "
            "path (ussafety.evaluate.generate) on this machine"
        )
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    return LLM, SamplingParams, LoRARequest


def check_prompts(prompts: Any) -> list[str]:
    """``prompts`` as a list of strings; a single string (a common slip that would be
    generated character by character) or a non-string item is an error."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}")
    return prompts


def adapter_rank(adapter_dir: str | Path) -> int:
    """The LoRA rank ``r`` of a saved PEFT adapter (vLLM must be told the largest rank)."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a saved LoRA adapter)")
    return int(json.loads(path.read_text(encoding="utf-8"))["r"])


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""Values vLLM accepts for ``max_lora_rank``."""


def max_lora_rank_for(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})")


class VllmGenerator:
    """One vLLM engine for a base model; generates for the base or any saved adapter.

    ``model_dir``: the base weights (a local folder; no hub on the GPU machine).
    ``tokenizer``: the HF tokenizer the HF path uses (default: loaded from ``model_dir``),
    which encodes the prompts and decodes the outputs so both paths see the same tokens.
    ``max_lora_rank``: the largest adapter rank to serve (0: no LoRA support).
    ``gpu_memory_utilization``: vLLM reserves this share of the GPU up front, weights and
    KV cache together; lower it when an HF model or a judge shares the GPU.
    ``engine_kwargs``: passed to ``vllm.LLM`` as they are (e.g. ``max_model_len``).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        tokenizer: Any = None,
        dtype: str = "bfloat16",
        max_lora_rank: int = 0,
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        if not str(model_dir):
            raise ValueError("model_dir is empty")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got '{dtype}'")
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if max_lora_rank < 0:
            raise ValueError(f"max_lora_rank must be >= 0, got {max_lora_rank}")
        self.model_dir = str(model_dir)
        self.dtype = dtype
        self.max_lora_rank = max_lora_rank_for(max_lora_rank) if max_lora_rank else 0
        self.gpu_memory_utilization = gpu_memory_utilization
        self.seed = seed
        self.engine_kwargs = engine_kwargs
        self._tokenizer = tokenizer
        self._llm: Any = None
        self._classes: tuple[Any, Any, Any] | None = None
        self._adapter_ids: dict[str, int] = {}

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        return self._tokenizer

    def engine(self) -> Any:
        """The ``vllm.LLM`` (built on first use: loading a 7B model takes a minute)."""
        if self._llm is None:
            self._classes = _import_vllm()
            llm_cls = self._classes[0]
            lora = {"enable_lora": True, "max_lora_rank": self.max_lora_rank} if self.max_lora_rank else {}
            self._llm = llm_cls(
                model=self.model_dir,
                tokenizer=self.model_dir,
                dtype=self.dtype,
                gpu_memory_utilization=self.gpu_memory_utilization,
                seed=self.seed,
                **lora,
                **self.engine_kwargs,
            )
        return self._llm

    def _lora_request(self, adapter_dir: str | Path | None) -> Any:
        if adapter_dir is None:
            return None
        rank = adapter_rank(adapter_dir)
        if not self.max_lora_rank:
            raise ValueError(
                f"this engine was built without LoRA support; build it with "
                f"max_lora_rank >= {rank} to serve {adapter_dir}"
            )
        if rank > self.max_lora_rank:
            raise ValueError(f"{adapter_dir}: LoRA rank {rank} > the engine's max_lora_rank {self.max_lora_rank}")
        key = str(Path(adapter_dir).resolve())
        lora_id = self._adapter_ids.setdefault(key, len(self._adapter_ids) + 1)  # ids start at 1
        assert self._classes is not None
        return self._classes[2](f"adapter{lora_id}", lora_id, key)

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        adapter_dir: str | Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Greedy completions of already chat-formatted ``prompts`` (the HF path's contract)."""
        prompts = check_prompts(prompts)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if adapter_dir is not None:
            adapter_rank(adapter_dir)  # a wrong folder fails before the engine is built
        if not prompts:
            return []
        llm = self.engine()
        assert self._classes is not None
        tok = self.tokenizer
        eos = tok.eos_token_id
        params = self._classes[1](
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop_token_ids=[eos] if eos is not None else None,
            skip_special_tokens=True,
        )
        inputs = [{"prompt_token_ids": tok(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outputs = llm.generate(inputs, params, lora_request=self._lora_request(adapter_dir), use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        texts = [tok.decode(list(o.outputs[0].token_ids), skip_special_tokens=True).strip() for o in outputs]
        if progress:
            progress(len(prompts))
        return texts


def generate(
    model_dir: str | Path,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    *,
    adapter_dir: str | Path | None = None,
    tokenizer: Any = None,
    dtype: str = "bfloat16",
    **engine_kwargs: Any,
) -> list[str]:
    """One-shot :meth:`VllmGenerator.generate` (builds and drops an engine: for many calls,
    keep a :class:`VllmGenerator`)."""
    prompts = check_prompts(prompts)
    rank = adapter_rank(adapter_dir) if adapter_dir is not None else 0
    gen = VllmGenerator(model_dir, tokenizer=tokenizer, dtype=dtype, max_lora_rank=rank, **engine_kwargs)
    return gen.generate(prompts, max_new_tokens, adapter_dir=adapter_dir)


# --------------------------------------------------------------------------- agreement


@dataclass
class Divergence:
    """Where one prompt's two outputs first differ."""

    index: int  # the prompt's position
    offset: int  # first differing character
    reference: str  # the reference's text from a little before the offset
    candidate: str


@dataclass
class GenerationComparison:
    """How often two generators gave the same text for the same prompts."""

    n: int
    n_exact: int
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def exact_match_rate(self) -> float:
        return self.n_exact / self.n if self.n else 1.0

    @property
    def first_divergence(self) -> Divergence | None:
        """The mismatch that starts earliest in its text (the likeliest real disagreement
        rather than a late numerical tie-break)."""
        return min(self.divergences, key=lambda d: d.offset, default=None)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "n": self.n,
            "n_exact": self.n_exact,
            "exact_match_rate": self.exact_match_rate,
            "mean_divergence_offset": (
                sum(d.offset for d in self.divergences) / len(self.divergences) if self.divergences else None
            ),
            "first_divergence": first.__dict__ if first else None,
        }


def divergence_offset(a: str, b: str) -> int | None:
    """Index of the first character where ``a`` and ``b`` differ (None if equal)."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare_outputs(reference: Sequence[str], candidate: Sequence[str], context: int = 40) -> GenerationComparison:
    """Exact-match rate of ``candidate`` against ``reference`` (same prompts, same order),
    with where each mismatching pair first differs. Greedy decoding in bf16 can differ
    between two kernels once two tokens' logits tie within rounding; a divergence late in
    the text is that, one at offset 0 is a real difference (template, EOS, adapter)."""
    reference, candidate = list(reference), list(candidate)
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs but {len(candidate)} candidates")
    divergences = []
    for i, (a, b) in enumerate(zip(reference, candidate)):
        off = divergence_offset(a, b)
        if off is not None:
            start = max(0, off - context // 4)
            divergences.append(Divergence(i, off, a[start : off + context], b[start : off + context]))
    return GenerationComparison(n=len(reference), n_exact=len(reference) - len(divergences), divergences=divergences)


def check_against_hf(
    generator: VllmGenerator,
    prompts: Sequence[str],
    hf_outputs: Sequence[str],
    max_new_tokens: int,
    *,
    adapter_dir: str | Path | None = None,
) -> GenerationComparison:
    """vLLM's greedy outputs on ``prompts`` compared to the HF path's ``hf_outputs`` for the
    same prompts, model, adapter and ``max_new_tokens``."""
    prompts = check_prompts(prompts)
    if len(hf_outputs) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(hf_outputs)} HF outputs")
    return compare_outputs(hf_outputs, generator.generate(prompts, max_new_tokens, adapter_dir=adapter_dir))
