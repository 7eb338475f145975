"""Running untrusted Python programs (model-written code) in a throwaway subprocess.

Each program gets a fresh temporary working directory, deleted afterwards, and a fresh
isolated interpreter (`python -I -S`: no site-packages, no user paths, no PYTHON* variables)
with a scrubbed environment, so no credential of the worker is inherited. The kernel
enforces what the program cannot undo: resource limits set between fork and exec (address
space, CPU time, file size, open files, processes, no core dumps) and a new session whose
whole process group is killed at the wall-clock deadline. Where the worker may use them,
it adds namespaces (`unshare --net --pid --fork --kill-child`: no network interface, not
even loopback, and every process the program starts dies with it) and the unprivileged
user `nobody`, who cannot write the worker's files. Inside the child, `_sandbox_guard`
also refuses sockets, new processes and writes outside the working directory; that guard
stops accidents, not a program written to escape, which the kernel-level layers are for.

Which layers are available is probed once per interpreter (`probe_isolation`); without
root, user namespaces or `unshare`, only the resource limits and the in-process guard apply.
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

__all__ = ["Isolation", "RunResult", "Sandbox", "SandboxError", "SandboxLimits", "probe_isolation"]

Isolation = Literal["namespaces+nobody", "nobody", "namespaces", "none"]
"""Kernel isolation beyond resource limits: new network and PID namespaces, the user nobody,
both, or neither."""

_NOBODY = 65534
_GUARD = (Path(__file__).parent / "_sandbox_guard.py").read_text(encoding="utf-8")
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class SandboxError(RuntimeError):
    """The sandbox itself failed (no interpreter, no process slot): not a verdict on a program."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program; each is enforced by the kernel."""

    timeout_seconds: float = 10.0
    memory_mb: int = 1024
    max_file_bytes: int = 1 << 20
    max_open_files: int = 32
    max_processes: int = 64
    """Cap on all of nobody's processes, when programs run as nobody. A non-root worker's
    programs may start none; programs run by root are exempt (the kernel's rule)."""

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0 or self.memory_mb < 32:
            raise ValueError("timeout_seconds must be positive and memory_mb at least 32")


@dataclass(frozen=True)
class RunResult:
    """What happened to one program."""

    outcome: Literal["passed", "failed", "timeout"]
    returncode: int
    stderr_tail: str

    @property
    def passed(self) -> bool:
        """The program ran to its end and exited with status 0."""
        return self.outcome == "passed"


