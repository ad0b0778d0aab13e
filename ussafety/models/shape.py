"""A model's shapes without its weights: built on the meta device, counted exactly.

Why: a memory or time estimate needs the parameter count, every Linear layer's shape
(LoRA's size, EWC's importance, the FLOPs) and the attention geometry (the KV cache),
and a 7B model's weights are 13 GiB that a CPU machine may not have. Under
``torch.device("meta")`` ``AutoModelForCausalLM.from_config`` gives every tensor a shape
and no storage, so a 7B model costs a second and no memory, and the counts are the real
model's (a tied head counted once, PEFT's target rule applied to the real module names).

The configs of the models the presets name are written out in :data:`KNOWN_SHAPES`, so
nothing is downloaded; a local folder with a ``config.json`` works too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_COLUMNS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "tie_word_embeddings",
)


def _config(*values: Any, **extra: Any) -> dict[str, Any]:
    """A config dict from one row of :data:`_COLUMNS` (plus the fields only some models set):
    the architectures below read as a table, one model a line."""
    return dict(zip(_COLUMNS, values, strict=True), **extra)


# columns: type, hidden, intermediate, layers, heads, KV heads, vocab, max positions, tied head
_LLAMA2_7B = _config("llama", 4096, 11008, 32, 32, 32, 32000, 4096, False)
_LLAMA2_13B = _config("llama", 5120, 13824, 40, 40, 40, 32000, 4096, False)
_MISTRAL_7B_V02 = _config("mistral", 4096, 14336, 32, 32, 8, 32000, 32768, False, sliding_window=None, rope_theta=1e6)
_GEMMA_2B = _config("gemma", 2048, 16384, 18, 8, 1, 256000, 8192, True, head_dim=256)
_LLAMA_GUARD_3_8B = _config("llama", 4096, 14336, 32, 32, 8, 128256, 131072, False, rope_theta=500000.0)
_SMOLLM2_135M = _config("llama", 576, 1536, 30, 9, 3, 49152, 8192, True, rope_theta=100000.0)
TINY_RANDOM_CONFIG = _config("llama", 32, 64, 2, 4, 2, 259, 512, True)
"""The tests' 2-layer Llama: :func:`ussafety.models.loading.tiny_random_model` builds its
model from these fields (259 = 3 special tokens + 256 byte tokens of its tokenizer)."""

KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    # The paper preset's chat models (params/study/paper.yaml) and their bases.
    "meta-llama/Llama-2-7b-chat-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": _MISTRAL_7B_V02,
    "google/gemma-2b-it": _GEMMA_2B,
    "google/gemma-2b": _GEMMA_2B,
    # LLM judges (params/presets/paper.yaml judges: llama_guard).
    "meta-llama/Llama-Guard-3-8B": _LLAMA_GUARD_3_8B,
    "cais/HarmBench-Llama-2-13b-cls": _LLAMA2_13B,
    # The CPU presets' model (the embedded GGUF's header: 576/1536/30/9/3/49152) and the
    # tests' 2-layer model.
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
    "embedded": _SMOLLM2_135M,
    "tiny-random": TINY_RANDOM_CONFIG,
}
"""Architecture of the models the presets name (values from each model's published
``config.json``), so that no hub download is needed. ``tiny-random`` is the model
:func:`ussafety.models.loading.tiny_random_model` builds (a test compares their counts)."""


def model_config(model: Any) -> Any:
    """A ``transformers`` config for ``model``: a config (returned as is), a dict of config
    fields with ``model_type``, a name from :data:`KNOWN_SHAPES`, or a local folder with a
    ``config.json`` (read offline)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, PretrainedConfig):
        return model
    if isinstance(model, Mapping):
        fields = dict(model)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    name = str(model)
    if name in KNOWN_SHAPES:
        return model_config(KNOWN_SHAPES[name])
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    raise ValueError(
        f"unknown model '{name}': not one of the known shapes "
        f"({', '.join(sorted(KNOWN_SHAPES))}) and not a folder with a config.json; "
        "pass a local model folder or a transformers config"
    )


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from a model, counted on its meta-device instance."""

    name: str
    model_type: str
    n_params: int  # unique parameters (a tied head counted once)
    linear_shapes: dict[str, tuple[int, int]]  # every nn.Linear but the head: (out, in)
    head_params: int  # the output projection's in x out (tied or not)
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int

    @property
    def body_macs(self) -> int:
        """Multiply-accumulates per token through every Linear layer but the head."""
        return sum(o * i for o, i in self.linear_shapes.values())

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def adapted(self, targets: Iterable[str]) -> dict[str, tuple[int, int]]:
        """The Linear layers a LoRA with ``target_modules=targets`` adapts (PEFT's rule
        for a list: the module's name is the target or ends with ``.<target>``)."""
        targets = list(targets)
        if not targets:
            raise ValueError("LoRA target_modules is empty")
        out = {n: s for n, s in self.linear_shapes.items() if any(n == t or n.endswith("." + t) for t in targets)}
        if not out:
            kinds = sorted({n.rsplit(".", 1)[-1] for n in self.linear_shapes})
            raise ValueError(
                f"LoRA targets {targets} match no Linear layer of {self.name} (it has: {', '.join(kinds)})"
            )
        return out

    def lora_params(self, r: int, targets: Iterable[str]) -> int:
        """Exact LoRA parameter count: ``r x (in + out)`` per adapted layer (A and B)."""
        if r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {r}")
        return sum(r * (i + o) for o, i in self.adapted(targets).values())

    def adapted_weight_params(self, targets: Iterable[str]) -> int:
        """Entries of the base weights LoRA adapts (what EWC/MAS keep an importance for)."""
        return sum(o * i for o, i in self.adapted(targets).values())


def model_shape(model: Any) -> ModelShape:
    """:class:`ModelShape` of ``model`` (anything :func:`model_config` takes), counted on
    the meta device; cached by name, since a grid asks for the same three models thousands
    of times."""
    if isinstance(model, (str, Path)):
        return _shape_cached(str(model))
    return _shape_of(model, name=getattr(model, "_name_or_path", "") or "config")


@functools.lru_cache(maxsize=64)
def _shape_cached(name: str) -> ModelShape:
    return _shape_of(name, name=name)


def _shape_of(model: Any, name: str) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model_config(model)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(cfg)
    head = net.get_output_embeddings()
    linears = {
        n: (m.out_features, m.in_features)
        for n, m in net.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    }
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        name=name,
        model_type=text.model_type,
        n_params=sum(p.numel() for p in net.parameters()),
        linear_shapes=linears,
        head_params=head.in_features * head.out_features,
        n_layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        n_heads=heads,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=head.out_features,
    )
