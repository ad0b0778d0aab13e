"""benchmarks/methods.py on the tiny random model: the output's structure (not timings)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "methods.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_methods", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_methods_benchmark_writes_ratios_to_sft(tmp_path: Path, capsys) -> None:
    out = tmp_path / "methods.json"
    bench = bench_module()
    assert (
        bench.main(
            ["--model", "tiny-random", "--steps", "1", "--max-length", "64", "--methods", "lwf", "--out", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report) >= {"results", "ratios", "targets", "setup", "machine", "versions", "git", "args"}
    assert list(report["results"]) == ["sft", "lwf"]  # sft is always the reference, measured first
    for name, r in report["results"].items():
        assert r["method"] == name and len(r["step_times_s"]) == 1 and r["step_s"] > 0
        assert r["prepare_s"] >= 0 and r["finalize_s"] >= 0 and r["peak_mb"] >= r["base_mb"] > 0
        assert r["max_length"] == 64 and r["model"] == "tiny-random"
    first, last = report["results"]["sft"]["step_s"], report["sft_again"]["step_s"]
    assert math.isclose(report["ratios"]["sft"]["step_time_ratio"], 2 * first / (first + last))
    lwf = report["ratios"]["lwf"]
    assert lwf["target"] == 1.6 and isinstance(lwf["step_time_met"], bool)
    run, sft = report["results"]["lwf"], report["results"]["sft"]
    assert run["run_steps"] > 0 and lwf["amortized_ratio"] == pytest.approx(
        (run["prepare_s"] + run["run_steps"] * run["step_s"])
        / (sft["prepare_s"] + run["run_steps"] * (first + last) / 2)
    )
    assert len(report["machine"]["load_average_start"]) == 3 and report["machine"]["torch_threads"] >= 1
    assert math.isfinite(lwf["peak_memory_ratio"]) and isinstance(lwf["peak_memory_met"], bool)
    assert report["git"]["commit"] and report["versions"]["torch"]
    assert report["setup"]["safety_tokens_per_row"] > 0
    assert report["sft_again"]["method"] == "sft" and report["sft_step_drift"] > 0
    printed = capsys.readouterr().out
    assert "step x" in printed and "lwf" in printed and "<= 1.60x" in printed


def test_targets_and_ratios() -> None:
    bench = bench_module()
    base = {"step_s": 2.0, "peak_mb": 1000.0, "peak_extra_mb": 100.0}
    results = {
        "sft": base,
        "ewc": {"step_s": 2.2, "peak_mb": 1100.0, "peak_extra_mb": 200.0},
        "agem": {"step_s": 4.6, "peak_mb": 1000.0, "peak_extra_mb": 100.0},
        "slerp": {"step_s": 2.0, "peak_mb": 1000.0, "peak_extra_mb": 100.0},
    }
    ratios = bench.compare(results)
    assert ratios["ewc"]["step_time_ratio"] == 1.1 and ratios["ewc"]["step_time_met"]
    assert ratios["ewc"]["peak_memory_met"] and ratios["ewc"]["peak_extra_memory_ratio"] == 2.0
    assert ratios["agem"]["target"] == 2.2 and ratios["agem"]["step_time_met"] is False
    assert ratios["slerp"]["target"] is None and ratios["slerp"]["step_time_met"] is None
    assert ratios["ewc"]["amortized_ratio"] is None  # no prepare time or run length given
    assert bench.TARGETS == {"l2": 1.15, "ewc": 1.15, "mas": 1.15, "lwf": 1.6, "der": 1.8, "derpp": 2.0, "agem": 2.2}
    # a method that moves work into prepare: a whole run of 10 steps, over SFT's
    timed = {
        "sft": {**base, "prepare_s": 0.0, "run_steps": 10},
        "lwf": {"step_s": 2.2, "peak_mb": 1000.0, "peak_extra_mb": 100.0, "prepare_s": 10.0, "run_steps": 10},
    }
    assert bench.compare(timed)["lwf"]["amortized_ratio"] == pytest.approx((10.0 + 22.0) / 20.0)
    # a second SFT measurement: the reference is the mean of both
    again = bench.compare(results, {"step_s": 2.4, "peak_mb": 1000.0, "peak_extra_mb": 100.0})
    assert again["ewc"]["step_time_ratio"] == 1.0 and again["sft"]["step_time_ratio"] == 2.0 / 2.2
