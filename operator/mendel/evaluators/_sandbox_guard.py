"""Runs inside the sandboxed interpreter, before and around the untrusted program.

The parent passes this file's text to `python -I -S -c`; it uses the standard library only
and is never imported by Mendel. It reads "<fd> <nonce>" from stdin, closes the exits that
a careless program takes by accident (sockets, new processes, writes and deletions outside
its working directory, the modules that reach around these guards), runs program.py in a
fresh namespace and writes the nonce to <fd> only if the program ran to its end, so an
early `exit(0)` is not a pass. These guards share a process with the program, so one that
sets out to undo them can: the kernel limits and namespaces set by the parent hold then.
"""

import builtins
import io
import os
import sys
from collections.abc import Callable
from typing import Any

_BLOCKED_MODULES = frozenset(
    {
        "_ctypes",
        "_multiprocessing",
        "_posixsubprocess",
        "ctypes",
        "multiprocessing",
        "pty",
        "resource",
        "subprocess",
    }
)
_PROCESS_CALLS = (
    "system", "popen", "fork", "forkpty", "vfork",
    "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
    "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
    "posix_spawn", "posix_spawnp", "kill", "killpg", "setsid", "setpgid", "setpgrp",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "putenv",
)  # fmt: skip
_PATH_CALLS = (
    "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "chmod",
    "lchmod", "chown", "lchown", "truncate", "link", "symlink", "mkdir", "makedirs",
    "mkfifo", "mknod", "utime", "chroot", "setxattr", "removexattr",
)  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _refuse(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(f"{what} is not allowed in the sandbox")

    return refuse


class _ImportBlocker:
    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in _BLOCKED_MODULES:
            raise ImportError(f"module {name} is not available in the sandbox")
        return None


def _deny_network() -> None:
    import _socket
    import socket

    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                 "SocketType", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):  # fmt: skip
        for module in (socket, _socket):
            if hasattr(module, name):
                setattr(module, name, _refuse(f"socket.{name}"))


def _deny_processes() -> None:
    import posix

    for name in _PROCESS_CALLS:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, _refuse(f"os.{name}"))


def _deny_writes_outside(workdir: str) -> None:
    def check(path: Any) -> None:
        if isinstance(path, int):
            return
        real = os.path.realpath(os.fsdecode(os.fspath(path)))
        if real != workdir and not real.startswith(workdir + os.sep):
            raise PermissionError(f"{real} is outside the sandbox's working directory")

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS:
            check(path)
        return real_os_open(path, flags, *args, **kwargs)

    def inside_only(function: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            for value in args[:2]:
                if isinstance(value, (str, bytes, os.PathLike)):
                    check(value)
            return function(*args, **kwargs)

        return guarded

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
    for name in _PATH_CALLS:
        if hasattr(os, name):
            setattr(os, name, inside_only(getattr(os, name)))


def _main() -> None:
    fd_text, nonce = sys.stdin.readline().split()
    sys.stdin.close()
    result_fd = int(fd_text)
    os.write(result_fd, b"started\n")
    with open("program.py", encoding="utf-8") as stream:
        code = compile(stream.read(), "program.py", "exec")
    _deny_network()
    _deny_processes()
    _deny_writes_outside(os.path.realpath(os.getcwd()))
    sys.meta_path.insert(0, _ImportBlocker)
    exec(code, {"__name__": "__main__", "__builtins__": builtins})
    os.write(result_fd, nonce.encode() + b"\n")


_main()
