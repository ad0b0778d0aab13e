"""The sandbox's result types, exit codes and shared constants (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory", "error"]

#: Exit codes the prelude uses to tell the parent what happened.
EXIT_SYNTAX = 86  # the code does not compile
EXIT_MEMORY = 87  # MemoryError reached the top level
EXIT_EARLY = 88  # the code called sys.exit(0) before its end (tests would be skipped)

#: Setting this environment variable to 1 allows running generated code without
#: OS isolation where bubblewrap is unavailable (the Python-level guard only).
ALLOW_UNISOLATED_ENV = "USSAFETY_ALLOW_UNISOLATED_CODE"

_TAIL_CHARS = 4000
_RUNNER = "_ussafety_runner.py"
_CANDIDATE = "candidate.py"
_BOX = "/sandbox"  # the writable tmpfs inside the sandbox: cwd, HOME, TMPDIR
_CODE = "/code"  # the runner and the candidate, read-only
_SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": _BOX, "TMPDIR": _BOX, "LANG": "C.UTF-8"}
_ROOT_UID_BASE = 0x7000_0000  # sandbox uids when we are root: [base, base + 2**24)
_NOBODY = 65534  # the uid inside a user namespace when we are not root
_KILL_WAIT_S = 10.0  # how long the namespace may take to die after SIGKILL


class SandboxUnavailable(RuntimeError):
    """No OS isolation here and the caller did not opt in to running without it."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run.

    ``status``: ``passed`` the code ran to its end without an exception;
    ``failed`` it raised (AssertionError, PermissionError from a guard...) or
    exited early/non-zero; ``timeout`` wall-clock or CPU limit hit; ``memory``
    MemoryError (the address-space limit); ``error`` the code does not compile, the
    interpreter died from a signal, or the sandbox could not start it.
    ``isolated``: whether it ran inside bubblewrap (False only after an opt-in).
    """

    passed: bool
    status: Status
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    isolated: bool = True


@dataclass(frozen=True)
class Isolation:
    """Whether OS isolation works here (``available``) and why (``detail``)."""

    available: bool
    detail: str
    bwrap: str | None = None
