"""Which LoRA backend a run uses: PEFT (everywhere) or Unsloth (CUDA only).

The decision is a pure function of what was asked for and what the machine has
(:func:`choose_backend`), so every branch is tested on a CPU machine; :func:`detect`
is the only part that looks at the environment. It is the one rule: the loader
(``ussafety.models.loading.load_model``, given the run's method) and the GPU estimate
(``ussafety.study.gpu_cost``) both ask it. It finds Unsloth with
``importlib.util.find_spec`` and never imports it, because ``import unsloth`` fails
on a machine without a GPU and, on one with a GPU, patches transformers globally.

Why a method can force PEFT: Unsloth's fused LoRA kernels compute the gradients of
the LoRA factors and of the layer input only, never of the frozen base weight. EWC
and MAS estimate their importance from exactly that gradient
(``ussafety.methods.ewc.weight_importance``), so under Unsloth they would fail after
the 7B model is loaded; asking here fails (or falls back, for ``auto``) before.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

Requested = Literal["auto", "peft", "unsloth"]
BACKENDS: tuple[str, ...] = ("auto", "peft", "unsloth")

UNSLOTH_INSTALL = "pip install unsloth unsloth_zoo (wheels matching this machine's torch and CUDA; see docs/gpu.md)"


class BackendError(RuntimeError):
    """The requested backend cannot run on this machine; the message says what to do."""


def choose_backend(
    requested: str, *, cuda: bool, unsloth_importable: bool, needs_base_weight_grads: bool = False
) -> str:
    """``"peft"`` or ``"unsloth"`` for a run that asked for ``requested``.

    ``auto``: Unsloth when a CUDA GPU is visible, the package is installed and the
    method does not need base-weight gradients; PEFT otherwise (a CPU machine, or a GPU
    machine without Unsloth, still runs, only slower).
    ``peft``: always PEFT, also on a GPU (the reference path Unsloth is compared to).
    ``unsloth``: Unsloth, or a :class:`BackendError` that says what is missing: a GPU,
    the package, or a method that works with it. An explicit request is never
    silently downgraded, so a preset that says ``unsloth`` measures Unsloth.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend '{requested}' (one of: {', '.join(BACKENDS)})")
    if requested == "peft":
        return "peft"
    if requested == "auto":
        return "unsloth" if cuda and unsloth_importable and not needs_base_weight_grads else "peft"
    if not cuda:
        raise BackendError(
            "backend 'unsloth' needs a CUDA GPU and none is visible; use model.backend: peft (or auto) on this machine."
        )
    if not unsloth_importable:
        raise BackendError(
            f"backend 'unsloth' was requested but the package is not installed: "
            f"{UNSLOTH_INSTALL}; or use model.backend: peft (or auto)."
        )
    if needs_base_weight_grads:
        raise BackendError(
            "this method needs the gradient of the frozen base weights (EWC/MAS "
            "importance), which Unsloth's fused LoRA kernels do not compute; use "
            "model.backend: peft (or auto) for it."
        )
    return "unsloth"


@dataclass(frozen=True)
class Environment:
    """What :func:`choose_backend` and the estimates need to know about this machine."""

    cuda: bool
    unsloth_importable: bool
    vllm_importable: bool
    device_name: str | None = None


def importable(module: str) -> bool:
    """Whether ``module`` could be imported, without importing it (or running its code)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def detect() -> Environment:
    """This machine's CUDA visibility and installed optional packages (nothing imported)."""
    import torch

    cuda = torch.cuda.is_available()
    return Environment(
        cuda=cuda,
        unsloth_importable=importable("unsloth"),
        vllm_importable=importable("vllm"),
        device_name=torch.cuda.get_device_name(0) if cuda else None,
    )


def resolve_backend(requested: str, *, needs_base_weight_grads: bool = False, env: Environment | None = None) -> str:
    """:func:`choose_backend` for this machine (``env`` defaults to :func:`detect`)."""
    env = env or detect()
    return choose_backend(
        requested,
        cuda=env.cuda,
        unsloth_importable=env.unsloth_importable,
        needs_base_weight_grads=needs_base_weight_grads,
    )


NEEDS_BASE_WEIGHT_GRADS: frozenset[str] = frozenset({"ewc", "mas"})
"""Methods whose ``prepare`` back-propagates into the frozen base weights."""


def method_needs_base_weight_grads(method: str | None) -> bool:
    """Whether the continual-learning method ``method`` needs base-weight gradients."""
    return method in NEEDS_BASE_WEIGHT_GRADS
