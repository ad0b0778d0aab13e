"""Atomic writes: the target is replaced whole, no temp file is left behind, a failed
write leaves the old file; figures are written the same way and are the bytes
``savefig`` writes to the path itself."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from ussafety.atomic import save_figure_atomic, write_bytes_atomic, write_text_atomic


def test_text_and_bytes_replace_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "table.md"
    write_text_atomic(target, "old\n")
    write_text_atomic(target, "new é\n")
    assert target.read_bytes() == "new é\n".encode()
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.md"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "scorecard.md"
    write_text_atomic(target, "whole\n")

    class Boom:
        def savefig(self, fh, **kw) -> None:
            fh.write(b"half")
            raise KeyboardInterrupt  # a kill in the middle of drawing

    with pytest.raises(KeyboardInterrupt):
        save_figure_atomic(Boom(), target)
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "whole\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scorecard.md"]


@pytest.mark.parametrize(("suffix", "kw"), [(".png", {"dpi": 50}), (".pdf", {"metadata": {"CreationDate": None}})])
def test_figures_are_what_savefig_writes(tmp_path: Path, suffix: str, kw: dict) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    direct, atomic = tmp_path / f"direct{suffix}", tmp_path / "figures" / f"atomic{suffix}"
    fig.savefig(direct, bbox_inches="tight", **kw)
    atomic.parent.mkdir()
    atomic.write_bytes(b"an older figure")
    assert save_figure_atomic(fig, atomic, bbox_inches="tight", **kw) == atomic
    plt.close(fig)
    assert atomic.read_bytes() == direct.read_bytes()
    assert [p.name for p in atomic.parent.iterdir()] == [atomic.name]
