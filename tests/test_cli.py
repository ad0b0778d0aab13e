import pytest

from ussafety.cli.main import build_parser, main


@pytest.mark.parametrize("command", ["align", "run", "eval"])
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and len(out) > 300


def test_config_error_exits_2_with_file_named(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {nmae: sft}\n")
    assert main(["run", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_dry_run_prints_id_and_canonical_config(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from pathlib import Path

    params = Path(__file__).resolve().parent.parent / "params" / "methods" / "poisoned_sst2" / "slerp.yaml"
    assert main(["run", "--dry-run", str(params)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"].startswith("sft+slerp-sst2-p0.1-s0-") and out["canonical"]["merge"]["name"] == "slerp"


def test_validate_upload_reports_json_and_exit_2(tmp_path, capsys) -> None:
    import json

    bad = tmp_path / "up.jsonl"
    bad.write_text('{"instruction": "hi\\u0000", "output": "ok"}\n')
    assert main(["validate-upload", str(bad)]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["problems"][0]["kind"] == "control_char"


def test_runs_check_lists_a_record_made_under_an_older_stamp(tmp_path, capsys, monkeypatch) -> None:
    import json
    import shutil
    from pathlib import Path

    import ussafety.config.identity as identity

    records = Path(__file__).resolve().parent.parent / "paper_outputs" / "records"
    sft = next(p for p in sorted(records.iterdir()) if p.name.startswith("sft-sst2-p0.1-s0-"))
    shutil.copytree(sft, tmp_path / sft.name)
    assert main(["runs", "check", str(tmp_path)]) == 0
    assert main(["runs", "migrate", str(tmp_path), "--dry-run"]) == 0
    capsys.readouterr()
    monkeypatch.setitem(identity.STAMPS, "evaluation", 2)  # the evaluation code changed since
    assert main(["runs", "check", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["stale"] == [{"run_id": sft.name, "changed": {"evaluation": [1, 2]}}]
