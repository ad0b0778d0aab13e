"""Without the data mirror every set still loads, through its fallback: an exact copy of the
mirror's file (sha256-checked) or the set's hub copy, each named with its licence; and the
Colab notebook runs the smoke preset end to end that way.

No machine here reaches the hub or the source repositories, so a fake stands in for the two
network calls (``datasets.load_dataset`` and ``ussafety.data.sources.fetch_url``): it serves
the mirror's files under their hub ids and URLs. Everything between those calls and the run
records is the real code. In the notebook's kernel the fake is installed by a
``sitecustomize`` that ``USSAFETY_FAKE_HUB`` activates (:data:`SHIM`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ussafety.data import load, loaders, refusal_keywords, sources
from ussafety.paths import PROJECT_ROOT, data_dir

MIRROR = sources.mirror_at(data_dir())
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="the fake serves the mirror's files: needs ../shared/data")
TESTS = Path(__file__).resolve().parent

SHIM = """\
import os, sys
if os.environ.get("USSAFETY_FAKE_HUB"):
    sys.path.insert(0, {tests!r})
    import test_hub_fallback
    test_hub_fallback.install_fake_hub(os.environ["USSAFETY_FAKE_HUB"], log=os.environ.get("USSAFETY_FAKE_HUB_LOG"))
"""


def install_fake_hub(
    mirror: str | Path, patch: Callable[[Any, str, Any], None] = setattr, log: str | None = None
) -> list[tuple[str, str]]:
    """Replace the hub and URL downloads by the mirror's files under their hub ids / URLs.
    Returns (and with ``log``, appends to that file) every call served."""
    import datasets

    mirror = Path(mirror)
    hub_files: dict[tuple[Any, ...], tuple[str, str]] = {}
    for spec in loaders.REGISTRY.values():
        for split, hub_split in spec.hub.splits.items() if spec.hub else ():
            hub_files.setdefault((spec.hub.id, spec.hub.config, spec.hub.data_dir, hub_split), spec.files[split])
    urls = {copy.url: key for key, copy in sources.EXACT_COPIES.items() if copy.url}
    calls: list[tuple[str, str]] = []

    def served(kind: str, what: str) -> None:
        calls.append((kind, what))
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps([kind, what]) + "\n")

    def load_dataset(
        path: str, name: str | None = None, *, split: str, data_dir: str | None = None, revision: str | None = None
    ) -> list[Any]:
        folder, fname = hub_files[(path, name, data_dir, split)]
        served("hub", f"{path}:{split}")
        return sources.read_records(mirror / folder / fname)

    def fetch_url(url: str, dest: Path) -> None:
        if url not in urls:
            raise urllib.error.URLError(f"fake hub: nothing at {url}")
        shutil.copyfile(mirror.joinpath(*urls[url]), dest)
        served("url", url)

    patch(datasets, "load_dataset", load_dataset)
    patch(sources, "fetch_url", fetch_url)
    return calls


@pytest.fixture
def no_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The mirror hidden: ``USSAFETY_DATA_DIR`` is an empty folder."""
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("USSAFETY_DATA_DIR", str(empty))
    sources.clear_caches()
    sources.announce.cache_clear()  # each test sees its fallbacks named
    yield empty
    sources.clear_caches()


def with_mirror(monkeypatch: pytest.MonkeyPatch, name: str, split: str) -> list[Any]:
    with monkeypatch.context() as m:
        m.setenv("USSAFETY_DATA_DIR", str(MIRROR))
        return load(name, split)


def key(ex: Any) -> tuple[Any, ...]:
    return ex.prompt, ex.response, ex.source, ex.row, ex.sha256, ex.history, ex.system


