"""Running a workload's processes through torchrun, and following what rank 0 reports.

A workload that needs several processes starts `torchrun` with one of its modules as the
program and stays behind as the driver: rank 0 appends one JSON object per line to a
progress file, which the driver follows to log metrics and mirror checkpoints while the
ranks work, so MLflow is only ever talked to from one process.

torchrun takes its settings from the PET_* variables the operator sets on the Pods of a
multi-node run (nodes, processes per node, the leader's rendezvous endpoint); otherwise
(a single Pod, or `mendel run` on a laptop) it gets `--standalone` and the process count.
Each rank binds to its GPU (`LOCAL_RANK`) with NCCL, or to the CPU with gloo.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = ["command", "follow", "join_process_group", "launch", "progress_writer", "supervise"]


def command(module: str, arguments: list[str], processes: int) -> list[str]:
    """The torchrun command line that runs `python -m module *arguments` on every rank."""
    line = [sys.executable, "-m", "torch.distributed.run"]
    if "PET_NNODES" not in os.environ:  # not in an operator's multi-node Pod: one node, here
        line += ["--standalone", "--nnodes=1", f"--nproc-per-node={processes}"]
    return [*line, "-m", module, *arguments]


def launch(module: str, arguments: list[str], processes: int) -> subprocess.Popen[bytes]:
    """Start torchrun (see `command`); the ranks' output goes to this process's."""
    return subprocess.Popen(command(module, arguments, processes))


def follow(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete lines appended to the progress file since `offset`, and the new offset."""
    if not path.is_file():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    lines = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return lines, offset + end


def supervise(process: subprocess.Popen[bytes], progress: Path, offset: int,
              on_line: Callable[[dict[str, Any]], None] | None,
              poll_seconds: float = 1.0) -> None:
    """Follow the progress file until torchrun exits, passing every line to `on_line`
    (the last lines too, read after the exit).

    Raises:
        RuntimeError: torchrun exited with a non-zero code.
    """
    while True:
        finished = process.poll() is not None
        lines, offset = follow(progress, offset)
        if on_line is not None:
            for line in lines:
                on_line(line)
        if finished:
            break
        time.sleep(poll_seconds)
    if process.returncode != 0:
        raise RuntimeError(f"torchrun exited with code {process.returncode}; the ranks' "
                           "tracebacks are in the log above")


@contextlib.contextmanager
def progress_writer(path: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Append JSON lines to `path`, each flushed at once so the driver sees it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        def write(line: dict[str, Any]) -> None:
            handle.write(json.dumps(line) + "\n")
            handle.flush()

        yield write


def join_process_group(timeout: timedelta | None = None) -> Any:
    """Join torchrun's process group: NCCL on this rank's GPU, or gloo on the CPU.

    Args:
        timeout: How long a collective may wait for the slowest rank before the group
            fails; None keeps torch's default (10 minutes with NCCL).

    Returns:
        The torch.device this rank computes on.
    """
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if timeout is None:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, timeout=timeout)
    return device
