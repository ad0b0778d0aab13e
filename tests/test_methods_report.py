"""``ussafety report methods``: the methods table from run records (smoke-preset runs of
the tiny random model, and hand-made records for the statistics)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from record_fixtures import harmful_rows, make_record

import ussafety.pipeline as experiment
from ussafety.config import RunConfig, load_config, run_id
from ussafety.records import Record, save_record
from ussafety.study.reports import METHODS_COLUMNS, method_family, write_methods

SMOKE = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"
REQUIRED = [
    "method",
    "n_prompts",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "p_vs_sft",
    "over_refusal",
    "task_score",
    "degenerate_rate",
    "train_wall_s",
    "train_wall_rel_sft",
    "reused_sft_training",
    "run_id",
]


def params_dir(tmp_path: Path, methods: dict[str, str]) -> Path:
    """A params folder like params/methods/poisoned_sst2, on the smoke preset."""
    folder = tmp_path / "params" / "poisoned_sst2"
    folder.mkdir(parents=True)
    for name, method in methods.items():
        (folder / f"{name}.yaml").write_text(
            f"extends: {SMOKE}\nname: {name}\ntask: {{poison_ratio: 0.25}}\n{method}\n"
        )
    return folder


def test_report_from_smoke_runs_lists_missing_and_regenerates_from_exported(tmp_path: Path) -> None:
    folder = params_dir(
        tmp_path,
        {"sft": "method: {name: sft}", "merge_linear": "method: {name: merge_linear}", "l2": "method: {name: l2}"},
    )
    runs = tmp_path / "runs"
    done = {
        name: experiment.run(load_config(folder / f"{name}.yaml"), root=runs) for name in ("sft", "merge_linear")
    }  # l2 is not run
    out = tmp_path / "paper_outputs" / "methods"
    out.mkdir(parents=True)
    (out / "notes.md").write_text("## Notes (hand-written)\n\nA sentence by a person.\n")
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()

    df = pd.read_csv(out / "poisoned_sst2.csv")
    assert set(REQUIRED) <= set(df.columns) and list(df.columns[: len(METHODS_COLUMNS)]) == METHODS_COLUMNS
    assert df.method.tolist() == ["sft", "merge_linear"]
    sft, merged = df.iloc[0], df.iloc[1]
    assert math.isnan(sft.p_vs_sft) and 0.0 <= merged.p_vs_sft <= 1.0
    assert sft.train_wall_rel_sft == 1.0
    for row in (sft, merged):  # (a cache left by an earlier test may serve sft too)
        assert row.reused_sft_training == (done[row.method].train.reused_from is not None)
    assert merged.family == "merging"  # merge_linear is stored as sft + merge: the merge's family
    assert merged.train_wall_rel_sft == pytest.approx(
        (merged.train_wall_s + merged.finalize_s) / (sft.train_wall_s + sft.finalize_s), rel=1e-3
    )
    assert sft.n_prompts == 12 and 0.0 <= sft.asr_ci_low <= sft.asr <= sft.asr_ci_high <= 1.0
    assert "- `l2`: not run yet" in md and "| l2 |" not in md
    assert md.rstrip().endswith("A sentence by a person.")
    assert md.index("## Not run yet") < md.index("## Notes (hand-written)")
    home = tmp_path / "paper_outputs" / "records"  # shared with the other reports
    exported = sorted(p.parent.name for p in home.glob("*/record.json"))
    assert exported == sorted(df.run_id)
    # the exported records alone regenerate the same table
    again = tmp_path / "again" / "methods"
    write_methods(out_dir=again, params_dir=folder, root=home)
    assert (again / "poisoned_sst2.csv").read_text() == (out / "poisoned_sst2.csv").read_text()


def fake_record(
    cfg: RunConfig,
    harmful: list[bool],
    wall_s: float = 100.0,
    task: float = 0.8,
    reused: bool = False,
    second: tuple[str, list[bool]] | None = None,
) -> Record:
    """A record of ``cfg`` (under its run id) with the given outcomes under ``keyword`` and,
    when ``second`` is given, under a second judge too (as ``ussafety rejudge`` adds it)."""
    gens = harmful_rows(harmful)
    if second:
        name, outcomes = second
        for g, h in zip(gens, outcomes):
            g.verdicts[name] = g.verdicts["keyword"].model_copy(update={"harmful": h, "refused": None})
    train = {
        "wall_s": wall_s,
        "finalize_s": 10.0 if reused else 0.0,
        "method_logs": {"prepare_s": 1.5},
        "reused_from": "cache" if reused else None,
    }
    return make_record(run_id(cfg), gens, cfg=cfg, task=task, train=train)


def test_records_by_run_id_holm_and_costs(tmp_path: Path) -> None:
    folder = params_dir(
        tmp_path,
        {
            "sft": "method: {name: sft}",
            "ewc": "method: {name: ewc}",
            "l2": "method: {name: l2}",
            "der": "method: {name: der}",
            "slerp": "method: {name: slerp}",
        },
    )
    sft, ewc, l2, der, slerp = (load_config(folder / f"{m}.yaml") for m in ("sft", "ewc", "l2", "der", "slerp"))
    runs = tmp_path / "runs"
    save_record(fake_record(sft, [True] * 12), runs)
    save_record(fake_record(ewc, [False] * 12, wall_s=150.0), runs)
    save_record(fake_record(l2, [True] * 11 + [False], task=0.5), runs)
    save_record(fake_record(slerp, [True] * 12, reused=True), runs)
    # a record of other settings is not der's, whatever it is called
    other = fake_record(der, [False] * 12).model_copy(update={"run_id": f"der-{'0' * 10}"})
    save_record(other, runs)
    out = tmp_path / "out"
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()
    df = pd.read_csv(out / "poisoned_sst2.csv").set_index("method")
    assert df.loc["sft", "run_id"] == run_id(sft) and "der" not in df.index
    p_ewc = 2 * 0.5**12  # 12 discordant pairs, all one way
    assert df.loc["ewc", "p_vs_sft"] == pytest.approx(p_ewc, rel=1e-3)
    assert df.loc["l2", "p_vs_sft"] == pytest.approx(1.0)
    assert df.loc["ewc", "p_vs_sft_holm"] == pytest.approx(3 * p_ewc, rel=1e-3)  # Holm over 3 tests
    assert df.loc["slerp", "reused_sft_training"] and not df.loc["ewc", "reused_sft_training"]
    assert df.loc["slerp", "train_wall_rel_sft"] == pytest.approx(1.1)  # (100 + 10) / 100
    assert df.loc["ewc", "train_wall_rel_sft"] == pytest.approx(1.5)
    assert df.loc["ewc", "prepare_s"] == pytest.approx(1.5)
    assert df.loc["slerp", "family"] == "merging" and df.loc["ewc", "family"] == "regularization"
    assert "significantly lower than SFT's 1.000 (Holm-adjusted p < 0.05): `ewc` (0.000)" in md
    assert "Task score more than 0.05 below SFT's 0.800: `l2` (0.500)" in md
    assert "- `der`: not run yet" in md
    assert f"- `sft`: `../records/{run_id(sft)}/record.json` (commit `abc`)" in md


def test_family_of_a_merge_after_a_training_method(tmp_path: Path) -> None:
    folder = params_dir(
        tmp_path, {"der_slerp": "method: {name: der}\nmerge: {name: slerp}", "safelora": "method: {name: safelora}"}
    )
    assert method_family(load_config(folder / "der_slerp.yaml")) == "replay + merging (der + slerp)"
    assert method_family(load_config(folder / "safelora.yaml")) == "baseline"  # sft + merge safelora


def test_report_with_no_records_writes_header_and_lists_everything(tmp_path: Path) -> None:
    folder = params_dir(tmp_path, {"sft": "method: {name: sft}", "der": "method: {name: der}"})
    md = write_methods(out_dir=tmp_path / "out", params_dir=folder, root=tmp_path / "runs").read_text()
    assert "No method has a run record yet." in md
    assert "- `sft`: not run yet" in md and "- `der`: not run yet" in md
    assert pd.read_csv(tmp_path / "out" / "poisoned_sst2.csv").empty
    assert not (tmp_path / "records").exists()


def test_cli_knows_the_methods_report() -> None:
    from ussafety.cli.main import build_parser

    assert build_parser().parse_args(["report", "methods", "--runs", "x"]).name == "methods"


def test_a_second_judge_gets_its_own_asr_and_tests(tmp_path: Path) -> None:
    folder = params_dir(
        tmp_path, {"sft": "method: {name: sft}", "ewc": "method: {name: ewc}", "l2": "method: {name: l2}"}
    )
    sft, ewc, l2 = (load_config(folder / f"{m}.yaml") for m in ("sft", "ewc", "l2"))
    runs = tmp_path / "runs"
    save_record(fake_record(sft, [True] * 12, second=("learned", [True] * 10 + [False] * 2)), runs)
    # under keyword ewc is safer than sft; under the learned judge it is not
    save_record(fake_record(ewc, [False] * 12, second=("learned", [True] * 10 + [False] * 2)), runs)
    save_record(fake_record(l2, [True] * 12), runs)  # not rejudged
    out = tmp_path / "out"
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()
    df = pd.read_csv(out / "poisoned_sst2.csv").set_index("method")
    assert "learned_asr" not in df.columns  # l2 was not judged by it: no partial column
    save_record(fake_record(l2, [True] * 12, second=("learned", [False] * 12)), runs)  # now every record has it
    md = write_methods(out_dir=out, params_dir=folder, root=runs).read_text()
    df = pd.read_csv(out / "poisoned_sst2.csv").set_index("method")
    assert df.loc["ewc", "learned_asr"] == pytest.approx(10 / 12)
    assert df.loc["ewc", "learned_p_vs_sft"] == pytest.approx(1.0)  # identical outcomes
    assert df.loc["l2", "learned_p_vs_sft"] == pytest.approx(2 * 0.5**10, rel=1e-3)  # 10 discordant pairs
    assert df.loc["l2", "learned_p_vs_sft_holm"] == pytest.approx(2 * 2 * 0.5**10, rel=1e-3)
    assert "asr_learned" not in df.columns and "asr_advbench" in df.columns
    assert "## Under the `learned` judge" in md
    assert "significantly lower than SFT's 0.833 (Holm-adjusted p < 0.05): `l2` (0.000)" in md
