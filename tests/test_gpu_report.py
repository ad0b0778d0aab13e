"""`ussafety reproduce --preset paper --estimate`: the GPU estimate of a study from the models'
shapes (meta device, no weights), which GPU it is held against, and the refusals it prints;
CPU presets keep the record-based estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ussafety.cli.main import main
from ussafety.config import from_dict
from ussafety.models import backend
from ussafety.models.costs import DEVICES, GiB, device_named
from ussafety.study import gpu_report
from ussafety.study.gpu_report import gpu_study_report, is_gpu_study, markdown, study_estimate, target
from ussafety.study.grid import expand, unique_runs

PAPER_PRESET = Path(__file__).resolve().parents[1] / "params" / "presets" / "paper.yaml"


@pytest.fixture(scope="module")
def paper_benign():
    """The paper study's benign grid (three models, every method, three tasks and seeds)."""
    return [r.cfg for r in unique_runs(expand("paper", "benign"))]


def test_the_paper_preset_on_an_h100_names_the_runs_that_do_not_fit(capsys):
    assert main(["reproduce", "--preset", "paper", "--estimate", "--only", "benign", "--device", "H100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### paper: GPU estimate (H100 80GB SXM, rates assumed until measured)")
    assert "333 runs, **" in out and "GPU-hours**" in out and "LLM judging" in out
    assert "| method | Llama-2-7b-chat-hf | Mistral-7B-Instruct-v0.2 | gemma-2b-it | runs | GPU-h |" in out
    assert "| ewc | 81.7 | 88.1 | 37.2 | 27 |" in out
    assert "**36 runs do not fit** the H100 80GB SXM (79.6 GiB)" in out
    for model in ("Llama-2-7b-chat-hf", "Mistral-7B-Instruct-v0.2"):
        for method in ("ewc", "mas"):
            assert f"- {model}, {method} (9 runs): run '" in out
    assert "needs about 81.7 GiB at its training peak" in out and "runs under PEFT" in out
    assert "gemma-2b-it, ewc" not in out  # 37 GiB: fits


def test_without_a_gpu_the_paper_study_is_held_against_an_h200(paper_benign, monkeypatch):
    monkeypatch.setattr(gpu_report, "visible_gpu_bytes", lambda: None)
    text = gpu_study_report(paper_benign, title="paper benign")
    assert "(H200, rates assumed" in text and "Every run fits the H200 (140.4 GiB; no GPU visible here" in text
    assert "cannot start" not in text


def test_a_visible_gpu_is_named_and_its_free_memory_used(monkeypatch):
    monkeypatch.setattr(gpu_report, "visible_gpu_bytes", lambda: 70 * GiB)
    monkeypatch.setattr(gpu_report, "detect", lambda: backend.Environment(True, False, False, "NVIDIA H100 80GB HBM3"))
    where = target()
    assert where.device == "H100" and where.gpu_bytes == 70 * GiB
    assert where.label == "the visible NVIDIA H100 80GB HBM3 (70.0 GiB free)"
    assert target("A100-40GB").gpu_bytes == DEVICES["A100-40GB"].memory_bytes
    with pytest.raises(ValueError, match="unknown device"):
        target("TPU")


def test_device_names_map_to_known_devices_by_whole_words():
    assert device_named("NVIDIA H200") == "H200"
    assert device_named("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert device_named("NVIDIA A100-PCIE-40GB") == "A100-40GB"
    assert device_named("NVIDIA L40S") is None and device_named(None) is None


def test_runs_the_backend_refuses_are_listed_not_estimated():
    """The preset as it was (backend: unsloth) would have failed every EWC/MAS run."""
    preset = yaml.safe_load(PAPER_PRESET.read_text())
    cfgs = []
    for method in ("sft", "ewc", "mas"):
        d = preset | {"name": f"r-{method}", "method": {**preset["method"], "name": method}}
        d["model"] = {**d["model"], "backend": "unsloth"}
        cfgs.append(from_dict(d))
    grid, refused = study_estimate(cfgs)
    assert [r.method for r in grid.runs] == ["sft"]
    assert [name for name, _ in refused] == ["r-ewc", "r-mas"]
    text = markdown(grid, target("H200"), refused)
    assert "**2 runs cannot start**" in text and "- 2 runs (e.g. `r-ewc`): " in text and "base weights" in text


def test_a_study_is_a_gpu_study_when_a_model_is_not_the_cpu_ones(paper_benign):
    assert is_gpu_study(paper_benign)
    assert not is_gpu_study(r.cfg for r in expand("smoke"))


def test_cpu_presets_keep_the_record_based_estimate(capsys, tmp_path):
    assert main(["reproduce", "--preset", "smoke", "--estimate", "--runs", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["finished"] == 0 and summary["to_run"] == summary["runs"] > 0


def test_device_asks_for_the_gpu_estimate_of_a_cpu_preset(capsys):
    assert main(["reproduce", "--preset", "smoke", "--estimate", "--device", "L4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### smoke: GPU estimate (L4, rates assumed until measured)")
    assert "| method | tiny-random | runs | GPU-h |" in out and "Every run fits the L4" in out
