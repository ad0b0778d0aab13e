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

The code is split by concept: :mod:`.results` (result types, exit codes, constants),
:mod:`.prelude` (the guard run in the child), :mod:`.process` (start, timeout, kill,
status), :mod:`.bubblewrap` (the command line, self-test, refusal) and :mod:`.runner`
(:func:`run_python`, :func:`humaneval_check`). This module only re-exports them.
"""

from ussafety.evaluate.sandbox.bubblewrap import isolation
from ussafety.evaluate.sandbox.results import (
    ALLOW_UNISOLATED_ENV,
    EXIT_EARLY,
    EXIT_MEMORY,
    EXIT_SYNTAX,
    Isolation,
    SandboxResult,
    SandboxUnavailable,
    Status,
)
from ussafety.evaluate.sandbox.runner import humaneval_check, run_python

__all__ = [
    "ALLOW_UNISOLATED_ENV",
    "EXIT_EARLY",
    "EXIT_MEMORY",
    "EXIT_SYNTAX",
    "Isolation",
    "SandboxResult",
    "SandboxUnavailable",
    "Status",
    "humaneval_check",
    "isolation",
    "run_python",
]
