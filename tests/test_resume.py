"""Kill -9 at random points, resume, and check that nothing is lost, partial or duplicated,
and that the same config and seed give the same record (determinism on CPU).

The runs are the smoke preset's (the tiny random model), several in one `ussafety run`
command, so kills land during alignment, training, evaluation and record writing. The
counts are printed for the CI log.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    # finished runs are skipped on resume) up to `n_kills` times, then let it finish; every
    # start after the first is a resume. A start that finishes before its kill ends the loop.
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    rng = random.Random(1234)
    kills, resumes, n_kills = 0, 0, 5
    while True:
        proc = subprocess.Popen(
            command(files, runs), env=environment(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if kills < n_kills:
            try:
                proc.wait(timeout=rng.uniform(0.5, full_s / 2))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                resumes += 1
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
        break

    records = finished(runs)
    run_dirs = [p for p in runs.iterdir() if p.is_dir()]
    partial = [p.name for p in run_dirs if not (p / "record.json").is_file()]
    temp_files = [str(p) for p in runs.rglob("*.tmp")]
    duplicated = len(run_dirs) - len({p.name for p in run_dirs})
    print(
        f"kill -9: kills={kills} resumes={resumes} records={len(records)} partial={len(partial)} "
        f"duplicated={duplicated} temp_files={len(temp_files)} (one uninterrupted run: {full_s:.1f} s)"
    )
    assert kills >= 3
    assert sorted(records) == sorted(reference)  # exactly the records an uninterrupted run makes
    assert not partial and not temp_files and duplicated == 0
    for run_id, record in records.items():  # same config and seed: the same record
        assert comparable(record) == comparable(reference[run_id]), run_id
