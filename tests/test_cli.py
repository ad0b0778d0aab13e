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
