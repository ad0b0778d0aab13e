"""The erosion table: a protocol folder's records against the poison ratio, with the
issue's targets checked from the numbers (met and unmet both exercised)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.record_fixtures import harmful_rows, make_record
from ussafety.config import load_config
from ussafety.paths import PROJECT_ROOT
from ussafety.records import save_record
from ussafety.study.erosion import checks, protocol_files, write_erosion

PRESET = PROJECT_ROOT / "params" / "presets" / "cpu.yaml"


def _protocol(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "aligned.yaml").write_text(f"extends: {PRESET}\nname: e-aligned\ntask: {{name: null}}\n")
    for p in ("0.0", "0.1"):
        (folder / f"p{p}.yaml").write_text(
            f"extends: {PRESET}\nname: e-p{p}\ntask: {{name: sst2, poison_ratio: {p}}}\n"
        )


def _record(path: Path, harmful: list[bool], task: float, root: Path) -> None:
    cfg = load_config(path)
    gens = harmful_rows(harmful, judge="keyword3")
    save_record(make_record("x", gens, cfg=cfg, primary="keyword3", task=task), root)


def test_protocol_files_need_the_reference(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p0.1.yaml").write_text(f"extends: {PRESET}\ntask: {{poison_ratio: 0.1}}\n")
    with pytest.raises(FileNotFoundError, match=r"aligned\.yaml"):
        protocol_files(tmp_path / "p")


def test_erosion_table_and_targets(tmp_path: Path) -> None:
    params, records, out = tmp_path / "params", tmp_path / "records", tmp_path / "out"
    _protocol(params / "proto")
    n = 40
    _record(params / "proto" / "aligned.yaml", [i < 2 for i in range(n)], 0.5, records)  # 0.05
    _record(params / "proto" / "p0.0.yaml", [i < 12 for i in range(n)], 0.9, records)  # 0.30, 10 flips up
    _record(params / "proto" / "p0.1.yaml", [i < 10 for i in range(n)], 0.8, records)  # 0.25: 5x but +0.20
    df = write_erosion(params, records, out)
    assert list(df.poison_ratio.fillna(-1)) == [-1, 0.0, 0.1]
    assert df.asr.round(3).tolist() == [0.05, 0.3, 0.25]
    got = {what.split(" (")[0].split(" at ")[0]: ok for what, ok, _ in checks(df, "keyword3")}
    assert got["benign SFT above aligned"] is True
    assert got["p = 0.1"] is False  # 5x but only +0.20: the absolute target fails
    assert got["task learned"] is False  # 0.80 < 0.85
    text = (out / "erosion.md").read_text()
    assert "## proto" in text and "- [ ] p = 0.1" in text and "- [x] benign SFT" in text
    assert (out / "erosion.csv").read_text().count("\n") == 4
