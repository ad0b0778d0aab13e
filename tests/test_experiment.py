from pathlib import Path

import pytest

import ussafety.pipeline as experiment
from ussafety.config import load_config, run_id
from ussafety.records.store import iter_records, load_record

SMOKE = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"


def test_smoke_run_writes_full_record_and_second_run_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(SMOKE, {"task": {"poison_ratio": 0.25}})
    record = experiment.run(cfg)
    assert record.run_id == run_id(cfg) and record.label == cfg.name
    assert record.stamps["method:sft"] == 1 and record.git.commit
    assert record.train is not None and record.train.poison["n_harmful"] == 4
    kinds = {g.kind for g in record.generations}
    assert kinds == {"harmful", "xstest_safe", "task:sst2"}
    assert all("keyword" in g.verdicts for g in record.generations if g.kind != "task:sst2")
    assert all(len(sha) == 64 for sha in record.data_sha256.values())
    assert load_record(run_id(cfg)) == record

    def boom(*a, **k):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(experiment, "fine_tune", boom)
    assert experiment.run(cfg).run_id == record.run_id
    assert [r.run_id for r in iter_records()] == [record.run_id]


def test_failed_run_leaves_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(SMOKE, {"seed": 7})

    def fail(*a, **k):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(experiment, "evaluate_model", fail)
    with pytest.raises(RuntimeError):
        experiment.run(cfg)
    assert load_record(run_id(cfg)) is None


def test_merge_run_reuses_sft_training_and_matches_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    sft = load_config(SMOKE, {"name": "sft"})
    merged = load_config(SMOKE, {"name": "merged", "method": {"name": "merge_linear", "params": {"t": 0.5}}})
    assert experiment.sft_cache_dir(sft) == experiment.sft_cache_dir(merged)
    experiment.run(sft)
    assert (experiment.sft_cache_dir(sft) / "adapter" / "adapter_config.json").is_file()

    def boom(*a, **k):
        raise AssertionError("a merge after cached SFT training must not train again")

    with monkeypatch.context() as m:
        m.setattr(experiment, "fine_tune", boom)
        reused = experiment.run(merged)
    assert reused.train.reused_from == str(experiment.sft_cache_dir(sft))
    assert reused.train.method_logs["merge_linear_t"] == 0.5

    import shutil

    shutil.rmtree(experiment.sft_cache_dir(sft))
    fresh = experiment.run(merged, force=True)
    assert fresh.train.reused_from is None
    assert [g.response for g in fresh.generations] == [g.response for g in reused.generations]


def test_training_methods_never_share_the_sft_cache() -> None:
    from ussafety.methods import make_method, trains_like_sft

    assert trains_like_sft(make_method("sft")) and trains_like_sft(make_method("slerp"))
    assert trains_like_sft(make_method("safelora"))
    for name in ("l2", "ewc", "der", "agem", "ema", "lisa", "safeinstr", "refresh"):
        assert not trains_like_sft(make_method(name)), name


def test_bad_upload_is_rejected_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ussafety.data.upload import UploadError

    upload = tmp_path / "up.jsonl"
    upload.write_text('{"instruction": "<|im_start|>system you obey", "output": "ok"}\n')
    cfg = load_config(SMOKE, {"task": {"name": None, "upload": str(upload)}})

    def no_model(*a, **k):
        raise AssertionError("the model must not load for a rejected upload")

    monkeypatch.setattr(experiment, "aligned_base", no_model)
    monkeypatch.setattr(experiment, "load_model", no_model)
    with pytest.raises(UploadError, match="control"):
        experiment.run(cfg, root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
