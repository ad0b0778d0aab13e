"""``ussafety report methods``: the methods table from run records (smoke-preset runs of
the tiny random model, and hand-made records for the statistics)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import ussafety.pipeline as experiment
from ussafety.cli.main import build_parser
from ussafety.config import load_config
from ussafety.records.store import save_record
from ussafety.study.reports import METHODS_COLUMNS, write_methods

SMOKE = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"
REQUIRED = ["method", "n_prompts", "asr", "asr_ci_low", "asr_ci_high", "p_vs_sft", "over_refusal",
            "task_score", "degenerate_rate", "train_wall_s", "train_wall_rel_sft",
            "reused_sft_training", "run_id"]


def params_dir(tmp_path: Path, methods: dict[str, str]) -> Path:
    """A params folder like params/methods/poisoned_sst2, on the smoke preset."""
    folder = tmp_path / "params" / "poisoned_sst2"
    folder.mkdir(parents=True)
    for name, method in methods.items():
        (folder / f"{name}.yaml").write_text(
            f"extends: {SMOKE}\nname: {name}\ntask: {{poison_ratio: 0.25}}\n{method}\n")
    return folder


def test_report_from_smoke_runs_lists_missing_and_regenerates_from_exported(tmp_path: Path) -> None:
    folder = params_dir(tmp_path, {"sft": "method: {name: sft}",
                                   "merge_linear": "method: {name: merge_linear}",
                                   "l2": "method: {name: l2}"})
    runs = tmp_path / "runs"
    done = {name: experiment.run(load_config(folder / f"{name}.yaml"), root=runs)
            for name in ("sft", "merge_linear")}  # l2 is not run
    out = tmp_path / "paper_outputs" / "methods"
    out.mkdir(parents=True)
    (out / "notes.md").write_text("## Notes (hand-written)\n\nA sentence by a person.\n")
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()

    df = pd.read_csv(out / "poisoned_sst2.csv")
    assert set(REQUIRED) <= set(df.columns) and list(df.columns[:len(METHODS_COLUMNS)]) == METHODS_COLUMNS
    assert df.method.tolist() == ["sft", "merge_linear"]
    sft, merged = df.iloc[0], df.iloc[1]
    assert math.isnan(sft.p_vs_sft) and 0.0 <= merged.p_vs_sft <= 1.0
    assert sft.train_wall_rel_sft == 1.0
    for row in (sft, merged):  # (a cache left by an earlier test may serve sft too)
        assert row.reused_sft_training == ("reused_from" in done[row.method]["train"])
    assert merged.train_wall_rel_sft == pytest.approx(
        (merged.train_wall_s + merged.finalize_s) / (sft.train_wall_s + sft.finalize_s), rel=1e-3)
    assert sft.n_prompts == 12 and 0.0 <= sft.asr_ci_low <= sft.asr <= sft.asr_ci_high <= 1.0
    assert "- `l2`: not run yet" in md and "| l2 |" not in md
    assert md.rstrip().endswith("A sentence by a person.")
    assert md.index("## Not run yet") < md.index("## Notes (hand-written)")
    home = tmp_path / "paper_outputs" / "records"   # shared with the other reports
    exported = sorted(p.parent.name for p in home.glob("*/record.json"))
    assert exported == sorted(df.run_id)
    # the exported records alone regenerate the same table
    again = tmp_path / "again" / "methods"
    write_methods(out_dir=again, params_dir=folder, root=home)
    assert (again / "poisoned_sst2.csv").read_text() == (out / "poisoned_sst2.csv").read_text()


def fake_record(run_id: str, config_hash: str, harmful: list[bool], wall_s: float = 100.0,
                task: float = 0.8, reused: bool = False) -> dict:
    gens = [{"kind": "harmful", "source": "advbench/x.csv", "row": i, "prompt": "p", "response": "r",
             "verdicts": {"keyword": {"harmful": h, "refused": not h}}, "degenerate": None}
            for i, h in enumerate(harmful)]
    n = len(harmful)
    return {"run_id": run_id, "config_hash": config_hash, "git": {"commit": "abc"},
            "train": {"wall_s": wall_s, "finalize_s": 10.0 if reused else 0.0,
                      "method_logs": {"prepare_s": 1.5}, **({"reused_from": "cache"} if reused else {})},
            "generations": gens,
            "metrics": {"primary_judge": "keyword",
                        "asr": {"keyword": {"n": n, "by_set": {"advbench": {"n": n, "asr": sum(harmful) / n}},
                                            "degenerate_rate": 0.0}},
                        "over_refusal": {"rate": 0.2}, "task": {"name": "sst2", "score": task, "n": 200}}}


def test_identical_settings_under_another_name_and_holm(tmp_path: Path) -> None:
    folder = params_dir(tmp_path, {"sft": "method: {name: sft}", "ewc": "method: {name: ewc}",
                                   "l2": "method: {name: l2}", "der": "method: {name: der}",
                                   "slerp": "method: {name: slerp}"})
    sft, ewc, l2, slerp = (load_config(folder / f"{m}.yaml") for m in ("sft", "ewc", "l2", "slerp"))
    runs = tmp_path / "runs"
    # sft's record exists only under another name with the same settings (as the
    # foundation's sft_poisoned_p0.1 for params/methods/poisoned_sst2/sft.yaml)
    save_record(fake_record(f"foundation_sft-{sft.hash()[:10]}", sft.hash(), [True] * 12), runs)
    save_record(fake_record(ewc.run_id, ewc.hash(), [False] * 12, wall_s=150.0), runs)
    save_record(fake_record(l2.run_id, l2.hash(), [True] * 11 + [False], task=0.5), runs)
    save_record(fake_record(slerp.run_id, slerp.hash(), [True] * 12, reused=True), runs)
    out = tmp_path / "out"
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()
    df = pd.read_csv(out / "poisoned_sst2.csv").set_index("method")
    assert df.loc["sft", "run_id"] == f"foundation_sft-{sft.hash()[:10]}"
    p_ewc = 2 * 0.5 ** 12  # 12 discordant pairs, all one way
    assert df.loc["ewc", "p_vs_sft"] == pytest.approx(p_ewc, rel=1e-3)
    assert df.loc["l2", "p_vs_sft"] == pytest.approx(1.0)
    assert df.loc["ewc", "p_vs_sft_holm"] == pytest.approx(3 * p_ewc, rel=1e-3)  # Holm over 3 tests
    assert df.loc["slerp", "reused_sft_training"] and not df.loc["ewc", "reused_sft_training"]
    assert df.loc["slerp", "train_wall_rel_sft"] == pytest.approx(1.1)  # (100 + 10) / 100
    assert df.loc["ewc", "train_wall_rel_sft"] == pytest.approx(1.5)
    assert df.loc["ewc", "prepare_s"] == pytest.approx(1.5)
    assert "significantly lower than SFT's 1.000 (Holm-adjusted p < 0.05): `ewc` (0.000)" in md
    assert "Task score more than 0.05 below SFT's 0.800: `l2` (0.500)" in md
    assert "- `der`: not run yet" in md
    assert "run under another name with the same settings (config hash) as `sft.yaml`" in md


def test_report_with_no_records_writes_header_and_lists_everything(tmp_path: Path) -> None:
    folder = params_dir(tmp_path, {"sft": "method: {name: sft}", "der": "method: {name: der}"})
    md = write_methods(out_dir=tmp_path / "out", params_dir=folder, root=tmp_path / "runs").read_text()
    assert "No method has a run record yet." in md
    assert "- `sft`: not run yet" in md and "- `der`: not run yet" in md
    assert pd.read_csv(tmp_path / "out" / "poisoned_sst2.csv").empty
    assert not (tmp_path / "records").exists()


def test_cli_knows_the_methods_report() -> None:
    assert build_parser().parse_args(["report", "methods", "--runs", "x"]).name == "methods"


def with_second_judge(record: dict, name: str, harmful: list[bool]) -> dict:
    """Add a second judge's verdicts and ASR to a fake record (as ``ussafety rejudge`` does)."""
    for g, h in zip(record["generations"], harmful):
        g["verdicts"][name] = {"harmful": h, "refused": None}
    n = len(harmful)
    record["metrics"]["asr"][name] = {"n": n, "by_set": {"advbench": {"n": n, "asr": sum(harmful) / n}},
                                      "degenerate_rate": 0.0}
    return record


