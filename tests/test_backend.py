"""Backend choice: every branch of choose_backend, detect() without importing unsloth, and the
loader taking its backend from that one choice (EWC/MAS never get Unsloth)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from ussafety.models import backend
from ussafety.models.backend import (
    BackendError,
    Environment,
    choose_backend,
    detect,
    method_needs_base_weight_grads,
    resolve_backend,
)


@pytest.mark.parametrize(
    "cuda,unsloth,expected",
    [
        (True, True, "unsloth"),
        (True, False, "peft"),
        (False, True, "peft"),
        (False, False, "peft"),
    ],
)
def test_auto_picks_unsloth_only_with_cuda_and_the_package(cuda, unsloth, expected):
    assert choose_backend("auto", cuda=cuda, unsloth_importable=unsloth) == expected


def test_auto_falls_back_to_peft_for_methods_that_need_base_weight_grads():
    assert choose_backend("auto", cuda=True, unsloth_importable=True, needs_base_weight_grads=True) == "peft"


@pytest.mark.parametrize("cuda", [True, False])
@pytest.mark.parametrize("unsloth", [True, False])
@pytest.mark.parametrize("needs_grads", [True, False])
def test_peft_is_always_peft(cuda, unsloth, needs_grads):
    assert choose_backend("peft", cuda=cuda, unsloth_importable=unsloth, needs_base_weight_grads=needs_grads) == "peft"


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
    callers = {
        name
        for name, cls in REGISTRY.items()
        if "weight_importance(" in inspect.getsource(sys.modules[cls.__module__])
        and cls.__module__.rsplit(".", 1)[-1] == name
    }
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
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "unsloth" else real(name, *a))
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


# --------------------------------------------------------------------------- the loader's choice

GPU_WITH_UNSLOTH = Environment(cuda=True, unsloth_importable=True, vllm_importable=False, device_name="H200")


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny random model saved as a local folder (what load_model reads for a hub id)."""
    from ussafety.models.loading import tiny_random_model

    tiny = tiny_random_model()
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.fixture
def fake_unsloth(monkeypatch):
    """A stand-in ``unsloth`` module whose loader records that it was asked, so the test
    sees which backend load_model chose on a (pretended) GPU machine with Unsloth."""
    import types

    calls = []

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(source, **kw):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            calls.append(source)
            return AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    monkeypatch.setattr(backend, "detect", lambda: GPU_WITH_UNSLOTH)
    return calls


def test_load_model_gives_unsloth_to_sft_and_peft_to_ewc_and_mas_under_auto(tiny_folder, fake_unsloth):
    from ussafety.config import ModelConfig
    from ussafety.models.loading import load_model

    cfg = ModelConfig(name=tiny_folder, backend="auto", dtype="float32")
    assert load_model(cfg).backend == "unsloth"  # no method: trains like SFT
    assert load_model(cfg, method="sft").backend == "unsloth"
    assert len(fake_unsloth) == 2
    for method in ("ewc", "mas"):
        assert load_model(cfg, method=method).backend == "peft"
    assert len(fake_unsloth) == 2


def test_load_model_refuses_explicit_unsloth_for_ewc_before_loading(tiny_folder, fake_unsloth):
    from ussafety.config import ModelConfig
    from ussafety.models.loading import load_model

    cfg = ModelConfig(name=tiny_folder, backend="unsloth", dtype="float32")
    with pytest.raises(BackendError, match="base weights"):
        load_model(cfg, method="ewc")
    assert fake_unsloth == []  # refused before any weights were read


def test_load_model_without_cuda_keeps_peft_and_refuses_unsloth(tiny_folder, monkeypatch):
    from ussafety.config import ModelConfig
    from ussafety.models.loading import load_model

    monkeypatch.setattr(backend, "detect", lambda: Environment(False, False, False))
    assert load_model(ModelConfig(name=tiny_folder, backend="auto", dtype="float32")).backend == "peft"
    with pytest.raises(BackendError, match="needs a CUDA GPU"):
        load_model(ModelConfig(name=tiny_folder, backend="unsloth", dtype="float32"))


def test_the_paper_preset_runs_ewc_and_mas_under_auto():
    """params/presets/paper.yaml must not ask for a backend EWC/MAS cannot use."""
    from pathlib import Path

    from ussafety.config import load_config

    preset = Path(__file__).resolve().parents[1] / "params" / "presets" / "paper.yaml"
    requested = load_config(preset).model.backend
    for method in ("ewc", "mas", "sft"):
        choose_backend(
            requested,
            cuda=True,
            unsloth_importable=True,
            needs_base_weight_grads=method_needs_base_weight_grads(method),
        )
