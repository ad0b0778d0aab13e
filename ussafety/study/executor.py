"""Where runs execute: here, one after the other (``local``), or as Ray tasks (``ray``).

``local`` is :func:`ussafety.study.grid.run_grid`'s loop: sequential, finished runs skipped, a
failing run does not stop the others. ``ray`` sends each run without a record to the cluster
at ``$RAY_ADDRESS`` (or a local one) as one task with the CPUs/GPUs its config needs
(:func:`run_resources`). Why it is safe to kill and retry (docs/cluster.md):

* records are keyed by run id and written atomically by :func:`ussafety.records.save_record`
  on shared storage: a killed task leaves the whole record or none, so a retry (Ray
  ``max_retries``, for a dead worker or node) overwrites nothing partial, and a retry that
  finds the record returns it;
* the worker refuses to run under another id than the driver's (:func:`worker_ids`);
* caches two runs share (aligned base, an SFT training reused by merges) are written by one
  task before the runs that read them start (:func:`cache_stages`);
* every attempt appends a line to ``<runs>/.executor/<run id>.jsonl``: how often it was tried.

A Python exception is not retried (it would fail again): it is reported at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from ussafety.config import RunConfig, run_id
from ussafety.paths import runs_dir
from ussafety.records import Record, load_record

EXECUTORS: tuple[str, ...] = ("local", "ray")
ATTEMPTS_DIR = ".executor"
KILL_ENV = "USSAFETY_EXECUTOR_TEST_KILL"
"""Test hook: a JSON list of ``{"run_id": ..., "stage": "evaluate" | "save", "marker": path}``.
The first attempt of each such run SIGKILLs its own worker process when evaluation starts
(``evaluate``) or halfway through writing the record's temporary file (``save``); ``marker``
(created before the kill) makes later attempts run normally."""

Status = Literal["skipped", "done", "failed"]


@dataclass(frozen=True)
class Resources:
    """What one run asks the Ray scheduler for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def ray_options(self) -> dict[str, float]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def run_resources(cfg: RunConfig, cpus: float = 1.0, gpus_for_auto: float = 0.0) -> Resources:
    """The resources ``cfg`` needs: a GPU when its model settings only run on one
    (``backend: unsloth``, ``dtype: bfloat16/float16``, which are ~25x slower on CPU), none
    for ``backend: peft`` with ``dtype: float32``, and ``gpus_for_auto`` when they are
    ``auto`` (they resolve on the worker: give GPU clusters explicit settings, see
    docs/cluster.md)."""
    m = cfg.model
    if m.backend == "unsloth" or m.dtype in ("bfloat16", "float16"):
        gpus = 1.0
    elif m.dtype == "float32" or (m.backend == "peft" and m.dtype != "auto"):
        gpus = 0.0
    else:
        gpus = gpus_for_auto
    return Resources(num_cpus=cpus, num_gpus=gpus)


@dataclass
class Outcome:
    """What happened to one run."""

    run_id: str
    label: str
    status: Status
    attempts: int = 0
    error: str | None = None
    wall_s: float | None = None
    host: str | None = None


@dataclass
class Execution:
    """The outcome of every run (in the order given) and the records of the finished ones."""

    outcomes: list[Outcome]
    records: list[Record] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def retried(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.attempts > 1]

    def summary(self) -> dict[str, Any]:
        return {
            "runs": len(self.outcomes),
            **{s: sum(o.status == s for o in self.outcomes) for s in ("done", "skipped", "failed")},
            "retried": {o.run_id: o.attempts for o in self.retried},
            "failed_runs": {o.run_id: o.error for o in self.failures},
        }


def attempts_path(rid: str, root: Path) -> Path:
    return root / ATTEMPTS_DIR / f"{rid}.jsonl"


