"""Continual-learning methods and safety baselines, one file each, registered by name.

Method ``x`` lives in ``methods/x.py`` (:func:`~ussafety.methods.base.register` enforces
it), so :func:`method_names` lists the methods from the file names and
:func:`method_class` imports only the one module asked for. Why: validating a params file
must not import every method, and none of them imports torch at the top (see
:mod:`ussafety.methods.base`), so a config is checked in well under a second.
"""

from __future__ import annotations

import importlib
import pkgutil

from ussafety.methods.base import REGISTRY, Method, TrainContext, make_method, register, trains_like_sft

HELPERS = frozenset({"base", "buffer", "costs", "merge_ops"})
"""Modules of this package that register no method (shared code and the GPU cost table)."""


def method_names() -> list[str]:
    """The public method names (``_`` names are test helpers), read from the module names
    without importing any method, plus any registered from elsewhere."""
    files = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in HELPERS}
    return sorted(n for n in files | set(REGISTRY) if not n.startswith("_"))


def method_class(name: str, role: str = "method") -> type[Method]:
    """The class registered as ``name``, importing its module (and only that) if needed.

    Raises ``ValueError`` naming the known methods when there is none; ``role`` ("method"
    or "merge") is how the message refers to it.
    """
    if name not in REGISTRY and not name.startswith("_") and name in method_names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in REGISTRY:
        raise ValueError(f"unknown {role} {name!r} (known: {', '.join(method_names())})")
    return REGISTRY[name]


def load_all() -> None:
    """Import every method module so its ``@register`` runs (for code that lists them all)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def family_of(name: str) -> str:
    """The family of method ``name`` (``baseline``, ``regularization``, ``replay``, ``merging``),
    as its class declares it; ``other`` for a name no method registers (a record made by a
    method since removed still gets a row instead of a KeyError)."""
    try:
        return method_class(name).family
    except ValueError:
        return "other"


__all__ = [
    "HELPERS",
    "REGISTRY",
    "Method",
    "TrainContext",
    "family_of",
    "load_all",
    "make_method",
    "method_class",
    "method_names",
    "register",
    "trains_like_sft",
]
