"""The code sandbox: correct/wrong solutions, timeouts, memory, file, network, processes.

These tests check behaviour shared by both modes: with bubblewrap (the default) and,
where bwrap is not installed, the opt-in Python-level guard alone. The attacks on
the OS layer are in test_sandbox_hostile.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest

from ussafety.evaluate import sandbox
from ussafety.evaluate.sandbox import (
    ALLOW_UNISOLATED_ENV,
    Isolation,
    SandboxUnavailable,
    bubblewrap,
    humaneval_check,
    run_python,
    runner,
)
from ussafety.paths import PROJECT_ROOT

HAVE_BWRAP = shutil.which("bwrap") is not None


@pytest.fixture(autouse=True)
def _guard_only_without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without bwrap installed these tests check the guard alone (the documented opt-in).

    Keyed on the binary, not on :func:`sandbox.isolation`, so that a bwrap that is
    installed but broken fails these tests instead of silently skipping isolation.
    """
    if HAVE_BWRAP:
        monkeypatch.delenv(ALLOW_UNISOLATED_ENV, raising=False)
    else:
        monkeypatch.setenv(ALLOW_UNISOLATED_ENV, "1")


PROGRAM = '''from typing import List


def add_all(xs: List[int]) -> int:
    """Sum of xs."""
    return sum(xs)
'''
TEST = """

def check(candidate):
    assert candidate([1, 2, 3]) == 6
    assert candidate([]) == 0
"""


def test_correct_solution_passes() -> None:
    result = humaneval_check(PROGRAM, TEST, "add_all")
    assert result.passed and result.status == "passed"


def test_wrong_solution_fails() -> None:
    result = humaneval_check(PROGRAM.replace("sum(xs)", "len(xs)"), TEST, "add_all")
    assert not result.passed and result.status == "failed"
    assert "AssertionError" in result.stderr_tail


def test_early_exit_does_not_pass() -> None:
    # exit(0) before check() would otherwise look like success
    result = humaneval_check(PROGRAM + "\nimport sys\nsys.exit(0)\n", TEST, "add_all")
    assert not result.passed and result.status == "failed"


def test_syntax_error_is_error() -> None:
    result = run_python("def f(:\n    pass\n")
    assert result.status == "error" and "SyntaxError" in result.stderr_tail


def test_stdout_is_captured() -> None:
    result = run_python("print('hello from the sandbox')")
    assert result.passed and "hello from the sandbox" in result.stdout_tail


def test_infinite_loop_is_killed_at_timeout() -> None:
    result = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout" and not result.passed
    assert 0.9 <= result.wall_s < 3.0


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(4 * 1024 ** 3)\n",
        "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))\n",
    ],
)
def test_memory_bomb_is_reported(code: str) -> None:
    result = run_python(code, timeout_s=20.0, memory_mb=256)
    assert result.status == "memory" and not result.passed


def _write_attempts(target: str) -> list[str]:
    return [
        f"open({target!r}, 'w').write('x')",
        f"open({target!r}, 'a')",
        f"import os\nos.close(os.open({target!r}, os.O_CREAT | os.O_WRONLY))",
        f"import pathlib\npathlib.Path({target!r}).write_text('x')",
        f"import pathlib\npathlib.Path({target!r}).touch()",
        f"import os\nos.mkdir({target!r})",
        f"import shutil\nopen('inside.txt', 'w').write('x')\nshutil.copy('inside.txt', {target!r})",
        f"import os\nopen('inside.txt', 'w').write('x')\nos.rename('inside.txt', {target!r})",
        f"import os\nos.symlink({target!r}, 'link')\nopen('link', 'w').write('x')",
        f"import os\nos.chdir('/')\nopen({target!r}, 'w')",
        f"import os\nos.makedirs({target!r} + '/sub')",
        f"import os\nopen('inside.txt', 'w').write('x')\nos.link('inside.txt', {target!r})",
        f"import os\nopen('inside.txt', 'w').write('x')\nos.replace(src='inside.txt', dst={target!r})",
    ]


@pytest.mark.parametrize("where", ["tmp", "repo"])
def test_writes_outside_are_refused(where: str) -> None:
    base = Path("/tmp") if where == "tmp" else PROJECT_ROOT
    target = base / f"outside_{uuid.uuid4().hex}"
    try:
        for code in _write_attempts(str(target)):
            result = run_python(code)
            assert result.status == "failed", code
            assert "PermissionError" in result.stderr_tail, code
            assert not os.path.lexists(target), code
    finally:
        if target.is_dir():
            target.rmdir()
        elif os.path.lexists(target):
            target.unlink()


