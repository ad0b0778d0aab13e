"""The Python-level guard (layers 3 and 4) that runs as the child's ``__main__``.

It sets the rlimits, then patches file, network, process and signal functions so that
ordinary mistakes become a readable ``PermissionError`` before the candidate runs.
Why the limits are set here rather than in ``preexec_fn``: see the package docstring.
"""

from __future__ import annotations

import math
import os

from ussafety.evaluate.sandbox.results import _CANDIDATE, _RUNNER

# The prelude runs as the child's __main__; argv: candidate path, memory bytes,
# cpu seconds, file-size bytes, nproc limit (-1 = do not set), max_procs.
_PRELUDE = r"""
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
"""


def _write_code(folder: str, code: str) -> None:
    """The runner and the candidate, readable by the sandbox's uid (not secret)."""
    for name, text in ((_RUNNER, _PRELUDE), (_CANDIDATE, code)):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o644)
    os.chmod(folder, 0o755)


def _prelude_args(
    folder: str, memory_mb: int, timeout_s: float, file_size_mb: int, nproc: int, max_procs: int
) -> list[str]:
    return [
        os.path.join(folder, _RUNNER),
        os.path.join(folder, _CANDIDATE),
        str(memory_mb * 1024 * 1024),
        str(math.ceil(timeout_s) + 1),
        str(file_size_mb * 1024 * 1024),
        str(nproc),
        str(max_procs),
    ]
