"""Engines: the workloads a driver Pod (or `mendel run`) executes, as plain libraries.

Each engine is a sub-package (`cycleqd`, ...) with pure tensor math, separate I/O modules
and a runner that wires them; none imports Kubernetes or the controller, so the same code
runs in a Pod and on a laptop.
"""

from __future__ import annotations

__all__: list[str] = []