def test_deleting_outside_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "keep_me.txt"
    victim.write_text("precious")
    folder = tmp_path / "keep_dir"
    folder.mkdir()
    for code in (
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.unlink({str(victim)!r})",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')",
        f"import shutil\nshutil.rmtree({str(folder)!r})",
        f"import os\nos.rmdir({str(folder)!r})",
        f"import os\nos.link({str(victim)!r}, 'hard')\nopen('hard', 'w').write('x')",
        f"import os\nos.truncate({str(victim)!r}, 0)",
    ):
        result = run_python(code)
        assert result.status == "failed" and "PermissionError" in result.stderr_tail, code
    assert victim.read_text() == "precious" and folder.is_dir()


def test_reading_and_writing_inside_is_allowed() -> None:
    code = (
        "import os, tempfile\nopen('a.txt', 'w').write('data')\nos.mkdir('d')\n"
        "os.rename('a.txt', 'd/b.txt')\nprint(open('d/b.txt').read())\n"
        "with tempfile.NamedTemporaryFile('w') as fh:\n    fh.write('t')\n"
        "os.remove('d/b.txt')\nos.rmdir('d')\nprint(os.environ['HOME'] == os.getcwd())\n"
    )
    result = run_python(code)
    assert result.passed, result.stderr_tail
    assert "data" in result.stdout_tail and "True" in result.stdout_tail


def test_environment_is_minimal() -> None:
    os.environ["USSAFETY_SANDBOX_SECRET"] = "leak"
    try:
        result = run_python("import os\nprint(sorted(os.environ))")
    finally:
        del os.environ["USSAFETY_SANDBOX_SECRET"]
    assert result.passed
    assert "USSAFETY_SANDBOX_SECRET" not in result.stdout_tail
    assert "HTTP_PROXY" not in result.stdout_tail.upper().replace("'", "")


@pytest.mark.parametrize(
    "code",
    [
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))",
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
        "import socket\nsocket.getaddrinfo('example.com', 80)",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9', timeout=1)",
    ],
)
def test_network_is_refused(code: str) -> None:
    result = run_python(code)
    assert result.status == "failed"
    assert "network access is disabled" in result.stderr_tail


def test_socket_error_is_catchable() -> None:
    code = (
        "import socket\ntry:\n    socket.socket().connect(('127.0.0.1', 9))\n"
        "except PermissionError:\n    print('blocked')\n"
    )
    result = run_python(code)
    assert result.passed and "blocked" in result.stdout_tail


# Each process forks up to 6 times (64 processes if nothing stopped it: bounded
# even if the guard broke), prints one "P" and waits for its children.
FORK_BOMB = """
import os
for _ in range(6):
    try:
        os.fork()
    except PermissionError:
        break
print("P", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


@pytest.mark.parametrize("max_procs", [1, 4])
def test_fork_bomb_is_contained(max_procs: int) -> None:
    result = run_python(FORK_BOMB, timeout_s=10.0, max_procs=max_procs)
    assert result.passed, result.stderr_tail
    assert result.stdout_tail.count("P") == max_procs


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.execv('/bin/true', ['true'])",
    ],
)
def test_process_creation_refused_by_default(code: str) -> None:
    result = run_python(code)
    assert result.status == "failed" and "PermissionError" in result.stderr_tail


def _live_processes_with(marker: str) -> list[int]:
    """Host processes (not zombies: their cmdline is empty) whose cmdline has ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_background_children_are_killed() -> None:
    # the child's pid means nothing outside a PID namespace: find it by a marker
    marker = f"ussafety-bg-{uuid.uuid4().hex}"
    code = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "print('started', flush=True)\n"
    )
    result = run_python(code, max_procs=2)
    assert result.passed and "started" in result.stdout_tail, result.stderr_tail
    deadline = time.monotonic() + 5  # without bwrap the group kill is asynchronous
    while _live_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_processes_with(marker) == []


@pytest.mark.parametrize(
    "code", ["import os\nos.kill(1, 0)", "import os\nos.kill(-1, 0)", "import os\nos.killpg(os.getpgrp() + 1, 0)"]
)
def test_kill_outside_group_is_refused(code: str) -> None:
    result = run_python(code)
    assert result.status == "failed" and "PermissionError" in result.stderr_tail


def test_output_file_size_is_limited() -> None:
    result = run_python("open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))", file_size_mb=1)
    assert result.status == "failed" and "File too large" in result.stderr_tail


@pytest.mark.skipif(not HAVE_BWRAP, reason="the total disk cap is bwrap's sized tmpfs")
def test_total_disk_is_capped() -> None:
    # each file is under the per-file limit; together they exceed the folder's size
    code = "for i in range(4):\n    open(f'f{i}.bin', 'wb').write(b'x' * (1024 * 1024))\n"
    result = run_python(code, file_size_mb=2, disk_mb=2)
    assert result.status == "failed" and "No space left on device" in result.stderr_tail
    assert result.isolated


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        run_python("pass", timeout_s=0)
    with pytest.raises(ValueError):
        run_python("pass", max_procs=0)
    with pytest.raises(ValueError):
        run_python("pass", disk_mb=0)


