"""The run executors: ``local`` (run_grid's loop) and ``ray`` (one Ray task per run).

The Ray test runs the whole smoke study (the tiny random model) on a local two-CPU Ray
cluster while the test hook SIGKILLs the worker process of two runs, one when its
evaluation starts and one halfway through writing its record, and then a third run whose
task has no retries left. Evidence printed for the CI log: the kills, each run's attempts,
the records.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ussafety.cli.main import main
from ussafety.config import load_config, run_id
from ussafety.paths import PROJECT_ROOT
from ussafety.study import executor
from ussafety.study.grid import expand, unique_runs

SMOKE = PROJECT_ROOT / "params" / "presets" / "smoke.yaml"


def smoke(**overrides: object) -> object:
    return load_config(SMOKE, overrides)


@pytest.mark.parametrize(
    ("model", "gpus"),
    [
        ({"backend": "unsloth"}, 1.0),
        ({"dtype": "bfloat16"}, 1.0),
        ({"backend": "peft", "dtype": "float32"}, 0.0),
        ({"dtype": "float32"}, 0.0),
        ({}, 0.5),  # auto/auto: what the caller says an auto run gets
    ],
)
def test_run_resources_follow_the_model_settings(model: dict, gpus: float) -> None:
    cfg = smoke(model={"name": "tiny-random", **model})
    res = executor.run_resources(cfg, cpus=3, gpus_for_auto=0.5)
    assert res == executor.Resources(num_cpus=3, num_gpus=gpus)
    assert res.ray_options() == {"num_cpus": 3, "num_gpus": gpus}


def test_cache_stages_write_each_shared_cache_once(tmp_path, monkeypatch) -> None:
    """One aligned base for the smoke study; a merge waits for the SFT run it reuses."""
    monkeypatch.setenv("USSAFETY_CACHE", str(tmp_path / "cache"))  # nothing built by earlier tests
    cfgs = [r.cfg for r in unique_runs(expand("smoke"))]
    bases, waits_for = executor.cache_stages(cfgs, [run_id(c) for c in cfgs])
    assert len(bases) == 1
    by_id = {run_id(c): c for c in cfgs}
    assert waits_for, "the smoke study has merges that reuse an SFT training"
    for waiting, first in waits_for.items():
        assert by_id[waiting].merge.name == "merge_linear"
        assert by_id[first].method.name == "sft" and by_id[first].merge.name is None
        assert first not in waits_for


class FakeRay:
    """Ray's remote/options/get: a task runs here, as on a CUDA worker that has Unsloth."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gpus: float = 1.0) -> None:
        self.monkeypatch, self.gpus = monkeypatch, gpus
        self.calls: list[dict[str, float]] = []

    def remote(self, fn: Callable[..., object]) -> FakeRay:
        self.fn = fn
        return self

    def options(self, **opts: float) -> FakeTask:
        self.calls.append(opts)
        return FakeTask(self)

    def get(self, value: object) -> object:
        return value

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "GPU": self.gpus}

    def is_initialized(self) -> bool:
        return True


class FakeTask:
    def __init__(self, ray: FakeRay) -> None:
        self.ray = ray

    def remote(self, *args: object) -> object:
        from ussafety.config import identity

        with self.ray.monkeypatch.context() as m:
            m.setattr(identity, "_cuda", lambda: True)
            m.setattr(identity, "_unsloth_installed", lambda: True)
            return self.ray.fn(*args)


def test_gpu_runs_with_auto_settings_take_their_id_from_a_gpu_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU driver, ``auto`` resolves to peft/float32; a GPU worker records the run as
    unsloth/bfloat16: the driver must skip and expect the worker's id."""
    fake = FakeRay(monkeypatch)
    cfgs = [smoke(), smoke(model={"name": "tiny-random", "backend": "peft", "dtype": "float32"})]
    resources = [executor.run_resources(c, gpus_for_auto=1.0) for c in cfgs]
    ids = executor.worker_ids(fake, cfgs, resources)
    assert ids[1] == run_id(cfgs[1])  # explicit CPU settings: the driver's id, no probe
    assert fake.calls == [{"num_cpus": 1.0, "num_gpus": 1.0}]  # one probe, for the auto run
    assert ids[0] != run_id(cfgs[0])
    assert ids[0] == run_id(smoke(model={"name": "tiny-random", "backend": "unsloth", "dtype": "bfloat16"}))


def test_a_gpu_run_on_a_cluster_without_gpus_is_refused_not_queued_forever(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeRay(monkeypatch, gpus=0)
    monkeypatch.setattr(executor, "_ray", lambda: fake)
    with pytest.raises(RuntimeError, match="asks for a GPU"):
        executor.execute([smoke(model={"name": "tiny-random", "dtype": "bfloat16"})], "ray", root=tmp_path)


def test_run_force_with_the_ray_executor_is_refused_before_ray_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(SMOKE), "--executor", "ray", "--force"]) == 2
    assert "--force is not available with --executor ray" in capsys.readouterr().err