class Sandbox:
    """Runs programs under `SandboxLimits`, a few at a time.

    Args:
        python: Interpreter for the programs (default: the one running Mendel). Under the
            user nobody it must be readable by everyone, e.g. /usr/bin/python3.
        workers: Programs run in parallel.
        isolation: Force a level instead of the best one `probe_isolation` finds.
    """

    def __init__(
        self, *, python: str | None = None, workers: int = 2, isolation: Isolation | None = None
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.python = python or os.path.realpath(sys.executable)
        self.workers = workers
        self._isolation = isolation

    @property
    def isolation(self) -> Isolation:
        """The kernel isolation programs get (probed on first use)."""
        if self._isolation is None:
            self._isolation = probe_isolation(self.python)
        return self._isolation

    def run_many(self, sources: Sequence[str], limits: SandboxLimits) -> list[RunResult]:
        """Run each program, `workers` at a time; results in input order."""
        _ = self.isolation  # probed once, before the threads start
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda source: self.run(source, limits), sources))

    def run(self, source: str, limits: SandboxLimits) -> RunResult:
        """Run one program to completion, failure or its deadline.

        Raises:
            SandboxError: the interpreter could not be started or never reached the program.
        """
        with (
            tempfile.TemporaryDirectory(
                prefix="mendel-sandbox-", ignore_cleanup_errors=True
            ) as work,
            tempfile.TemporaryFile() as stderr,
            tempfile.TemporaryFile() as result,
        ):
            Path(work, "program.py").write_text(source, encoding="utf-8")
            if self.isolation in ("namespaces+nobody", "nobody"):
                os.chown(work, _NOBODY, _NOBODY)
            nonce = secrets.token_hex(16)
            proc = self._spawn(work, limits, stderr, result)
            _send(proc, f"{result.fileno()} {nonce}\n")
            timed_out = _wait_then_kill(proc, limits.timeout_seconds)
            marks = _read(result, 4096).split()
            stderr_tail = _read(stderr, 2048, tail=True)
        if timed_out:
            return RunResult("timeout", proc.returncode, stderr_tail)
        if not marks:
            raise SandboxError(f"the sandboxed interpreter did not start: {stderr_tail.strip()}")
        passed = proc.returncode == 0 and marks[-1] == nonce
        return RunResult("passed" if passed else "failed", proc.returncode, stderr_tail)

    def _spawn(
        self, work: str, limits: SandboxLimits, stderr: IO[bytes], result: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        isolation = self.isolation
        as_nobody = isolation in ("namespaces+nobody", "nobody")
        argv = [*_prefix(isolation), self.python, "-I", "-S", "-c", _GUARD]
        user = _NOBODY if isolation == "nobody" else None
        try:
            return subprocess.Popen(
                argv,
                cwd=work,
                env={**_ENV, "HOME": work, "TMPDIR": work},
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(result.fileno(),),
                start_new_session=True,
                preexec_fn=_limiter(limits, as_nobody),
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
        except OSError as error:
            raise SandboxError(f"could not start the sandboxed interpreter: {error}") from error


@functools.lru_cache(maxsize=8)
def probe_isolation(python: str) -> Isolation:
    """The strongest isolation under which `python` starts here; tried once per interpreter.

    Root may create namespaces and drop to nobody; other users may create namespaces only
    where unprivileged user namespaces are enabled (inside one, via `--map-root-user`).
    """
    candidates: list[Isolation] = (
        ["namespaces+nobody", "nobody", "namespaces"] if os.geteuid() == 0 else ["namespaces"]
    )
    for isolation in candidates:
        if _starts(python, isolation):
            return isolation
    return "none"


def _starts(python: str, isolation: Isolation) -> bool:
    prefix = _prefix(isolation)
    if prefix and not prefix[0]:
        return False
    user = _NOBODY if isolation == "nobody" else None
    try:
        done = subprocess.run(
            [*prefix, python, "-I", "-S", "-c", "pass"],
            env=_ENV,
            cwd="/",
            capture_output=True,
            timeout=30,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _prefix(isolation: Isolation) -> list[str]:
    # --fork makes the program PID 1 of its namespace: when it dies, the kernel kills every
    # process it started, even one that left the process group.
    unshare = shutil.which("unshare") or ""
    namespaces = ["--net", "--pid", "--fork", "--kill-child"]
    if isolation == "namespaces+nobody":
        return [unshare, *namespaces, f"--setuid={_NOBODY}", f"--setgid={_NOBODY}", "--"]
    if isolation == "namespaces":
        as_user = [] if os.geteuid() == 0 else ["--map-root-user"]
        return [unshare, *as_user, *namespaces, "--"]
    return []


def _limiter(limits: SandboxLimits, as_nobody: bool) -> Callable[[], None]:
    # Runs in the child between fork and exec: only setrlimit calls, no imports, no locks.
    cpu = int(limits.timeout_seconds) + 1
    memory = limits.memory_mb << 20
    settings = [
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits.max_file_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    processes = _process_limit(limits, as_nobody)
    if processes is not None:
        settings.append((resource.RLIMIT_NPROC, processes))

    def apply() -> None:
        for kind, value in settings:
            hard = value + 1 if kind == resource.RLIMIT_CPU else value
            resource.setrlimit(kind, (value, hard))

    return apply


def _process_limit(limits: SandboxLimits, as_nobody: bool) -> int | None:
    # RLIMIT_NPROC counts every process of the user and never binds root.
    if as_nobody:
        return limits.max_processes
    if os.geteuid() != 0:
        return 1  # the worker itself counts, so the program can start no process or thread
    return None


def _send(proc: subprocess.Popen[bytes], line: str) -> None:
    stdin = proc.stdin
    if stdin is None:
        return
    with suppress(BrokenPipeError, OSError):
        stdin.write(line.encode())
        stdin.close()


def _wait_then_kill(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for the program, kill its whole process group, reap it; True if it ran out of time.

    The leader is left unreaped (WNOWAIT) until the group is killed, so its id, which is
    the group's id, cannot be reused by an unrelated process in between.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    timed_out = False
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return timed_out


def _read(stream: IO[bytes], limit: int, *, tail: bool = False) -> str:
    size = stream.seek(0, os.SEEK_END)
    stream.seek(max(0, size - limit) if tail else 0)
    return stream.read(limit).decode("utf-8", errors="replace")
