"""OS isolation with bubblewrap: the command line, the self-test, the refusal without it.

Layers 1 and 2 of the package docstring (namespaces, read-only binds, sized tmpfs, an
unprivileged uid); why bubblewrap rather than ``unshare`` or nsjail is explained there.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from ussafety.evaluate.sandbox.prelude import _prelude_args, _write_code
from ussafety.evaluate.sandbox.process import _classify, _execute, _python_executable
from ussafety.evaluate.sandbox.results import (
    _BOX,
    _CODE,
    _NOBODY,
    _ROOT_UID_BASE,
    _SANDBOX_ENV,
    ALLOW_UNISOLATED_ENV,
    Isolation,
    SandboxResult,
    SandboxUnavailable,
    Status,
)

log = logging.getLogger(__package__)  # the package's logger, as before the split


def _ro_bind(src: str, dest: str, made: set[str]) -> list[str]:
    """A read-only bind of ``src`` on ``dest``, with ``dest``'s parents traversable.

    bwrap creates missing parents with mode 0700 (0.8), which the sandbox's
    unprivileged uid could not traverse (``/etc`` for ``/etc/ld.so.cache``, ``/root``
    for a pyenv interpreter), so they are created first as plain 0755 folders.
    """
    args: list[str] = []
    parent = os.path.dirname(dest)
    chain = []
    while parent not in ("/", "") and parent not in made:
        chain.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(chain):
        args += ["--perms", "0755", "--dir", folder]
        made.add(folder)
    return [*args, "--ro-bind", src, dest]


def _system_binds(made: set[str]) -> tuple[list[str], list[str]]:
    """bwrap arguments for the read-only system tree, and the host paths they cover.

    Only what the dynamic loader and Python need: ``/usr``, the ``/bin``, ``/lib*``
    directories (as symlinks on merged-/usr systems), the loader's cache and the
    ``/etc/alternatives`` links. Not ``/etc`` as a whole (``passwd``, credentials),
    nor ``/root``, ``/home``, ``/tmp`` or the project.
    """
    args, covered = _ro_bind("/usr", "/usr", made), ["/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += _ro_bind(top, top, made)
            covered.append(top)
    for path in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        if os.path.exists(path):
            args += _ro_bind(path, path, made)
    return args, covered


def _python_binds(executable: str, covered: list[str], made: set[str]) -> list[str]:
    """Read-only binds of the interpreter's installation when outside the system tree.

    Bound at the same path, as the interpreter finds its standard library and
    ``libpython`` (RUNPATH) by absolute paths. Only the prefix is bound, so with a
    pyenv install under ``/root`` the rest of ``/root`` stays invisible.
    """
    args: list[str] = []
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(os.path.dirname(os.path.dirname(executable)))
    for path in sorted(prefixes):
        if path == "/" or any(path == c or path.startswith(c + "/") for c in covered):
            continue
        args += _ro_bind(path, path, made)
        covered.append(path)
    return args


def _bwrap_argv(bwrap: str, code_dir: str, disk_bytes: int, python_argv: list[str]) -> list[str]:
    """The bwrap command line that runs ``python_argv`` (see the package docstring)."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
        if setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) is missing: cannot drop root")
        uid = _ROOT_UID_BASE + secrets.randbelow(1 << 24)
        # no user namespace: it would map the sandbox to host root, for which the
        # kernel ignores RLIMIT_NPROC; the command drops to a fresh uid instead
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        drop = [
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
            "--",
            setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    else:
        namespaces = [
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(_NOBODY),
            "--gid",
            str(_NOBODY),
            "--disable-userns",
        ]
        drop = ["--"]
    made: set[str] = set()
    system, covered = _system_binds(made)
    env: list[str] = []
    for key, value in _SANDBOX_ENV.items():
        env += ["--setenv", key, value]
    return [
        bwrap,
        *namespaces,
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        *system,
        *_python_binds(python_argv[0], covered, made),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--ro-bind",
        code_dir,
        _CODE,
        "--perms",
        "1777",
        "--size",
        str(disk_bytes),
        "--tmpfs",
        _BOX,
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        _BOX,
        "--clearenv",
        *env,
        *drop,
        *python_argv,
    ]


_SELF_TEST = "import os\nprint('isolated', os.getuid(), os.getpid())\n"
_BWRAP_OPTIONS = (
    "--size",
    "--perms",
    "--remount-ro",
    "--clearenv",
    "--die-with-parent",
    "--new-session",
    "--disable-userns",
)


def _run_isolated(
    bwrap: str, code: str, timeout_s: float, memory_mb: int, max_procs: int, file_size_mb: int, disk_mb: int
) -> SandboxResult:
    """Run ``code`` under bubblewrap; the host folder only holds the code, read-only."""
    folder = tempfile.mkdtemp(prefix="ussafety_sbx_")
    try:
        _write_code(folder, code)
        # inside a user namespace bwrap's init runs as the sandbox uid and counts
        nproc = max_procs if os.geteuid() == 0 else max_procs + 1
        python = [
            _python_executable(),
            "-I",
            "-S",
            *_prelude_args(_CODE, memory_mb, timeout_s, file_size_mb, nproc, max_procs),
        ]
        argv = _bwrap_argv(bwrap, folder, disk_mb * 1024 * 1024, python)
        returncode, timed_out, stdout, stderr, wall = _execute(
            argv, "/", {"PATH": "/usr/bin:/bin"}, timeout_s, isolated=True
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if returncode > 128:  # bwrap reports a death by signal N as 128 + N
        returncode = -(returncode - 128)
    if returncode == 1 and stderr.startswith("bwrap:"):
        status: Status = "error"  # bwrap itself failed to set up the sandbox
    else:
        status = _classify(returncode, timed_out, stderr)
    return SandboxResult(status == "passed", status, stdout, stderr, wall, isolated=True)


def _probe_isolation(bwrap: str | None) -> Isolation:
    """Check that ``bwrap`` exists, is recent enough and really isolates a program.

    The self-test runs a tiny program through the same code path as every call and
    checks, from its output, that it ran as a non-root uid in its own PID namespace
    (pid 2: bwrap's init is 1), so a kernel without the needed namespaces, a
    container without the privileges, or an AppArmor policy against user namespaces
    is found once instead of failing every program.
    """
    if bwrap is None:
        return Isolation(False, "bubblewrap (bwrap) is not installed")
    try:
        shown = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(False, f"{bwrap} --help failed: {exc}", bwrap)
    missing = [opt for opt in _BWRAP_OPTIONS if opt not in shown.stdout + shown.stderr]
    if missing:
        return Isolation(False, f"{bwrap} is too old (no {', '.join(missing)}); bubblewrap >= 0.8 is needed", bwrap)
    try:
        result = _run_isolated(bwrap, _SELF_TEST, timeout_s=30.0, memory_mb=256, max_procs=1, file_size_mb=1, disk_mb=1)
    except SandboxUnavailable as exc:
        return Isolation(False, str(exc), bwrap)
    words = result.stdout_tail.split()
    if result.status != "passed" or len(words) != 3 or words[0] != "isolated" or words[1] == "0" or words[2] != "2":
        why = (result.stderr_tail or result.stdout_tail).strip()[-400:]
        return Isolation(False, f"the bubblewrap self-test failed ({result.status}): {why}", bwrap)
    return Isolation(True, f"bubblewrap ({bwrap}): sandbox uid {words[1]}, own PID namespace", bwrap)


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Whether generated code can run under OS isolation here (checked once per process)."""
    return _probe_isolation(shutil.which("bwrap"))


def _allowed_unisolated(allow_unisolated: bool | None) -> bool:
    if allow_unisolated is not None:
        return allow_unisolated
    return os.environ.get(ALLOW_UNISOLATED_ENV, "").strip().lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def _warn_unisolated(reason: str) -> None:
    log.warning(
        "running generated code WITHOUT OS isolation (%s): only rlimits and the "
        "Python-level guard apply, which hostile code can escape",
        reason,
    )
