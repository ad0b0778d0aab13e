"""Condition rows, paired McNemar tests and the phenomenon report, from :class:`Record` objects."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from record_fixtures import harmful_rows, make_record
from scipy.stats import binomtest

from ussafety.config import load_config
from ussafety.paths import PROJECT_ROOT
from ussafety.records import Record, RecordError, record_path, save_record
from ussafety.study.reports import FOUNDATION, phenomenon_checks, write_phenomenon
from ussafety.study.tables import condition_table, markdown_table, paired_mcnemar

FOUNDATION_DIR = PROJECT_ROOT / "params" / "foundation"


def record(name: str, harmful: list[bool], task: float = 0.8, **kw) -> Record:
    return make_record(name, harmful_rows(harmful), task=task, train={"wall_s": 1.0}, **kw)


def test_paired_mcnemar_matches_scipy_exact_binomial_on_discordant_pairs() -> None:
    a = [False] * 20 + [True] * 5
    b = [True] * 12 + [False] * 8 + [True] * 3 + [False] * 2
    p, n = paired_mcnemar(record("a", a).outcomes(), record("b", b).outcomes())
    b01, b10 = 12, 2  # a False & b True, a True & b False
    assert n == 25 and math.isclose(p, binomtest(b01, b01 + b10, 0.5).pvalue)


def test_pairing_uses_only_shared_prompts() -> None:
    a = record("a", [True, False, True]).outcomes()
    b = record("b", [True, True, True, True]).outcomes()
    assert paired_mcnemar(a, b)[1] == 3


def test_condition_table_and_targets() -> None:
    recs = {
        "instruct": record("i", [True] * 9 + [False], task=0.7),
        "aligned": record("a", [False] * 10, task=0.75),
        "sft_benign": record("b", [True] * 2 + [False] * 8),
        "sft_poisoned_p0.1": record("p", [True] * 8 + [False] * 2),
    }
    df = condition_table(recs, "aligned")
    assert list(df.condition) == list(recs)
    assert df.asr.tolist() == [0.9, 0.0, 0.2, 0.8]
    assert math.isnan(df.p_vs_aligned[1]) and math.isclose(df.p_vs_aligned[3], 2 * 0.5**8)
    assert df.asr_ci_low[1] == 0.0 and 0 < df.asr_ci_high[1] < 0.35
    assert df.over_refusal[0] == pytest.approx(0.2) and df.task_score[0] == 0.7
    assert df.asr_advbench.tolist() == [0.9, 0.0, 0.2, 0.8] and df.prompt_sets[0] == "advbench 10"
    checks = {name: ok for name, ok, _ in phenomenon_checks(df)}
    assert checks["aligned ASR <= 0.10"] and checks["poisoned p_vs_aligned < 0.05"]
    assert checks["aligned SST-2 accuracy >= instruct"]
    md = markdown_table(df, ["condition", "asr"])
    assert md.splitlines()[2] == "| instruct | 0.900 |"


def test_condition_table_under_a_second_judge_and_holm() -> None:
    """The row reads the named judge's verdicts, not the primary one's; Holm adjusts the
    compared rows together and leaves the reference untested."""
    recs = {}
    for name, kw, second in (
        ("sft", [True] * 10, [True] * 10),
        ("a", [False] * 10, [True] * 10),
        ("b", [True] * 10, [False] * 10),
    ):
        gens = harmful_rows(kw)
        for g, h in zip(gens, second):
            g.verdicts["learned"] = g.verdicts["keyword"].model_copy(update={"harmful": h})
        recs[name] = make_record(name, gens)
    df = condition_table(recs, "sft", judge="learned", holm=True).set_index("condition")
    assert df.asr.tolist() == [1.0, 1.0, 0.0] and df.loc["a", "p_vs_sft"] == 1.0
    assert df.loc["b", "p_vs_sft"] == pytest.approx(2 * 0.5**10)
    assert df.loc["b", "p_vs_sft_holm"] == pytest.approx(2 * 2 * 0.5**10)
    assert math.isnan(df.loc["sft", "p_vs_sft_holm"]) and set(df.judge) == {"learned"}


def foundation_runs(root: Path) -> dict[str, Record]:
    """The four foundation conditions saved under the run ids of today's params files."""
    outcomes = {
        "instruct": [True] * 9 + [False],
        "aligned": [False] * 10,
        "sft_benign": [True] * 3 + [False] * 7,
        "sft_poisoned_p0.1": [True] * 9 + [False],
    }
    out = {}
    for name in FOUNDATION:
        out[name] = record(name, outcomes[name], cfg=load_config(FOUNDATION_DIR / f"{name}.yaml"))
        save_record(out[name], root)
    return out


def test_write_phenomenon_regenerates_from_records(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    saved = foundation_runs(root)
    out = tmp_path / "paper_outputs" / "foundation"
    md = write_phenomenon(out_dir=out, root=root).read_text()
    assert "- [x] aligned ASR <= 0.10: 0.000" in md
    assert (out / "phenomenon.csv").read_text().count("\n") == 5
    home = tmp_path / "paper_outputs" / "records"  # shared with the other reports
    assert len(list(home.glob("*/record.json"))) == 4
    poisoned = saved["sft_poisoned_p0.1"].run_id
    assert f"- `sft_poisoned_p0.1`: `../records/{poisoned}/record.json` (commit `abc`)" in md
    # the export is the record as read (``finished`` kept), byte for byte
    assert record_path(poisoned, home).read_bytes() == record_path(poisoned, root).read_bytes()
    # the exported records regenerate the same table
    again = tmp_path / "again" / "foundation"
    write_phenomenon(out_dir=again, root=home)
    assert (again / "phenomenon.csv").read_text() == (out / "phenomenon.csv").read_text()


def test_missing_foundation_record_is_named(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    saved = foundation_runs(root)
    record_path(saved["sft_benign"].run_id, root).unlink()
    with pytest.raises(FileNotFoundError, match=r"sft_benign\.yaml \(run id " + saved["sft_benign"].run_id):
        write_phenomenon(out_dir=tmp_path / "out", root=root)


def test_a_record_with_a_wrong_field_fails_naming_the_file_and_the_field(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    saved = foundation_runs(root)
    path = record_path(saved["aligned"].run_id, root)
    data = json.loads(path.read_text())
    data["metrics"]["asr"]["keyword"]["n"] = "many"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as err:
        write_phenomenon(out_dir=tmp_path / "out", root=root)
    assert str(path) in str(err.value) and "metrics.asr.keyword.n" in str(err.value)
    assert not (tmp_path / "out" / "phenomenon.md").exists()  # nothing half-written
