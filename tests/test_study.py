"""The study grids as data: expansion, reuse of finished runs' ids, cost estimate."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_fixtures import config, record

from ussafety.config import ConfigError, load_config
from ussafety.config.identity import config_hash_of, run_id
from ussafety.records.store import save_record
from ussafety.study import grid as study

PARAMS = Path(__file__).resolve().parent.parent / "params"


def test_smoke_study_expands_every_grid_small_and_deterministic() -> None:
    runs = study.expand("smoke")
    assert {r.grid for r in runs} == set(study.GRIDS)
    assert len(study.unique_runs(runs)) <= 12  # seconds each on the tiny model
    assert [r.run_id for r in runs] == [r.run_id for r in study.expand("smoke")]
    by_id = {r.run_id: r for r in runs}
    assert "sft_p0.25_s1" in {r.cfg.name for r in runs}
    # The same config under the same name is the same run in two grids (reused, not rerun).
    shared = [r for r in runs if r.cfg.name == "sft_p0.25_s0"]
    assert {r.grid for r in shared} == {"poisoned", "ablations"} and len({r.run_id for r in shared}) == 1
    lam = [r for r in runs if r.sweep == "ewc_lambda"]
    assert sorted(r.cfg.method.params["lam"] for r in lam) == [1.0, 1000.0]  # the default is filled in
    assert by_id[lam[0].run_id].cfg.task.poison_ratio == 0.25


def test_cpu_grid_resolves_to_the_params_files_run_ids() -> None:
    """Where the cpu study and a params file mean the same config, they have the same run id,
    so a grid reuses every run finished with `ussafety run FILE`."""
    from ussafety.methods import REGISTRY, load_all

    load_all()
    files = sorted((PARAMS / "foundation").glob("*.yaml")) + sorted(
        (PARAMS / "methods" / "poisoned_sst2").glob("*.yaml")
    )
    s = study.load_study("cpu")
    referenced = {(s.path.parent / e["params"]).resolve() for g in s.grids.values() for e in g if "params" in e}
    missing = [p for p in referenced if not p.is_file()]
    if missing:
        pytest.skip(f"params files not written yet: {missing}")
    by_hash: dict[str, set[str]] = {}
    for f in files:
        cfg = load_config(f)
        by_hash.setdefault(config_hash_of(cfg), set()).add(run_id(cfg))
    runs = study.expand("cpu")
    for r in runs:
        if config_hash_of(r.cfg) in by_hash:
            assert r.run_id in by_hash[config_hash_of(r.cfg)], r.run_id
    for e in [e for g in s.grids.values() for e in g if "params" in e and not e.get("set") and not e.get("vary")]:
        path = (s.path.parent / e["params"]).resolve()
        assert run_id(load_config(path)) in {r.run_id for r in runs}
    assert len(study.unique_runs(runs)) <= 12  # within an hour on 2 cores (README's main job)
    assert {"sft", "ewc", "der"} <= {r.cfg.method.name for r in runs} <= set(REGISTRY)
    assert {r.cfg.model.name for r in runs} == {"embedded"}


def test_cpu_full_lays_its_preset_over_the_method_files() -> None:
    s = study.load_study("cpu-full")
    if any(not (s.path.parent / e["params"]).is_file() for g in s.grids.values() for e in g if "params" in e):
        pytest.skip("params/methods files not written yet")
    runs = study.expand("cpu-full")
    full = load_config(PARAMS / "presets" / "cpu-full.yaml")
    assert all((r.cfg.eval.split, r.cfg.eval.max_new_tokens) == ("test", 128) for r in runs)
    assert full.eval.split == "test" and load_config(PARAMS / "presets" / "cpu.yaml").eval.split == "sample"
    ewc = next(r for r in runs if r.cfg.name == "ewc_s0")
    assert ewc.cfg.method.params == load_config(PARAMS / "methods" / "poisoned_sst2" / "ewc.yaml").method.params
    assert {r.cfg.seed for r in runs if r.grid == "poisoned"} == {0, 1, 2}


def test_paper_grid_covers_models_tasks_ratios_methods_and_seeds() -> None:
    from ussafety.methods import REGISTRY, load_all

    load_all()
    runs = study.expand("paper")
    tuned = [r for r in runs if r.cfg.task.name]
    assert {r.cfg.model.name for r in runs} == {
        "meta-llama/Llama-2-7b-chat-hf",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "google/gemma-2b-it",
    }
    assert {r.cfg.task.name for r in tuned} == {"gsm8k", "sst2", "code"}
    assert {0.05, 0.1, 0.2} <= {r.cfg.task.poison_ratio for r in tuned}
    public = {name for name in REGISTRY if not name.startswith("_")}  # "_" names are test-only methods
    written = {study.as_written(r.cfg.to_dict())["method"]["name"] for r in tuned}
    assert written == public
    assert {r.cfg.seed for r in tuned} == {0, 1, 2}
    assert {r.cfg.model.backend for r in runs} == {"auto"}  # Unsloth where installed, PEFT for EWC/MAS
    assert {r.sweep for r in runs if r.grid == "ablations"} == set(study.load_study("paper").sweeps)
    assert len({r.run_id for r in runs}) == len({config_hash_of(r.cfg) for r in runs})  # no config twice
    from ussafety.study.conditions import base_key

    bases = {base_key(r.cfg.to_dict()) for r in runs if not r.cfg.task.name}
    assert all(base_key(r.cfg.to_dict()) in bases for r in tuned)  # every run has its base measured


def test_entries_are_checked(tmp_path: Path) -> None:
    preset = PARAMS / "presets" / "smoke.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"preset: {preset}\ngrids:\n  benign:\n    - set: {{seed: 1}}\n")
    with pytest.raises(ConfigError, match="name"):
        study.expand(bad)
    bad.write_text(f"preset: {preset}\ngrids:\n  benign:\n    - {{name: x, colour: red}}\n")
    with pytest.raises(ConfigError, match="colour"):
        study.load_study(bad)
    bad.write_text(f"preset: {preset}\ngrids:\n  benign:\n    - {{name: x, sweep: nope}}\n")
    with pytest.raises(ConfigError, match="sweep"):
        study.load_study(bad)
    assert (
        study.render_name(
            "{model.name}-p{task.poison_ratio}-{x.y}",
            {"model": {"name": "org/M 7b"}, "task": {"poison_ratio": 0.1}, "x": {}},
        )
        == "M-7b-p0.1-none"
    )


def test_cost_estimate_from_records_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USSAFETY_CACHE", str(tmp_path / "cache"))  # no aligned base, no trained SFT
    root = tmp_path / "runs"
    # A finished SFT run: 16 rows x 1 epoch in 32 s (2 s per row-epoch); 12 harmful prompts in
    # 6 s, 6 XSTest prompts in 3 s, 6 task items in 12 s.
    # Its aligned base took 5 s to build and is not in the (empty) test cache any more.
    from ussafety.config import align_key
    from ussafety.study.cost import cost_summary, estimate_cost

    done_cfg = config("sft_done", task={"poison_ratio": 0.25})
    done = record(
        done_cfg,
        [1] * 12,
        [0] * 6,
        [1] * 6,
        timings={"harmful_s": 6.0, "xstest_s": 3.0, "task_s": 12.0, "total_s": 60.0},
        train={"wall_s": 32.0, "rows": 16},
        alignment={"aligned": True, "key": align_key(done_cfg), "train_wall_s": 5.0},
    )
    save_record(done, root)
    todo = [
        study.StudyRun(done_cfg, "poisoned"),
        study.StudyRun(config("sft_big", task={"poison_ratio": 0.25, "n_train": 32}), "ablations"),
        study.StudyRun(
            config("merged", task={"poison_ratio": 0.25, "n_train": 32}, method={"name": "merge_linear"}), "merging"
        ),
        study.StudyRun(config("other", 1, task={"poison_ratio": 0.25}, model={"name": "org/other"}), "poisoned"),
    ]
    df = estimate_cost(todo, root=root).set_index("run_id")
    assert df.loc[run_id(done_cfg), "status"] == "finished" and df.loc[run_id(done_cfg), "est_s"] == 0
    assert df.loc[run_id(done_cfg), "recorded_s"] == 60.0
    big = df.loc[todo[1].run_id]
    assert big.align_s == 5.0 and big.train_s == pytest.approx(64.0) and big.eval_s == pytest.approx(21.0)
    merged = df.loc[todo[2].run_id]  # base built and plain training of the same data planned before
    assert merged.align_s == 0 and merged.train_s == 0  # it reuses that plain training
    assert merged.eval_s == pytest.approx(21.0)
    assert df.loc[todo[3].run_id].isna().est_s  # no record of that model: unknown, not guessed
    summary = cost_summary(estimate_cost(todo, root=root))
    assert summary["finished"] == 1 and summary["to_run"] == 3 and summary["unknown_cost"] == 1
    assert summary["est_minutes"] == pytest.approx(round((90 + 21) / 60, 1)) and "note" in summary
