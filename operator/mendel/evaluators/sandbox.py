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

`run_command` runs any other program (a reward script) under the same kernel layers and
limits, with data on standard input; the in-process guard, being Python, does not apply.
`arun` and `arun_command` run in the sandbox's own threads, `workers` at a time, so a
program never blocks an event loop.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

__all__ = [
    "Isolation",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "find_program",
    "probe_isolation",
]

Isolation = Literal["namespaces+nobody", "nobody", "namespaces", "none"]
"""Kernel isolation beyond resource limits: new network and PID namespaces, the user nobody,
both, or neither."""

_NOBODY = 65534
_GUARD = (Path(__file__).parent / "_sandbox_guard.py").read_text(encoding="utf-8")
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_Outcome = Literal["passed", "failed", "timeout"]
_STDOUT_BYTES = 1 << 16
"""Captured standard output is cut to its last 64 KiB."""


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

    outcome: _Outcome
    returncode: int
    stderr_tail: str
    stdout_tail: str = ""
    """The end of standard output, where the caller asked for it (`run_command` always)."""

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
        # Bound to no event loop; threads start on first use, `workers` programs at most.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mendel-sandbox")

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

    def run(
        self, source: str, limits: SandboxLimits, *, capture_stdout: bool = False
    ) -> RunResult:
        """Run one program to completion, failure or its deadline.

        Args:
            source: The Python program.
            limits: Its limits.
            capture_stdout: Keep the end of standard output, unbuffered so that what was
                printed before a timeout is kept, in `stdout_tail` (then subject to the
                file-size limit); by default it is discarded.

        Raises:
            SandboxError: the interpreter could not be started or never reached the program.
        """
        with (
            self._workdir() as work,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
            tempfile.TemporaryFile() as result,
        ):
            Path(work, "program.py").write_text(source, encoding="utf-8")
            nonce = secrets.token_hex(16)
            proc = self._spawn(
                [self.python, "-I", "-S", *(["-u"] if capture_stdout else []), "-c", _GUARD],
                work,
                limits,
                stdin=subprocess.PIPE,
                stdout=stdout if capture_stdout else subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(result.fileno(),),
            )
            _send(proc, f"{result.fileno()} {nonce}\n")
            timed_out = _wait_then_kill(proc, limits.timeout_seconds)
            marks = _read(result, 4096).split()
            stderr_tail = _read(stderr, 2048, tail=True)
            stdout_tail = _read(stdout, _STDOUT_BYTES, tail=True)
        if timed_out:
            return RunResult("timeout", proc.returncode, stderr_tail, stdout_tail)
        if not marks:
            raise SandboxError(f"the sandboxed interpreter did not start: {stderr_tail.strip()}")
        outcome: _Outcome = "passed" if proc.returncode == 0 and marks[-1] == nonce else "failed"
        return RunResult(outcome, proc.returncode, stderr_tail, stdout_tail)

    def run_command(
        self, argv: Sequence[str], limits: SandboxLimits, *, stdin: bytes = b""
    ) -> RunResult:
        """Run any program under the kernel layers and limits; it passes if it exits with 0.

        It starts in a fresh working directory with the scrubbed environment, so file
        arguments must be absolute paths the sandbox's user can read. Standard input is a
        file: a program that never reads it cannot block the caller.

        Args:
            argv: The program (looked up with `find_program`) and its arguments.
            limits: Its limits.
            stdin: Everything the program may read on standard input.

        Raises:
            SandboxError: argv is empty or its program cannot be found or started.
        """
        program = find_program(argv[0]) if argv else None
        if program is None:
            raise SandboxError(f"no program {argv[0] if argv else ''!r} on PATH {_ENV['PATH']}")
        with (
            self._workdir() as work,
            tempfile.TemporaryFile() as stdin_file,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
        ):
            stdin_file.write(stdin)
            stdin_file.seek(0)
            proc = self._spawn(
                [program, *argv[1:]], work, limits, stdin=stdin_file, stdout=stdout, stderr=stderr
            )
            timed_out = _wait_then_kill(proc, limits.timeout_seconds)
            stderr_tail = _read(stderr, 2048, tail=True)
            stdout_tail = _read(stdout, _STDOUT_BYTES, tail=True)
        if timed_out:
            return RunResult("timeout", proc.returncode, stderr_tail, stdout_tail)
        outcome: _Outcome = "passed" if proc.returncode == 0 else "failed"
        return RunResult(outcome, proc.returncode, stderr_tail, stdout_tail)

    async def arun(
        self, source: str, limits: SandboxLimits, *, capture_stdout: bool = False
    ) -> RunResult:
        """`run` in one of the sandbox's threads, off the event loop."""
        call = functools.partial(self.run, source, limits, capture_stdout=capture_stdout)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def arun_command(
        self, argv: Sequence[str], limits: SandboxLimits, *, stdin: bytes = b""
    ) -> RunResult:
        """`run_command` in one of the sandbox's threads, off the event loop."""
        call = functools.partial(self.run_command, list(argv), limits, stdin=stdin)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @contextmanager
    def _workdir(self) -> Iterator[str]:
        with tempfile.TemporaryDirectory(
            prefix="mendel-sandbox-", ignore_cleanup_errors=True
        ) as work:
            if self.isolation in ("namespaces+nobody", "nobody"):
                os.chown(work, _NOBODY, _NOBODY)
            yield work

    def _spawn(
        self,
        argv: list[str],
        work: str,
        limits: SandboxLimits,
        *,
        stdin: int | IO[bytes],
        stdout: int | IO[bytes],
        stderr: IO[bytes],
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        isolation = self.isolation
        as_nobody = isolation in ("namespaces+nobody", "nobody")
        user = _NOBODY if isolation == "nobody" else None
        try:
            return subprocess.Popen(
                [*_prefix(isolation), *argv],
                cwd=work,
                env={**_ENV, "HOME": work, "TMPDIR": work},
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=pass_fds,
                start_new_session=True,
                preexec_fn=_limiter(limits, as_nobody),
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
        except OSError as error:
            raise SandboxError(f"could not start {argv[0]!r} in the sandbox: {error}") from error


def find_program(name: str) -> str | None:
    """The absolute path the sandbox runs for `name` (a path, or a name looked up on the
    sandbox's PATH /usr/bin:/bin, not the worker's), or None where there is none."""
    found = shutil.which(name, path=_ENV["PATH"])
    return os.path.abspath(found) if found else None


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
