"""What each continual-learning method costs on top of plain SFT, for the GPU estimates.

Why here, beside the methods: the cost follows what a method's hooks do, so whoever
changes a method sees its cost next to it, and a test fails when a registered method has
no cost. What the classes already say is read from them, never repeated: whether a method
trains like SFT (:func:`ussafety.methods.base.trains_like_sft`: only ``finalize`` acts, so
the pipeline reuses a cached SFT training) and every hyper-parameter's default (the method
is built with :func:`~ussafety.methods.base.make_method`, so ``minibatch_size`` or
``n_fisher`` is the dataclass's value unless ``params`` set it). :data:`COSTS` holds only
what the code does not declare: how a method's hooks turn its parameters into extra rows,
passes and bytes (each method's docstring has the "Memory"/"Compute" paragraph behind it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ussafety.methods.base import REGISTRY, Method, make_method, trains_like_sft
from ussafety.models.costs import MethodCost


def _l2(m: Any) -> dict[str, Any]:
    # delta_w: r x r products per layer, nothing kept; lora_params: one copy of the LoRA weights
    return {"lora_copies": 1 if m.on == "lora_params" else 0}


def _importance(batches: int, per: str) -> dict[str, Any]:
    # EWC/MAS: an fp32 importance per adapted base weight, found by back-propagating
    # `batches` batches of 8 rows into the base weights, per example or per batch.
    return {
        "importance": True,
        "prepare_full_backward_rows": 8 * batches,
        "prepare_full_backward_passes": 8 * batches if per == "example" else batches,
    }


def _der(m: Any, replay_batches: int) -> dict[str, Any]:
    store = m.targets == "store"  # logits stored once before training, or recomputed each step
    return {
        "replay_rows": m.minibatch_size * replay_batches,
        "prepare_forward_rows": m.buffer_size if store else 0,
        "nograd_forward": not store,
    }


COSTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "l2": _l2,
    "ewc": lambda m: _importance(m.n_fisher, m.per),
    "mas": lambda m: _importance(m.n_batches, m.per),
    # the reference's outputs on the user batch: a no-grad forward with the adapters off;
    # "kl" keeps the reference's fp32 response logits for the step
    "lwf": lambda m: {"nograd_forward": True, "ref_logits": m.variant == "kl"},
    "der": lambda m: _der(m, 1),
    "derpp": lambda m: _der(m, 2),  # the logit and the label replay, one draw each
    # a reference batch back-propagated per step, the gradient and its projection kept
    "agem": lambda m: {"ref_rows_per_step": m.ref_batch_size, "lora_copies": 2},
    "refresh": lambda m: {"prepare_lora_backward_rows": m.fisher_samples, "lora_copies": 1},
    "safeinstr": lambda m: {"extra_row_fraction": m.fraction},
    "lisa": lambda m: {"lora_copies": 1},  # an alignment step replaces a user step: same cost
    "ema": lambda m: {"lora_copies": 1},  # the running average of the LoRA parameters
}
"""Method name -> its extra costs (:class:`MethodCost` fields) from the built method.
Methods that train like SFT are not listed: their training costs SFT's."""


def method_cost(name: str | None, params: Mapping[str, Any] | None = None) -> MethodCost:
    """The :class:`MethodCost` of method ``name`` (``None``: SFT) with its ``params`` (the
    rest keep the method's defaults). Unknown names and parameters fail as in a config."""
    name = name or "sft"
    method: Method = make_method(name, dict(params or {}))
    if trains_like_sft(method):
        return MethodCost(name=name)
    if name not in COSTS:
        raise ValueError(
            f"no cost model for method '{name}': add it to ussafety.methods.costs.COSTS "
            f"(known: {', '.join(sorted(COSTS))}; methods that train like SFT need none)"
        )
    return MethodCost(name=name, trains_like_sft=False, **COSTS[name](method))


def uncosted_methods() -> list[str]:
    """Public registered methods that neither train like SFT nor have a :data:`COSTS` entry
    (a test keeps this empty)."""
    from ussafety.methods import load_all

    load_all()
    return sorted(
        n for n, cls in REGISTRY.items() if not n.startswith("_") and not trains_like_sft(cls) and n not in COSTS
    )
