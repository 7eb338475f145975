"""The code sandbox against programs that misbehave, on purpose or by accident."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from mendel.evaluators.sandbox import Sandbox, SandboxLimits, probe_isolation

LIMITS = SandboxLimits(timeout_seconds=2, memory_mb=256)
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(workers=2)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize(
    ("program", "outcome"),
    [
        pytest.param("assert sum([1, 2]) == 3", "passed", id="correct"),
        pytest.param("assert sum([1, 2]) == 4", "failed", id="wrong"),
        pytest.param("raise ValueError('boom')", "failed", id="exception"),
        pytest.param("import sys; sys.exit(1)", "failed", id="exit-1"),
        pytest.param("import sys; sys.exit(0)\nassert False", "failed", id="early-exit-0"),
        pytest.param("import os; os._exit(0)", "failed", id="os-exit-0"),
        pytest.param("import os; os.abort()", "failed", id="abort"),
        pytest.param("x = bytearray(1 << 30)", "failed", id="memory-hog"),
        pytest.param("x = []\nwhile True: x.append(' ' * 4096)", "failed", id="growing-memory-hog"),
        pytest.param("import subprocess; subprocess.run(['true'])", "failed", id="subprocess"),
        pytest.param("import os; os.system('true')", "failed", id="os-system"),
        pytest.param("import os; os.fork()", "failed", id="fork"),
        pytest.param("import ctypes", "failed", id="ctypes"),
        pytest.param("open('big', 'w').write('x' * (4 << 20))", "failed", id="file-size"),
        pytest.param("fs = [open('f%d' % i, 'w') for i in range(100)]", "failed", id="open-files"),
        pytest.param(
            "open('here.txt', 'w').write('ok')\nassert open('here.txt').read() == 'ok'",
            "passed",
            id="writes-inside",
        ),
    ],
)
def test_sandbox_outcome(sandbox, program, outcome):
    assert sandbox.run(program, LIMITS).outcome == outcome


def test_sandbox_scrubs_the_environment(sandbox, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    program = "import os; assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL'}"

    assert sandbox.run(program, LIMITS).passed


def test_sandbox_kills_infinite_loop_within_timeout(sandbox):
    started = time.monotonic()

    results = sandbox.run_many(
        ["while True: pass", "import time; time.sleep(60)"], SandboxLimits(timeout_seconds=1)
    )

    assert [r.outcome for r in results] == ["timeout", "timeout"]
    assert time.monotonic() - started < 5


def test_sandbox_refuses_socket_to_localhost(sandbox, listener):
    program = f"import socket\ns = socket.create_connection(('127.0.0.1', {listener}), timeout=1)"

    result = sandbox.run(program, LIMITS)

    assert result.outcome == "failed"
    assert "not allowed" in result.stderr_tail


def test_sandbox_keeps_writes_out_of_other_directories(sandbox, tmp_path):
    outside = tmp_path / "escaped.txt"
    programs = [
        f"open({str(outside)!r}, 'w').write('x')",
        f"import pathlib; pathlib.Path({str(outside)!r}).write_text('x')",
        f"import os; os.close(os.open({str(outside)!r}, os.O_CREAT | os.O_WRONLY))",
        f"import os; os.symlink({str(outside)!r}, 'link'); open('link', 'w').write('x')",
        f"import shutil; shutil.rmtree({str(tmp_path)!r})",
    ]

    results = sandbox.run_many(programs, LIMITS)

    assert [r.outcome for r in results] == ["failed"] * len(programs)
    assert not outside.exists()
    assert tmp_path.is_dir()


def test_sandbox_deletes_its_working_directory(sandbox):
    result = sandbox.run(
        "import os; print(os.getcwd(), file=__import__('sys').stderr); assert False", LIMITS
    )

    workdir = Path(result.stderr_tail.splitlines()[0])
    assert workdir.name.startswith("mendel-sandbox-")
    assert not workdir.exists()


def _namespaces_available() -> bool:
    return "namespaces" in probe_isolation(Sandbox().python)


@pytest.mark.skipif(not _namespaces_available(), reason="needs root or user namespaces")
def test_sandbox_network_namespace_holds_when_guard_is_bypassed(sandbox, listener):
    # Recover the real socket class that the in-process guard hid: without a network
    # namespace this connects (the control run), with one only the kernel stops it.
    program = (
        "import gc, socket\n"
        "real = next(o for o in gc.get_objects() if isinstance(o, type)\n"
        "            and o.__name__ == 'socket' and o.__module__ == 'socket')\n"
        f"real.__mro__[1](socket.AF_INET, socket.SOCK_STREAM).connect(('127.0.0.1', {listener}))\n"
    )

    unshielded = Sandbox(isolation="none").run(program, LIMITS)
    shielded = sandbox.run(program, LIMITS)

    assert unshielded.outcome == "passed"
    assert shielded.outcome == "failed"
    assert "Network is unreachable" in shielded.stderr_tail


@pytest.mark.skipif(
    not (
        os.path.exists(SYSTEM_PYTHON)
        and "nobody" in probe_isolation(os.path.realpath(SYSTEM_PYTHON))
    ),
    reason="needs root and an interpreter everyone can read",
)
def test_sandbox_as_nobody_cannot_write_even_with_guard_bypassed(tmp_path):
    sandbox = Sandbox(python=os.path.realpath(SYSTEM_PYTHON))
    outside = tmp_path / "escaped.txt"
    program = f"import _io; _io.FileIO({str(outside)!r}, 'w')"

    results = sandbox.run_many([program, "assert 1 + 1 == 2"], LIMITS)

    assert [r.outcome for r in results] == ["failed", "passed"]
    assert "Permission denied" in results[0].stderr_tail
    assert not outside.exists()


def test_sandbox_limits_reject_nonsense():
    with pytest.raises(ValueError):
        SandboxLimits(timeout_seconds=0)
    with pytest.raises(ValueError):
        Sandbox(workers=0)


@pytest.mark.skipif(
    os.geteuid() != 0 or not _namespaces_available(), reason="needs root and namespaces"
)
def test_sandbox_kills_processes_that_escape_the_process_group(sandbox, tmp_path):
    # Bypass the guard with ctypes, fork, leave the process group and outlive the program:
    # the PID namespace dies with the program and takes the escapee with it.
    marker = tmp_path / "escapee-survived"
    program = (
        "import sys, time\n"
        "sys.meta_path.pop(0)\n"
        "import ctypes\n"
        "libc = ctypes.CDLL(None)\n"
        "pid = libc.fork()\n"
        "assert pid >= 0\n"
        "if pid == 0:\n"
        "    libc.setsid()\n"
        "    time.sleep(0.5)\n"
        f"    libc.creat({str(marker).encode()!r}, 0o644)\n"
        "    libc._exit(0)\n"
    )

    assert sandbox.run(program, LIMITS).passed
    time.sleep(1.0)
    assert not marker.exists()
