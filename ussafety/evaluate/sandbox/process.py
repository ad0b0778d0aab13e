"""Starting the child, the wall-clock timeout, killing what is left, and the status."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO

from ussafety.evaluate.sandbox.results import _KILL_WAIT_S, _TAIL_CHARS, EXIT_MEMORY, EXIT_SYNTAX, Status


def _python_executable() -> str:
    """The base interpreter (not a venv's launcher: the venv is not mounted inside)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _tail(fh: IO[bytes]) -> str:
    """The last characters of a child's output file."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - 4 * _TAIL_CHARS))
    return fh.read().decode("utf-8", errors="replace")[-_TAIL_CHARS:]


def _execute(
    argv: list[str], cwd: str, env: dict[str, str], timeout_s: float, isolated: bool
) -> tuple[int, bool, str, str, float]:
    """Start ``argv`` in a new session; (returncode, timed_out, stdout, stderr, wall)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return -1, False, "", f"sandbox could not start: {exc}", time.monotonic() - start
        timed_out = _wait_then_kill(proc, timeout_s, isolated)
        wall = time.monotonic() - start
        return proc.returncode, timed_out, _tail(out), _tail(err), wall


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _kill_children(pid: int) -> None:
    """SIGKILL the direct children of ``pid``: under bwrap, the PID namespace's init.

    The kernel then kills every process of the namespace before init's exit is
    reported, so the sandbox is gone once bwrap has returned. A pidfd pins the child
    found, so a recycled pid cannot be hit.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _parent_pid(int(entry)) != pid:
            continue
        try:
            fd = os.pidfd_open(int(entry))
        except OSError:
            continue
        try:
            if _parent_pid(int(entry)) == pid:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _exited(proc: subprocess.Popen, seconds: float) -> bool:
    """Poll until ``proc`` has exited (left unreaped: WNOWAIT) or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    delay = 0.002
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _wait_then_kill(proc: subprocess.Popen, timeout_s: float, isolated: bool) -> bool:
    """Wait for the main process, then kill whatever is left; True on timeout.

    Under bwrap a timeout kills the PID namespace's init (:func:`_kill_children`) and
    waits for bwrap to report, by which time the kernel has killed every process of
    the namespace. Then (and without bwrap, directly) the whole process group gets
    SIGKILL while the main process is still an unreaped zombie, so its group id
    cannot have been reused by then.
    """
    timed_out = not _exited(proc, timeout_s)
    if timed_out and isolated:
        _kill_children(proc.pid)
        _exited(proc, _KILL_WAIT_S)
    _kill_group(proc.pid)
    proc.wait()
    return timed_out


def _classify(returncode: int, timed_out: bool, stderr: str) -> Status:
    """The status from the exit code (negative: killed by that signal)."""
    cpu_signals = {-signal.SIGXCPU, -signal.SIGKILL}
    if timed_out or returncode in cpu_signals:
        return "timeout"
    if returncode == EXIT_MEMORY or (returncode != 0 and "MemoryError" in stderr):
        return "memory"
    if returncode == 0:
        return "passed"
    if returncode == EXIT_SYNTAX or returncode < 0:
        return "error"
    return "failed"