@pytest.fixture
def no_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend bubblewrap is unavailable, as on a machine without it."""
    monkeypatch.setattr(runner, "isolation", lambda: Isolation(False, "bubblewrap (bwrap) is not installed"))
    monkeypatch.delenv(ALLOW_UNISOLATED_ENV, raising=False)


def test_refuses_without_isolation(no_isolation: None) -> None:
    with pytest.raises(SandboxUnavailable) as err:
        run_python("print('never runs')")
    message = str(err.value)
    assert "not installed" in message  # why
    assert ALLOW_UNISOLATED_ENV in message and "allow_unisolated=True" in message  # opt-in
    assert "bubblewrap" in message  # the fix
    with pytest.raises(SandboxUnavailable):
        humaneval_check(PROGRAM, TEST, "add_all")


def test_opt_in_runs_with_the_guard_only(no_isolation: None, monkeypatch: pytest.MonkeyPatch) -> None:
    result = humaneval_check(PROGRAM, TEST, "add_all", allow_unisolated=True)
    assert result.passed and not result.isolated
    outside = Path("/tmp") / f"outside_{uuid.uuid4().hex}"
    refused = run_python(f"open({str(outside)!r}, 'w')", allow_unisolated=True)
    assert refused.status == "failed" and "PermissionError" in refused.stderr_tail
    assert not outside.exists()
    looped = run_python("while True:\n    pass\n", timeout_s=1.0, allow_unisolated=True)
    assert looped.status == "timeout"
    monkeypatch.setenv(ALLOW_UNISOLATED_ENV, "1")
    assert run_python("pass").passed
    with pytest.raises(SandboxUnavailable):  # the argument overrides the variable
        run_python("pass", allow_unisolated=False)


@pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap (bwrap) is not installed")
def test_runs_isolated_by_default() -> None:
    assert sandbox.isolation().available, sandbox.isolation().detail
    result = run_python("import os\nprint(os.getuid(), os.getpid(), os.getcwd())")
    uid, pid, cwd = result.stdout_tail.split()
    assert result.isolated and uid != "0" and pid == "2" and cwd == "/sandbox"


def test_probe_without_bwrap() -> None:
    status = bubblewrap._probe_isolation(None)
    assert not status.available and "not installed" in status.detail


# A stand-in for bwrap that lists every option but isolates nothing: it runs the
# command after the last "--" on the host, with /code mapped to the host folder.
FAKE_BWRAP = """#!{python}
import os, sys
args = sys.argv[1:]
if args == ["--help"]:
    print("--size --perms --remount-ro --clearenv --die-with-parent --new-session --disable-userns")
    sys.exit(0)
folder = args[args.index("/code") - 1]
last = len(args) - 1 - args[::-1].index("--")
command = [a.replace("/code", folder, 1) for a in args[last + 1:]]
os.chdir(folder)
os.execv(command[0], command)
"""


def test_probe_rejects_a_bwrap_that_does_not_isolate(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(FAKE_BWRAP.format(python=sys.executable))
    fake.chmod(0o755)
    status = bubblewrap._probe_isolation(str(fake))
    assert not status.available and "self-test failed" in status.detail
    old = tmp_path / "old_bwrap"
    old.write_text("#!/bin/sh\necho 'usage: bwrap [OPTIONS...] [--] COMMAND'\n")
    old.chmod(0o755)
    status = bubblewrap._probe_isolation(str(old))
    assert not status.available and "too old" in status.detail and "--size" in status.detail


def _humaneval_rows(count: int) -> list[dict]:
    import gzip
    import json

    from ussafety.paths import data_dir

    root = data_dir()
    path = root / "humaneval" / "HumanEval.jsonl.gz" if root else None
    if path is None or not path.is_file():
        pytest.skip("no HumanEval in the data mirror")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(count), fh)]


def test_real_humaneval_tasks_end_to_end() -> None:
    """Canonical bodies and chat-style full answers pass; a wrong body fails."""
    from ussafety.evaluate.scorers import extract_code

    for row in _humaneval_rows(3):
        prompt, entry, test = row["prompt"], row["entry_point"], row["test"]
        body = extract_code(row["canonical_solution"], prompt, entry)
        assert humaneval_check(body, test, entry).passed, row["task_id"]
        chat = f"Sure!\n```python\n{prompt}{row['canonical_solution']}```\nDone."
        assert humaneval_check(extract_code(chat, prompt, entry), test, entry).passed
        wrong = extract_code("    return None\n", prompt, entry)
        assert humaneval_check(wrong, test, entry).status == "failed", row["task_id"]