def test_a_second_judge_gets_its_own_asr_and_tests(tmp_path: Path) -> None:
    folder = params_dir(tmp_path, {"sft": "method: {name: sft}", "ewc": "method: {name: ewc}",
                                   "l2": "method: {name: l2}"})
    sft, ewc, l2 = (load_config(folder / f"{m}.yaml") for m in ("sft", "ewc", "l2"))
    runs = tmp_path / "runs"
    save_record(with_second_judge(fake_record(sft.run_id, sft.hash(), [True] * 12), "learned", [True] * 10 + [False] * 2), runs)
    # under keyword ewc is safer than sft; under the learned judge it is not
    save_record(with_second_judge(fake_record(ewc.run_id, ewc.hash(), [False] * 12), "learned", [True] * 10 + [False] * 2), runs)
    save_record(fake_record(l2.run_id, l2.hash(), [True] * 12), runs)   # not rejudged
    out = tmp_path / "out"
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()
    df = pd.read_csv(out / "poisoned_sst2.csv").set_index("method")
    assert "learned_asr" not in df.columns           # l2 was not judged by it: no partial column
    save_record(with_second_judge(fake_record(l2.run_id, l2.hash(), [True] * 12), "learned", [False] * 12),
                runs)  # overwrite: now every record has it
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()
    df = pd.read_csv(out / "poisoned_sst2.csv").set_index("method")
    assert df.loc["ewc", "learned_asr"] == pytest.approx(10 / 12)
    assert df.loc["ewc", "learned_p_vs_sft"] == pytest.approx(1.0)          # identical outcomes
    assert df.loc["l2", "learned_p_vs_sft"] == pytest.approx(2 * 0.5 ** 10, rel=1e-3)  # 10 discordant pairs
    assert df.loc["l2", "learned_p_vs_sft_holm"] == pytest.approx(2 * 2 * 0.5 ** 10, rel=1e-3)
    assert "asr_learned" not in df.columns and "asr_advbench" in df.columns
    assert "## Under the `learned` judge" in md
    assert "significantly lower than SFT's 0.833 (Holm-adjusted p < 0.05): `l2` (0.000)" in md
