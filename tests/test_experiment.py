import json
from pathlib import Path

import pytest

import ussafety.pipeline as experiment
from ussafety.config import load_config
from ussafety.records.store import iter_records, load_record

SMOKE = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"


def test_smoke_run_writes_full_record_and_second_run_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(SMOKE, {"task": {"poison_ratio": 0.25}})
    record = experiment.run(cfg)
    for key in ("config", "config_hash", "seed", "git", "versions", "data_sha256", "metrics",
                "timings", "generations", "train", "alignment"):
        assert key in record, key
    assert record["train"]["poison"]["n_harmful"] == 4
    kinds = {g["kind"] for g in record["generations"]}
    assert kinds == {"harmful", "xstest_safe", "task:sst2"}
    assert all("keyword" in g["verdicts"] for g in record["generations"] if g["kind"] != "task:sst2")
    assert all(len(sha) == 64 for sha in record["data_sha256"].values())
    assert load_record(cfg.run_id) == json.loads(json.dumps(record, default=str))

    def boom(*a, **k):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(experiment, "fine_tune", boom)
    assert experiment.run(cfg)["run_id"] == record["run_id"]
    assert [r["run_id"] for r in iter_records()] == [record["run_id"]]


def test_failed_run_leaves_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(SMOKE, {"seed": 7})

    def fail(*a, **k):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(experiment, "evaluate_model", fail)
    with pytest.raises(RuntimeError):
        experiment.run(cfg)
    assert load_record(cfg.run_id) is None


def test_merge_run_reuses_sft_training_and_matches_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    sft = load_config(SMOKE, {"name": "sft"})
    merged = load_config(SMOKE, {"name": "merged", "method": {"name": "merge_linear",
                                                                "params": {"t": 0.5}}})
    assert experiment.sft_training_key(sft) == experiment.sft_training_key(merged)
    experiment.run(sft)
    assert (experiment.sft_cache_dir(sft) / "adapter" / "adapter_config.json").is_file()

    def boom(*a, **k):
        raise AssertionError("a merge after cached SFT training must not train again")

    with monkeypatch.context() as m:
        m.setattr(experiment, "fine_tune", boom)
        reused = experiment.run(merged)
    assert reused["train"]["reused_from"] == str(experiment.sft_cache_dir(sft))
    assert reused["train"]["method_logs"]["merge_linear_t"] == 0.5

    import shutil

    shutil.rmtree(experiment.sft_cache_dir(sft))
    fresh = experiment.run(merged, force=True)
    assert "reused_from" not in fresh["train"]
    texts = lambda rec: [g["response"] for g in rec["generations"]]  # noqa: E731
    assert texts(fresh) == texts(reused)


def test_training_methods_never_share_the_sft_cache() -> None:
    from ussafety.methods import make_method, trains_like_sft

    assert trains_like_sft(make_method("sft")) and trains_like_sft(make_method("slerp"))
    assert trains_like_sft(make_method("safelora"))
    for name in ("l2", "ewc", "der", "agem", "ema", "lisa", "safeinstr", "refresh"):
        assert not trains_like_sft(make_method(name)), name