def log_attempt(rid: str, root: Path) -> None:
    """Append this attempt (one line, one write) to the run's attempts log."""
    path = attempts_path(rid, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def attempts(rid: str, root: Path) -> list[dict[str, Any]]:
    path = attempts_path(rid, root)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def execute_local(cfgs: Sequence[RunConfig], root: Path | None = None, out: TextIO | None = None) -> Execution:
    """Each run in turn, in this process (``run_grid``'s loop, on configs)."""
    from ussafety.pipeline import run

    out = out or sys.stdout
    root = root or runs_dir()
    result = Execution(outcomes=[])
    for i, cfg in enumerate(cfgs, 1):
        rid = run_id(cfg)
        existing = load_record(rid, root)
        if existing is not None:
            print(f"[{i}/{len(cfgs)}] {rid}: finished, skipped", file=out, flush=True)
            result.outcomes.append(Outcome(rid, cfg.name, "skipped"))
            result.records.append(existing)
            continue
        t0 = time.perf_counter()
        log_attempt(rid, root)
        try:
            result.records.append(run(cfg, root=root))
        except Exception as err:
            result.outcomes.append(Outcome(rid, cfg.name, "failed", 1, f"{type(err).__name__}: {err}"))
            print(f"[{i}/{len(cfgs)}] {rid}: FAILED: {err}", file=out, flush=True)
            continue
        wall = time.perf_counter() - t0
        result.outcomes.append(Outcome(rid, cfg.name, "done", 1, wall_s=wall, host=socket.gethostname()))
        print(f"[{i}/{len(cfgs)}] {rid}: done in {wall:.0f} s", file=out, flush=True)
    return result


def _arm_test_kill(rid: str) -> list[tuple[Any, str, Any]]:
    """The :data:`KILL_ENV` hook: patches to undo (none unless this attempt is to be killed)."""
    specs = [s for s in json.loads(os.environ.get(KILL_ENV) or "[]") if s["run_id"] == rid]
    if not specs or Path(specs[0]["marker"]).exists():
        return []
    spec = specs[0]
    Path(spec["marker"]).write_text(str(os.getpid()))
    import ussafety.pipeline as pipeline
    import ussafety.records.store as store

    def die(*_: Any, **__: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    def half_written(path: Path, text: str) -> Path:
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, text[: len(text) // 2].encode())
        os.fsync(fd)
        return die()

    target, name, new = (
        (pipeline, "evaluate_model", die) if spec["stage"] == "evaluate" else (store, "write_text_atomic", half_written)
    )
    undo = [(target, name, getattr(target, name))]
    setattr(target, name, new)
    return undo


def _worker_setup(env: dict[str, str]) -> None:
    """The driver's ``USSAFETY_*`` settings (data mirror, cache, runs) on this worker; Ray
    sets ``OMP_NUM_THREADS`` to the task's CPUs, which torch follows."""
    os.environ.update(env)


def _align_task(cfg_data: dict[str, Any], env: dict[str, str]) -> str | None:
    """Build (or find) the aligned base runs share; an error is returned, not raised, so the
    runs waiting for it still start (and report the error themselves)."""
    _worker_setup(env)
    from ussafety.train.align import aligned_base

    try:
        return aligned_base(RunConfig.model_validate(cfg_data))[0]
    except Exception as err:
        return f"error: {type(err).__name__}: {err}"


def _run_task(
    cfg_data: dict[str, Any], expected_id: str, root: str, env: dict[str, str], *after: Any
) -> dict[str, Any]:
    """One run on a worker; ``after`` are the cache stages it waits for (Ray resolves them
    before the task starts). Returns a small outcome: the record itself is on shared storage."""
    _worker_setup(env)
    from ussafety.pipeline import run

    t0 = time.perf_counter()
    base: dict[str, Any] = {"run_id": expected_id, "host": socket.gethostname()}
    try:
        cfg = RunConfig.model_validate(cfg_data)
        rid = run_id(cfg)
        if rid != expected_id:
            raise RuntimeError(
                f"this worker gives the run id {rid}, the driver {expected_id}: "
                "model.backend/dtype 'auto' (or a different upload file) resolve "
                "differently here; set them explicitly"
            )
        log_attempt(rid, Path(root))
        undo = _arm_test_kill(rid)
        try:
            run(cfg, root=Path(root))
        finally:
            for target, name, old in undo:
                setattr(target, name, old)
    except Exception as err:
        return {**base, "status": "failed", "error": f"{type(err).__name__}: {err}"}
    return {**base, "status": "done", "wall_s": time.perf_counter() - t0}


def _trains_like_sft(cfg: RunConfig) -> bool:
    from ussafety.methods import REGISTRY, load_all, trains_like_sft

    load_all()
    names = [cfg.method.name] + ([cfg.merge.name] if cfg.merge.name else [])
    return all(trains_like_sft(REGISTRY[n]) for n in names)


def cache_stages(cfgs: Sequence[RunConfig], ids: Sequence[str]) -> tuple[dict[str, RunConfig], dict[str, str]]:
    """What must be written once before runs read it: the aligned bases to build
    (``{align_key: a config that builds it}``, those not yet cached) and, per run id (``ids``,
    one per config), the run whose plain SFT training it reuses (the first of its training
    group, when that is not cached yet)."""
    from ussafety.config import align_key, training_key
    from ussafety.pipeline import sft_cache_dir
    from ussafety.train.align import aligned_dir

    bases: dict[str, RunConfig] = {}
    first_of_group: dict[str, str] = {}
    waits_for: dict[str, str] = {}
    for cfg, rid in zip(cfgs, ids):
        if cfg.align.enabled and not (aligned_dir(cfg) / "alignment.json").is_file():
            bases.setdefault(align_key(cfg), cfg)
        fine_tunes = bool(cfg.task.name or cfg.task.upload)
        if fine_tunes and _trains_like_sft(cfg) and not (sft_cache_dir(cfg) / "train.json").is_file():
            first = first_of_group.setdefault(training_key(cfg), rid)
            if first != rid:
                waits_for[rid] = first
    return bases, waits_for


def _ids_task(cfg_data: list[dict[str, Any]]) -> list[str]:
    """Run ids as a worker computes them (``auto`` model settings resolve to its hardware)."""
    return [run_id(RunConfig.model_validate(d)) for d in cfg_data]


def worker_ids(ray: Any, cfgs: Sequence[RunConfig], resources: Sequence[Resources]) -> list[str]:
    """Each config's run id where it will run: on the driver, except for GPU runs with an
    ``auto`` model setting, whose ids one probe task per resource shape computes on a worker."""
    ids = [run_id(c) for c in cfgs]
    probe: dict[Resources, list[int]] = {}
    for i, (cfg, res) in enumerate(zip(cfgs, resources)):
        if res.num_gpus > 0 and "auto" in (cfg.model.backend, cfg.model.dtype):
            probe.setdefault(res, []).append(i)
    for res, idx in probe.items():
        task = ray.remote(_ids_task).options(**res.ray_options())
        for i, rid in zip(idx, ray.get(task.remote([cfgs[i].to_dict() for i in idx]))):
            ids[i] = rid
    return ids


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'ussafety[dist]'") from None
    return ray


def execute_ray(
    cfgs: Sequence[RunConfig],
    root: Path | None = None,
    out: TextIO | None = None,
    max_retries: int = 2,
    cpus_per_run: float = 1.0,
    gpus_for_auto: float | None = None,
    address: str | None = None,
) -> Execution:
    """Every run without a record as a Ray task (see the module docstring); waits for all.
    ``gpus_for_auto``: GPUs for a run whose model settings are ``auto`` (default: 1 when the
    cluster has GPUs, else 0)."""
    from ussafety.config import align_key

    ray = _ray()
    out = out or sys.stdout
    root = (root or runs_dir()).resolve()
    if not ray.is_initialized():
        ray.init(address=address)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_for_auto is None:
        gpus_for_auto = 1.0 if cluster_gpus else 0.0
    env = {k: v for k, v in os.environ.items() if k.startswith("USSAFETY_")}
    resources = [run_resources(c, cpus_per_run, gpus_for_auto) for c in cfgs]
    if any(r.num_gpus > cluster_gpus for r in resources):  # Ray would wait for it forever
        raise RuntimeError(
            f"a run asks for a GPU (model.backend unsloth or dtype bfloat16/float16) and the Ray "
            f"cluster has {cluster_gpus:g}: start GPU workers, or use backend peft, dtype float32"
        )
    ids = worker_ids(ray, cfgs, resources)
    outcomes: dict[str, Outcome] = {}
    pending: dict[str, tuple[RunConfig, Resources]] = {}
    for cfg, rid, res in zip(cfgs, ids, resources):
        if rid in outcomes or rid in pending:
            continue
        if load_record(rid, root) is not None:
            outcomes[rid] = Outcome(rid, cfg.name, "skipped")
            print(f"{rid}: finished, skipped", file=out, flush=True)
        else:
            pending[rid] = (cfg, res)
    bases, waits_for = cache_stages([c for c, _ in pending.values()], list(pending))
    align_remote = ray.remote(max_retries=max_retries)(_align_task)
    run_remote = ray.remote(max_retries=max_retries)(_run_task)
    base_res = {align_key(c): r for c, r in pending.values()}
    align_refs = {
        k: align_remote.options(**base_res[k].ray_options()).remote(c.to_dict(), env) for k, c in bases.items()
    }
    refs: dict[Any, tuple[str, RunConfig]] = {}
    by_id: dict[str, Any] = {}
    # a run waiting for another's SFT training comes after it in submission order
    for rid, (cfg, res) in sorted(pending.items(), key=lambda item: item[0] in waits_for):
        after = [align_refs[k] for k in [align_key(cfg)] if cfg.align.enabled and k in align_refs]
        after += [by_id[waits_for[rid]]] if rid in waits_for else []
        ref = run_remote.options(**res.ray_options()).remote(cfg.to_dict(), rid, str(root), env, *after)
        refs[ref], by_id[rid] = (rid, cfg), ref
        print(f"{rid}: submitted", file=out, flush=True)
    left = list(refs)
    while left:
        ready, left = ray.wait(left, num_returns=1)
        rid, cfg = refs[ready[0]]
        try:
            got: dict[str, Any] = ray.get(ready[0])
        except ray.exceptions.RayError as err:  # retries used up, or a task it waited for crashed
            got = {"status": "failed", "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
        n = len(attempts(rid, root))
        outcomes[rid] = Outcome(rid, cfg.name, got["status"], n, got.get("error"), got.get("wall_s"), got.get("host"))
        what = (
            f"done in {got['wall_s']:.0f} s on {got['host']}" if got["status"] == "done" else f"FAILED: {got['error']}"
        )
        print(f"{rid}: {what} (attempts: {n})", file=out, flush=True)
    result = Execution(outcomes=[outcomes[r] for r in dict.fromkeys(ids)])
    for o in result.outcomes:
        if o.status != "failed":
            rec = load_record(o.run_id, root)
            if rec is None:  # the worker wrote it somewhere this machine does not see
                o.status, o.error = "failed", f"no record under {root} (is the runs folder shared storage?)"
            else:
                result.records.append(rec)
    return result


def execute(
    cfgs: Sequence[RunConfig],
    executor: str = "local",
    root: Path | None = None,
    out: TextIO | None = None,
    **ray_options: Any,
) -> Execution:
    """Run ``cfgs`` with ``executor`` (``local`` or ``ray``); see the module docstring."""
    if executor == "local":
        return execute_local(cfgs, root, out)
    if executor == "ray":
        return execute_ray(cfgs, root, out, **ray_options)
    raise ValueError(f"unknown executor {executor!r} (one of: {', '.join(EXECUTORS)})")
