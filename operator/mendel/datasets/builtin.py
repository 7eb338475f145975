"""Datasets that ship with Mendel, registered under `builtin:<name>`.

Each module imported here registers its generators; they need no network, so laptop
runs, CI and air-gapped clusters can use them.
"""

from __future__ import annotations

import mendel.datasets.arithmetic  # noqa: F401  (registers builtin:arithmetic)
import mendel.datasets.facts  # noqa: F401  (registers builtin:facts, facts-qa, facts-retrieval)
import mendel.datasets.humaneval  # noqa: F401  (registers builtin:humaneval)
from mendel.datasets import skills  # noqa: F401  (registers builtin:skills-<task>)

__all__: list[str] = []
