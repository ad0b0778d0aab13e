"""Backend choice: every branch of choose_backend, and detect() without importing unsloth."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from ussafety import backend
from ussafety.backend import (
    BackendError,
    Environment,
    choose_backend,
    detect,
    method_needs_base_weight_grads,
    resolve_backend,
)


@pytest.mark.parametrize("cuda,unsloth,expected", [
    (True, True, "unsloth"),
    (True, False, "peft"),
    (False, True, "peft"),
    (False, False, "peft"),
])
def test_auto_picks_unsloth_only_with_cuda_and_the_package(cuda, unsloth, expected):
    assert choose_backend("auto", cuda=cuda, unsloth_importable=unsloth) == expected


def test_auto_falls_back_to_peft_for_methods_that_need_base_weight_grads():
    assert choose_backend("auto", cuda=True, unsloth_importable=True,
                          needs_base_weight_grads=True) == "peft"


@pytest.mark.parametrize("cuda", [True, False])
@pytest.mark.parametrize("unsloth", [True, False])
@pytest.mark.parametrize("needs_grads", [True, False])
def test_peft_is_always_peft(cuda, unsloth, needs_grads):
    assert choose_backend("peft", cuda=cuda, unsloth_importable=unsloth,
                          needs_base_weight_grads=needs_grads) == "peft"


def test_unsloth_with_cuda_and_package():
    assert choose_backend("unsloth", cuda=True, unsloth_importable=True) == "unsloth"


@pytest.mark.parametrize("unsloth", [True, False])
def test_unsloth_without_cuda_says_to_use_peft(unsloth):
    with pytest.raises(BackendError, match="needs a CUDA GPU.*peft"):
        choose_backend("unsloth", cuda=False, unsloth_importable=unsloth)


def test_unsloth_not_installed_says_what_to_install():
    with pytest.raises(BackendError, match="pip install unsloth unsloth_zoo"):
        choose_backend("unsloth", cuda=True, unsloth_importable=False)


def test_unsloth_refused_for_methods_that_need_base_weight_grads():
    with pytest.raises(BackendError, match="base weights.*peft"):
        choose_backend("unsloth", cuda=True, unsloth_importable=True, needs_base_weight_grads=True)


@pytest.mark.parametrize("name", ["", "Unsloth", "hf", "vllm"])
def test_unknown_backend(name):
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend(name, cuda=True, unsloth_importable=True)


def test_methods_that_need_base_weight_grads():
    assert method_needs_base_weight_grads("ewc") and method_needs_base_weight_grads("mas")
    assert not any(method_needs_base_weight_grads(m) for m in ("sft", "der", "l2", "lwf", None))


def test_ewc_and_mas_really_backpropagate_into_base_weights():
    """The set above names the methods that call weight_importance (the code that needs
    base-weight gradients); a new caller must be added to it."""
    import inspect

    from ussafety.methods import REGISTRY, load_all

    load_all()
    callers = {name for name, cls in REGISTRY.items()
               if "weight_importance(" in inspect.getsource(sys.modules[cls.__module__])
               and cls.__module__.rsplit(".", 1)[-1] == name}
    assert callers == set(backend.NEEDS_BASE_WEIGHT_GRADS)


def test_detect_reports_this_machine_without_importing_unsloth(monkeypatch):
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    env = detect()
    import torch

    assert env.cuda == torch.cuda.is_available()
    assert env.unsloth_importable == (importlib.util.find_spec("unsloth") is not None)
    assert env.vllm_importable == (importlib.util.find_spec("vllm") is not None)
    assert "unsloth" not in sys.modules
    assert (env.device_name is None) == (not env.cuda)


def test_detect_sees_a_package_that_find_spec_finds(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "unsloth" else real(name, *a))
    assert detect().unsloth_importable is True


def test_importable_survives_a_broken_package(monkeypatch):
    def broken(name, *a):
        raise ValueError("unsloth.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert backend.importable("unsloth") is False


def test_resolve_backend_uses_the_given_environment():
    gpu = Environment(cuda=True, unsloth_importable=True, vllm_importable=False, device_name="H200")
    assert resolve_backend("auto", env=gpu) == "unsloth"
    assert resolve_backend("auto", env=gpu, needs_base_weight_grads=True) == "peft"
    cpu = Environment(cuda=False, unsloth_importable=False, vllm_importable=False)
    assert resolve_backend("auto", env=cpu) == "peft"
    with pytest.raises(BackendError):
        resolve_backend("unsloth", env=cpu)


def test_resolve_backend_detects_when_no_environment_is_given(monkeypatch):
    monkeypatch.setattr(backend, "detect", lambda: Environment(True, True, False))
    assert resolve_backend("auto") == "unsloth"