def test_unknown_executor_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown executor"):
        executor.execute([], "slurm")


def records_on_disk(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/record.json"))}


def outcome(record: dict) -> dict:
    return {k: record[k] for k in ("generations", "metrics", "config", "data_sha256")}


def test_ray_smoke_study_with_killed_workers_leaves_one_whole_record_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    root = tmp_path / "runs"
    cfgs = [r.cfg for r in unique_runs(expand("smoke"))]
    ids = [run_id(c) for c in cfgs]
    killed = {
        "evaluate": next(i for i in ids if i.startswith("der-")),
        "save": next(i for i in ids if i.startswith("ewc-")),
    }
    markers = {stage: tmp_path / f"killed-{stage}" for stage in killed}
    out = io.StringIO()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # Round 1: the workers of two runs are killed once each; both are retried (Ray max_retries).
        monkeypatch.setenv(
            executor.KILL_ENV,
            json.dumps(
                [{"run_id": rid, "stage": stage, "marker": str(markers[stage])} for stage, rid in killed.items()]
            ),
        )
        first = executor.execute(cfgs, "ray", root=root, out=out, max_retries=2)
        assert not first.failures, out.getvalue()
        assert all(m.is_file() for m in markers.values()), "a kill did not happen"
        assert {o.run_id: o.attempts for o in first.retried} == {rid: 2 for rid in killed.values()}

        # Round 2: resume; every run is finished and skipped, no task starts.
        again = executor.execute(cfgs, "ray", root=root, out=out)
        assert {o.status for o in again.outcomes} == {"skipped"}

        # Round 3: a run killed with no retries left is reported failed, without a record.
        victim = next(i for i in ids if i.startswith("sft-sst2-p0.5"))
        (root / victim / "record.json").unlink()
        monkeypatch.setenv(
            executor.KILL_ENV,
            json.dumps([{"run_id": victim, "stage": "evaluate", "marker": str(tmp_path / "killed-final")}]),
        )
        failed = executor.execute(cfgs, "ray", root=root, out=out, max_retries=0)
        assert [o.run_id for o in failed.failures] == [victim]
        assert "Worker" in (failed.failures[0].error or ""), failed.failures[0].error
        assert not (root / victim / "record.json").exists()

        # Round 4: resume; the failed run completes, nothing else runs.
        monkeypatch.delenv(executor.KILL_ENV)
        final = executor.execute(cfgs, "ray", root=root, out=out)
        assert [o.run_id for o in final.outcomes if o.status == "done"] == [victim]

        # The command line: `ussafety run --executor ray` on the same cluster, a finished run and a new one.
        new = tmp_path / "seed7.yaml"
        new.write_text(f"extends: {SMOKE}\nseed: 7\n")
        capsys.readouterr()
        assert main(["run", str(SMOKE), str(new), "--executor", "ray", "--runs", str(root)]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert lines[-1]["done"] == 1 and lines[-1]["skipped"] == 1 and lines[-1]["failed"] == 0
        ids.append(run_id(load_config(new)))
    finally:
        ray.shutdown()

    records = records_on_disk(root)
    assert sorted(records) == sorted(set(ids))  # exactly one record per run, none extra
    for rid, rec in records.items():
        assert rec["run_id"] == rid and rec["finished"]
    leftovers = sorted(p.name for p in root.glob("*/.record.json.*.tmp"))
    assert leftovers == []  # the save kill's half-written temp file: never read, removed when the retry began
    tries = {rid: len(executor.attempts(rid, root)) for rid in set(ids)}
    assert tries[killed["evaluate"]] == 2 and tries[killed["save"]] == 2
    assert tries[victim] == 3  # 1 (before the record was removed) + killed + resumed
    assert all(n == 1 for rid, n in tries.items() if rid not in (*killed.values(), victim))
    assert {o.run_id: o.attempts for o in final.outcomes if o.status == "done"} == {victim: 3}

    # A killed and retried run computes what an uninterrupted local run computes.
    local_root = tmp_path / "local"
    by_id = {run_id(c): c for c in cfgs}
    local = executor.execute(
        [by_id[killed["evaluate"]], by_id[killed["save"]]], "local", root=local_root, out=io.StringIO()
    )
    assert [o.status for o in local.outcomes] == ["done", "done"]
    for rid, rec in records_on_disk(local_root).items():
        assert outcome(rec) == outcome(records[rid])
    print(
        f"ray executor: {len(records)} runs, 3 SIGKILLs ({', '.join(f'{s}: {r}' for s, r in killed.items())}, "
        f"no retries: {victim}); attempts per run {json.dumps(tries)}; temp files left: {len(leftovers)} "
        f"(the save kill's half-written one removed by its retry); {len(records)} records, one per run"
    )
