"""What a recorded result depends on besides the code: versions, CPUs and threads.

The tiny zoo and CycleQD's runs are deterministic only for a fixed thread count on the
same kind of CPU, so every raw result carries these. Nothing here names this machine: no
host name, user or path, only what another machine would need to compare.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import transformers

__all__ = ["environment"]

ROOT = Path(__file__).resolve().parents[2]


def environment(threads: int) -> dict[str, Any]:
    """Versions, CPU count, torch threads and the commit of the checkout, for a result file."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "commit": _commit(),
    }


def _commit() -> str | None:
    """HEAD of the repository this benchmark runs from; None outside a git checkout."""
    try:
        found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return found.stdout.strip()
