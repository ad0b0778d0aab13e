"""Continual-learning methods and safety baselines, one file each, registered by name."""

from __future__ import annotations

import importlib
import pkgutil

from ussafety.methods.base import REGISTRY, Method, TrainContext, make_method, register, trains_like_sft

_SKIP = {"base"}


def load_all() -> None:
    """Import every method module so its ``@register`` runs."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP:
            importlib.import_module(f"{__name__}.{info.name}")


def family_of(name: str) -> str:
    """The family of method ``name`` (``baseline``, ``regularization``, ``replay``, ``merging``),
    as its class declares it; ``other`` for a name no method registers (a record made by a
    method since removed still gets a row instead of a KeyError)."""
    load_all()
    cls = REGISTRY.get(name)
    return cls.family if cls is not None else "other"


__all__ = ["REGISTRY", "Method", "TrainContext", "make_method", "register", "load_all", "trains_like_sft", "family_of"]
