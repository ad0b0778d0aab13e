"""Kill -9 at random points, resume, and check that nothing is lost, partial or duplicated,
and that the same config and seed give the same record (determinism on CPU).

The runs are the smoke preset's (the tiny random model): several in one `ussafety run`
command, so kills land during alignment, training, evaluation and record writing; and the
whole smoke study under `ussafety reproduce`, so kills also land while papermill executes
a notebook (its kernel running the grid, or the analysis writing the outputs). The counts
are printed for the CI log (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from ussafety.study.reproduce import NOTEBOOKS, STATE

PARAMS = Path(__file__).resolve().parent.parent / "params" / "presets" / "smoke.yaml"
SEEDS = (0, 1, 2)


def params_files(tmp_path: Path) -> list[str]:
    """Three smoke runs (seeds 0-2, 25% poison) as params files."""
    files = []
    for seed in SEEDS:
        path = tmp_path / f"smoke_s{seed}.yaml"
        path.write_text(f"extends: {PARAMS}\nseed: {seed}\ntask: {{poison_ratio: 0.25}}\n")
        files.append(str(path))
    return files


def command(files: list[str], runs: Path) -> list[str]:
    return [sys.executable, "-m", "ussafety.cli.main", "run", *files, "--runs", str(runs)]


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "USSAFETY_CACHE": str(cache), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def finished(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob("*/record.json"))}


def comparable(record: dict) -> dict:
    """What must not depend on kills: outcome, not provenance or timings."""
    return {
        "generations": record["generations"],
        "metrics": record["metrics"],
        "config": record["config"],
        "data_sha256": record["data_sha256"],
        "stamps": record["stamps"],
        "poison": (record.get("train") or {}).get("poison"),
    }


LEFTOVERS = ("*.tmp", ".*.partial", ".adapter-*", ".save-*", ".convert-*")
"""What a kill can leave behind: temporary files of atomic writes (records, caches' JSON,
model cards), a notebook papermill was executing, temporary folders of saved adapters,
merged models and the GGUF conversion."""


def leftovers(*folders: Path) -> list[str]:
    return sorted(
        str(p) for folder in folders if folder.exists() for pattern in LEFTOVERS for p in folder.rglob(pattern)
    )


def processes_naming(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (a kernel's connection file
    lies in the test's own Jupyter runtime folder, so its command line names that folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if marker in cmdline and "zombie" not in state:
            found.append(int(proc.name))
    return found


def kill_and_resume(
    cmd: list[str], env: dict[str, str], rng: random.Random, n_kills: int, latest_s: float
) -> tuple[int, int]:
    """Start ``cmd``, SIGKILL it after a random time (0.5 s to ``latest_s``) up to ``n_kills``
    times, then let the last start finish; returns kills and resumes. A start that finishes
    before its kill ends the loop."""
    kills, resumes = 0, 0
    while True:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < n_kills:
            try:
                proc.wait(timeout=rng.uniform(0.5, latest_s))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                resumes += 1
                continue
        _, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        return kills, resumes


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float = 1800) -> bool:
    """Whether ``proc`` printed a line matching ``pattern`` (False: it ended first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace"), re.MULTILINE):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    raise TimeoutError(f"no line matching {pattern!r} in {log}")


def sigkill(proc: subprocess.Popen[bytes], kernels_of: str | None = None) -> None:
    """SIGKILL ``proc``; with ``kernels_of``, at the same moment every kernel whose command line
    names that folder (a machine that dies takes the kernel along; killed alone, the parent
    leaves its kernel to notice within a second and exit)."""
    kernels = processes_naming(kernels_of) if kernels_of else []
    proc.send_signal(signal.SIGKILL)
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def kill_in_each_notebook(
    cmd: list[str],
    env: dict[str, str],
    rng: random.Random,
    durations: dict[str, float],
    log: Path,
    runs: Path,
    cache: Path,
) -> tuple[int, int, list[str]]:
    """SIGKILL ``ussafety reproduce`` first while the aligned base is built (1-8 s into the
    first notebook, or as its cache folder appears), then once per notebook, a random share (5-95%) of that
    notebook's uninterrupted time after it began (a resumed notebook skips finished runs, so
    the kill may land in the next one: where it landed is returned); every other kill takes
    the kernel along. Then a start that is let finish. Returns kills, resumes, places."""
    kernels_of = env["JUPYTER_RUNTIME_DIR"]
    kills, places = 0, []
    with log.open("wb") as out:  # the aligned base: built first, in the benign notebook
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_line(log, r"^\[\d+/\d+\] benign: executing", proc)
        deadline = time.monotonic() + rng.uniform(1.0, 8.0)
        while not (cache / "aligned").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        sigkill(proc, kernels_of)
    kills += 1
    entries = sorted((cache / "aligned").iterdir()) if (cache / "aligned").exists() else []
    state = "whole" if any((e / "alignment.json").is_file() for e in entries) else f"not whole: {len(entries)} folders"
    places.append(f"in benign, building the aligned base, with its kernel (cache entry {state})")
    for nb in NOTEBOOKS:
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                if not wait_for_line(log, rf"^\[\d+/\d+\] {nb}: executing", proc):
                    break  # it finished the study before reaching this notebook's kill
                proc.wait(timeout=rng.uniform(0.05, 0.95) * durations[nb])
                break  # it finished before the kill
            except subprocess.TimeoutExpired:
                sigkill(proc, kernels_of if kills % 2 == 0 else None)
        kills += 1
        steps = re.findall(r"^\[\d+/\d+\] (\w+): executing", log.read_text(errors="replace"), re.MULTILINE)
        along = ", with its kernel" if kills % 2 == 1 else ""
        places.append(f"in {steps[-1]}{along}, {len(list(runs.glob('*/record.json')))} records finished")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        proc.wait(timeout=1800)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    return kills, kills, places


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_records(tmp_path: Path) -> None:
    files = params_files(tmp_path)

    # The uninterrupted reference, with its own cache.
    t0 = time.perf_counter()
    ref_runs = tmp_path / "ref_runs"
    subprocess.run(
        command(files, ref_runs), env=environment(tmp_path / "ref_cache"), check=True, capture_output=True, timeout=600
    )
    full_s = time.perf_counter() - t0
    reference = finished(ref_runs)
    assert len(reference) == len(SEEDS)

    # Kill the same command at random points (within the first half of a full run's time, as
    # finished runs are skipped on resume) up to 5 times, then let it finish; every start
    # after the first is a resume.
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    kills, resumes = kill_and_resume(command(files, runs), environment(cache), random.Random(1234), 5, full_s / 2)

    records = finished(runs)
    run_dirs = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    partial = [p.name for p in run_dirs if not (p / "record.json").is_file()]
    temp_files = leftovers(runs)
    ids_inside = [r["run_id"] for r in records.values()]
    duplicated = len(ids_inside) - len(set(ids_inside)) + len(set(records) - set(reference))
    print(
        f"kill -9: kills={kills} resumes={resumes} records={len(records)} partial={len(partial)} "
        f"duplicated={duplicated} temp_files={len(temp_files)} cache_temp_files={len(leftovers(cache))} "
        f"(one uninterrupted run: {full_s:.1f} s)"
    )
    assert kills >= 3
    assert sorted(records) == sorted(reference)  # exactly the records an uninterrupted run makes
    assert not partial and not temp_files and duplicated == 0
    for run_id, record in records.items():  # same config and seed: the same record
        assert comparable(record) == comparable(reference[run_id]), run_id


def reproduce_command(runs: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ussafety.cli.main",
        "reproduce",
        "--preset",
        "smoke",
        "--runs",
        str(runs),
        "--out",
        str(out),
        "--quiet",
    ]


def reproduce_environment(base: Path) -> dict[str, str]:
    """Own cache, own Jupyter runtime folder (kernel connection files), no progress bars."""
    return {**environment(base / "cache"), "JUPYTER_RUNTIME_DIR": str(base / "jupyter"), "USSAFETY_PROGRESS": "0"}


def notebook_errors(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)  # raises on a truncated or half-written file
    return [
        o.get("ename", "error")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def test_kill_9_during_reproduce_then_resume_gives_the_uninterrupted_study(tmp_path: Path) -> None:
    """``ussafety reproduce --preset smoke`` killed with SIGKILL at a random point inside each
    notebook's execution (the first builds the aligned base; the grids train, evaluate and
    write records; the analysis writes tables, figures and the scorecard) and resumed:
    the records of an uninterrupted reproduce, none partial, none duplicated, every notebook
    whole, no temporary file in the runs or outputs, no kernel left running.

    Reported, not asserted: temporary folders a kill can leave in the cache (a merged model or
    adapter being saved; the entry itself is rebuilt, as its JSON is written last), and the
    kernel connection files of killed runs in the Jupyter runtime folder (jupyter_client
    removes them at shutdown, which a SIGKILL skips; nothing reads them again)."""
    ref, kil = tmp_path / "ref", tmp_path / "killed"
    t0 = time.perf_counter()
    done = subprocess.run(
        reproduce_command(ref / "runs", ref / "out"),
        env=reproduce_environment(ref),
        capture_output=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-3000:]
    full_s = time.perf_counter() - t0
    reference = finished(ref / "runs")
    assert reference

    durations = {nb: float(sec) for nb, sec in re.findall(r"\] (\w+): done in (\d+) s", done.stdout.decode())}
    assert sorted(durations) == sorted(NOTEBOOKS)
    kills, resumes, places = kill_in_each_notebook(
        reproduce_command(kil / "runs", kil / "out"),
        reproduce_environment(kil),
        random.Random(20240518),
        durations,
        tmp_path / "reproduce.log",
        kil / "runs",
        kil / "cache",
    )
    kernels = processes_naming(str(kil / "jupyter"))
    for _ in range(10):  # an orphaned kernel notices its dead parent within a second (ipykernel's poller)
        if not kernels:
            break
        time.sleep(1)
        kernels = processes_naming(str(kil / "jupyter"))

    records = finished(kil / "runs")
    run_dirs = [p for p in (kil / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    partial = [p.name for p in run_dirs if not (p / "record.json").is_file()]
    ids_inside = [r["run_id"] for r in records.values()]
    duplicated = len(ids_inside) - len(set(ids_inside)) + len(set(records) - set(reference))
    exported = finished(kil / "out" / "records")
    nb_dir = kil / "out" / "notebooks"
    errors = {nb: notebook_errors(nb_dir / f"{nb}.ipynb") for nb in NOTEBOOKS}
    state = json.loads((nb_dir / STATE).read_text())
    left = leftovers(kil / "runs", kil / "out")
    cache_left = leftovers(kil / "cache")  # never read as an entry (it lacks its JSON); see the note below
    stale_kernel_files = len(list((kil / "jupyter").glob("kernel-*.json")))
    print(
        f"kill -9 reproduce: kills={kills} resumes={resumes} records={len(records)} partial={len(partial)} "
        f"duplicated={duplicated} notebooks={len(errors)} temp_files={len(left)} cache_temp_files={len(cache_left)} "
        f"kernels_left={len(kernels)} "
        f"stale_kernel_files={stale_kernel_files} (one uninterrupted reproduce: {full_s:.0f} s)"
    )
    for i, place in enumerate(places, 1):
        print(f"  kill {i}: {place}")
    assert kills >= 3
    assert sorted(records) == sorted(reference)  # exactly the records an uninterrupted reproduce makes
    assert sorted(exported) == sorted(finished(ref / "out" / "records"))
    assert not partial and duplicated == 0
    assert not left, left
    assert not kernels, kernels
    assert all(not e for e in errors.values()), errors
    assert sorted(state) == sorted(NOTEBOOKS)
    for run_id, record in records.items():  # same config and seed: the same record
        assert comparable(record) == comparable(reference[run_id]), run_id