@needs_mirror
def test_every_set_loads_without_the_mirror(
    no_mirror: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Exact copies give the mirror's examples (rows, provenance, sha256); hub copies the same
    prompts under ``hub:`` provenance; every fallback logs its source and licence."""
    calls = install_fake_hub(MIRROR, monkeypatch.setattr)
    caplog.set_level(logging.WARNING, logger="ussafety.data.sources")
    for name, spec in sorted(loaders.REGISTRY.items()):
        for split, (folder, fname) in spec.files.items():
            if spec.prefer_file is not None:  # HumanEval: the installed package's file, mirror or not
                continue
            caplog.clear()
            got = load(name, split)
            want = with_mirror(monkeypatch, name, split)
            assert got, f"{name}/{split}: nothing loaded"
            if (folder, fname) in sources.EXACT_COPIES:
                assert [key(e) for e in got] == [key(e) for e in want], f"{name}/{split}"
                assert (no_mirror / folder / fname).is_file()  # kept in the data folder, like a mirror
            else:
                assert {e.prompt for e in want} <= {e.prompt for e in got}, f"{name}/{split}"
                assert {e.sha256 for e in got} == {f"hub:{spec.hub.id}@latest"}
            if (folder, fname) not in sources.EXACT_COPIES or caplog.records:
                assert f"licence: {sources.ORIGINS[folder].licence}" in caplog.text, f"{name}/{split}"
    assert {k for k, _ in calls} == {"hub", "url"}
    assert not (no_mirror / "MANIFEST.json").exists()  # the data folder is still no mirror


@needs_mirror
def test_refusal_keywords_without_the_mirror_are_its_file_rebuilt(
    no_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words, sha = refusal_keywords()
    with monkeypatch.context() as m:
        m.setenv("USSAFETY_DATA_DIR", str(MIRROR))
        mirror_words, mirror_sha = refusal_keywords()
    assert words == mirror_words and sha == f"builtin:{mirror_sha}"
    assert (no_mirror / "refusal_keywords" / "gcg_test_prefixes.json").read_bytes() == (
        MIRROR / "refusal_keywords" / "gcg_test_prefixes.json"
    ).read_bytes()


def test_an_exact_copy_with_other_bytes_is_refused_and_not_kept(
    no_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "fetch_url", lambda url, dest: dest.write_text("[]"))
    with pytest.raises(sources.ChecksumError, match="sha256 mismatch"):
        load("refusals")
    assert not any(p.is_file() for p in no_mirror.rglob("*"))


def test_an_unreachable_exact_copy_says_why_or_falls_back_to_the_hub(
    no_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, dest: Path) -> None:
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(sources, "fetch_url", offline)
    with pytest.raises(sources.MirrorNotFoundError, match="could not be fetched: <urlopen error offline>"):
        load("refusals")  # no hub copy


def test_every_set_has_a_fallback_with_its_licence() -> None:
    rows = loaders.fallbacks()
    names = {f"{n}/{s}" for n, spec in loaders.REGISTRY.items() for s in spec.files}
    assert {r["set"] for r in rows} == names | {"refusal keywords"}
    missing = [r["set"] for r in rows if r["without mirror"] == "none" or not r["licence"]]
    assert not missing, f"no fallback or licence: {missing}"


@needs_mirror
def test_colab_notebook_runs_the_smoke_preset_without_the_mirror(
    tmp_path: Path, no_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """papermill executes notebooks/colab.ipynb (CPU runtime: the smoke preset) in a kernel
    whose hub calls the fake serves; records, outputs and the fallbacks' evidence are checked."""
    import papermill as pm

    from ussafety.study.grid import expand, unique_runs

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM.format(tests=str(TESTS)), encoding="utf-8")
    served = tmp_path / "served.jsonl"
    monkeypatch.setenv("USSAFETY_FAKE_HUB", str(MIRROR))
    monkeypatch.setenv("USSAFETY_FAKE_HUB_LOG", str(served))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs, out = tmp_path / "runs", tmp_path / "out"
    pm.execute_notebook(
        str(PROJECT_ROOT / "notebooks" / "colab.ipynb"),
        str(tmp_path / "colab.ipynb"),
        parameters={"runs_dir": str(runs), "out_dir": str(out)},
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    executed = (tmp_path / "colab.ipynb").read_text(encoding="utf-8")
    assert "preset smoke:" in executed and "no mirror; the fallbacks below fill" in executed
    assert len(list(runs.glob("*/record.json"))) == len(unique_runs(expand("smoke")))
    assert (out / "scorecard.md").is_file()
    calls = [tuple(json.loads(line)) for line in served.read_text(encoding="utf-8").splitlines()]
    assert ("hub", "walledai/AdvBench:train") in calls  # the smoke evaluation's harmful sets, from the hub
    assert any(k == "url" and "safety-tuned-llamas" in w for k, w in calls)  # alignment's refusals, exact copy
    assert (no_mirror / "safety_tuned_llamas" / "safety_only_data_Instructions.json").is_file()
    assert not (no_mirror / "MANIFEST.json").exists()
