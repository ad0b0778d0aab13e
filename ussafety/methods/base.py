"""The one small interface every continual-learning method implements.

A method is a dataclass: its fields are its hyper-parameters (what a params YAML
sets under ``method.params``); what it computes in :meth:`Method.prepare` lives in
plain attributes. It overrides only the hooks it needs; the trainer calls them at the
moment their names say. A method never opens files or writes results: everything it
needs (tokenizer, safety data, the reference model) comes through :class:`TrainContext`.

Method modules import torch and :mod:`ussafety.models` inside the functions that use them,
never at the top: the config validates a method's parameters by importing its module, and
a bad params file must be refused in well under a second, before torch (~1.5 s) loads.
``tests/test_cli.py`` holds every method module to that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ussafety.data.types import Example

if TYPE_CHECKING:  # torch is imported where a hook runs, so a config names a method without it
    import torch

    from ussafety.models.losses import ResponseOutputs

REGISTRY: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: ``@register("ewc")`` makes ``method: ewc`` pick the class.

    Names that start with ``_`` are private (tests register such helper methods); study grids
    and reports list only the public ones. A method of this package lives in the module of
    its name (``methods/ewc.py``), so that validating ``method: ewc`` imports only that file
    (:func:`ussafety.methods.method_class`).
    """

    def wrap(cls: type[Method]) -> type[Method]:
        if name in REGISTRY:
            raise ValueError(f"method '{name}' registered twice")
        package, _, module = cls.__module__.rpartition(".")
        if package == __name__.rpartition(".")[0] and module != name:
            raise ValueError(f"method '{name}' is registered in {cls.__module__}: it belongs in methods/{name}.py")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def param_fields(cls: type[Method]) -> tuple[dataclasses.Field[Any], ...]:
    """The hyper-parameters of a method class: the fields of its dataclass."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"method class {cls.__name__} must be a dataclass (its fields are its parameters)")
    return dataclasses.fields(cls)


def make_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Build a registered method from its YAML parameters (unknown keys are errors)."""
    from ussafety.methods import method_class

    cls = method_class(name)
    known = {f.name for f in param_fields(cls)}
    unknown = set(params or {}) - known
    if unknown:
        raise ValueError(f"method '{name}': unknown parameter(s) {sorted(unknown)} (known: {sorted(known)})")
    return cls(**(params or {}))


@dataclass
class TrainContext:
    """What the trainer hands a method.

    ``safety_data``: safety examples (harmful prompt -> refusal) the method may use as
    memory (Fisher/MAS importance, replay buffer, A-GEM reference).
    ``user_data``: the customer's training rows. ``step``/``total_steps`` are kept
    current by the trainer; ``batch`` is the batch the trainer's forward pass of the
    current step ran on (the user batch, unless a method's ``step_batch`` replaced it;
    the last micro-batch under gradient accumulation), and ``outputs`` that forward's
    response hidden states, logits and targets (with their graph; ``None`` outside a
    step), so a method that needs the current model's outputs on ``batch`` (LwF) uses
    them instead of running the model again. ``rng`` is seeded from the run's seed.
    """

    tokenizer: Any
    max_length: int
    batch_size: int
    safety_data: list[Example] = field(default_factory=list)
    user_data: list[Example] = field(default_factory=list)
    aligned_dir: str | None = None
    instruct_dir: str | None = None
    seed: int = 0
    step: int = 0
    total_steps: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    batch: dict[str, torch.Tensor] | None = None
    outputs: ResponseOutputs | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    def encode(self, examples: list[Example], device: torch.device | str) -> dict[str, torch.Tensor]:
        """Pad a list of training examples into one batch (response-only labels)."""
        from ussafety.models.chat import encode_batch

        return encode_batch(self.tokenizer, examples, self.max_length, device)

    def safety_batch(self, device: torch.device | str, size: int | None = None) -> dict[str, torch.Tensor]:
        """A random batch of safety examples (seeded through ``rng``)."""
        if not self.safety_data:
            raise ValueError("this method needs safety data, and the context has none")
        k = min(size or self.batch_size, len(self.safety_data))
        return self.encode(self.rng.sample(self.safety_data, k), device)


@contextlib.contextmanager
def adapters_disabled(model: Any) -> Iterator[Any]:
    """The aligned reference model: with LoRA, the same model with adapters switched off.

    That is why DER/LwF targets can be recomputed on the fly instead of stored.
    """
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        raise ValueError("reference outputs need a LoRA (PEFT) model whose base is the aligned model")


def lora_parameters(model: Any) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by name (the LoRA A/B matrices under PEFT)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


TRAINING_HOOKS = ("prepare", "extra_data", "step_batch", "loss", "after_backward", "after_step")


def trains_like_sft(method: Method | type[Method]) -> bool:
    """True when ``method`` (an instance or its class) changes nothing during training
    (merges, Safe LoRA): only its ``finalize`` acts, on the trained weights, so plain SFT
    training can be reused."""
    cls = method if isinstance(method, type) else type(method)
    return all(getattr(cls, h) is getattr(Method, h) for h in TRAINING_HOOKS)


class Method:
    """Base class: plain SFT behaviour for every hook. Subclasses are dataclasses."""

    name: ClassVar[str] = "base"
    family: ClassVar[str] = "baseline"
    """The family a study groups the method in (baseline, regularization, replay, merging);
    declared once, in the method's own file, and read through :func:`ussafety.methods.family_of`."""
    version: ClassVar[int] = 1
    """Behaviour version: bump it when a change to the method changes its results, so its
    runs get new ids and `ussafety runs check` lists the records made by the old code."""

    def prepare(self, model: Any, ctx: TrainContext) -> None:
        """Before training: compute what the method keeps (importances, buffers...)."""

    def extra_data(self, ctx: TrainContext) -> list[Example]:
        """Rows mixed into the user data before training (SafeInstr)."""
        return []

    def step_batch(self, batch: dict[str, torch.Tensor], ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Before each (micro-)batch's forward pass: the batch to train on instead (Lisa's
        alignment steps swap in a safety batch, so the user batch is not run for nothing);
        default: the user batch. The task loss is then the loss on the returned batch."""
        return batch

    def loss(
        self, model: Any, batch: dict[str, torch.Tensor], task_loss: torch.Tensor, ctx: TrainContext
    ) -> torch.Tensor:
        """The training objective; default: the task loss alone."""
        return task_loss

    def after_backward(self, model: Any, ctx: TrainContext) -> None:
        """After the gradients of a step are accumulated, before the optimizer (A-GEM)."""

    def after_step(self, model: Any, ctx: TrainContext) -> None:
        """After the optimizer step (Refresh Learning, Lisa's switch, EMA)."""

    def finalize(self, model: Any, ctx: TrainContext) -> Any:
        """After training, on the weights (SafeLoRA, merges). Returns the model."""
        return model
