"""How fast ``ussafety run`` refuses bad input: wall time of the whole command, per bad kind.

Each kind is one ``ussafety run PARAMS`` in a fresh process (interpreter start included, as
a user sees it), repeated ``--repeats`` times; the median and the max are printed and
written with the machine, its load average and what each refusal said. The kinds are the
tests' own: every bad config of ``tests/test_config.py`` (``BAD``: unknown key, wrong type,
unknown method, judge, task or data set, out-of-range values...), a missing params file, and
a params file training on each bad upload of ``tests/test_cli.py`` (``UPLOADS``: one per
problem kind, control tokens, NUL and an unterminated CSV quote among them). The target is
2 s per refusal; the tests check the deterministic part (exit 2, a clean message, torch never
imported), never a time.

``--code DIR`` times the package in DIR instead (a checkout of another commit, e.g.
``git worktree add /tmp/before HEAD~1``), for a before/after comparison on the same machine.

    python benchmarks/cli_fail_fast.py [--repeats 3] [--code DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from ussafety.records.store import git_state, package_versions, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
TARGET_S = 2.0


def test_module(name: str) -> ModuleType:
    """``tests/<name>.py`` (the bad kinds are defined once, in the tests)."""
    sys.path.insert(0, str(TESTS))  # test_cli imports test_config
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(folder: Path) -> dict[str, Path]:
    """``{kind: params file}`` for every bad kind, written under ``folder``."""
    cli = test_module("test_cli")
    out = {f"config: {kind}": cli.bad_config(folder, kind) for kind in sorted(cli.BAD)}
    out["config: missing params file"] = folder / "no_such_params.yaml"
    out.update({f"upload: {kind}": cli.bad_upload(folder, kind)[1] for kind in sorted(cli.UPLOADS)})
    return out


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return time.perf_counter() - start, proc


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}


def machine() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--code", type=Path, help="time the ussafety package in this folder instead of the installed one")
    ap.add_argument("--out", type=Path, default=ROOT / "paper_outputs" / "benchmarks" / "cli_fail_fast.json")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join([str(args.code.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    script = Path(sys.executable).parent / "ussafety"  # the console script a user runs
    run = [str(script) if script.is_file() else "ussafety", "run"]
    report: dict[str, Any] = {
        "what": "wall time of `ussafety run BAD` in a fresh process, per bad kind",
        "code": str(args.code.resolve()) if args.code else "installed",
        "git": git_state(),
        "packages": package_versions(),
        "machine": machine(),
        "repeats": args.repeats,
        "target_s": TARGET_S,
    }
    reference = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    report["reference"] = {
        name: summary([timed(cmd, env)[0] for _ in range(args.repeats)]) for name, cmd in reference.items()
    }
    kinds: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, params in cases(Path(tmp)).items():
            times, procs = [], []
            for _ in range(args.repeats):
                elapsed, proc = timed([*run, str(params)], env)
                times.append(elapsed)
                procs.append(proc)
            last = procs[-1]
            kinds[kind] = {
                **summary(times),
                "times_s": [round(t, 3) for t in times],
                "exit_codes": sorted({p.returncode for p in procs}),
                "clean": all("Traceback" not in p.stderr for p in procs),
                "message": last.stderr.strip().splitlines()[0][:240].replace(tmp, "<tmp>") if last.stderr else "",
            }
            print(
                f"{kind:42s} median {kinds[kind]['median_s']:.2f} s  max {kinds[kind]['max_s']:.2f} s  "
                f"exit {kinds[kind]['exit_codes']}"
            )
    report["kinds"] = kinds
    medians = [k["median_s"] for k in kinds.values()]
    report["overall"] = {
        "median_of_medians_s": round(statistics.median(medians), 3),
        "max_s": max(k["max_s"] for k in kinds.values()),
        "all_exit_2": all(k["exit_codes"] == [2] for k in kinds.values()),
        "all_clean": all(k["clean"] for k in kinds.values()),
        "within_target": all(k["max_s"] < TARGET_S for k in kinds.values()),
    }
    report["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps({"reference": report["reference"], "overall": report["overall"]}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
