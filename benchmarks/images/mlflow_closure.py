"""How much of an image is there only because a requirement asks for full `mlflow`.

Why: the `worker` extra names `mlflow`, whose server dependencies (pyarrow, scipy, pandas,
scikit-learn, matplotlib, ...) the worker never imports; `mlflow-skinny` has every client API
Mendel calls. Run inside an image, with the image's requirement list:
  python3 images/requirements.py worker operator > /tmp/reqs.txt
  podman run ... -v "$PWD/benchmarks/images/mlflow_closure.py:/tmp/c.py:ro" \
    -v /tmp/reqs.txt:/tmp/reqs.txt:ro --entrypoint python3 IMAGE /tmp/c.py /tmp/reqs.txt
It prints the distributions that only the full `mlflow` pulls in, with their installed sizes
(files of each distribution's RECORD that exist, so trimmed files do not count).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys

from packaging.requirements import Requirement


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


DISTS = {_norm(d.metadata["Name"]): d for d in md.distributions()}


def closure(reqs: list[str]) -> set[str]:
    """Installed distributions reachable from `reqs` (extras of dependencies ignored)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in reqs]
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen or name not in DISTS:
            continue
        seen.add(name)
        for dep in DISTS[name].requires or []:
            parsed = Requirement(dep)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                todo.append(parsed)
    return seen


def installed_bytes(name: str) -> int:
    """Sum of the sizes of the distribution's files that are present."""
    dist = DISTS[name]
    paths = (str(dist.locate_file(f)) for f in dist.files or [])
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def main(path: str) -> None:
    """Print the distributions only full mlflow needs, largest first."""
    with open(path) as fh:
        reqs = [line.strip() for line in fh if line.strip()]
    skinny = [("mlflow-skinny>=3.0" if r.startswith("mlflow>=") else r) for r in reqs]
    extra = sorted(closure(reqs) - closure(skinny), key=installed_bytes, reverse=True)
    total = sum(installed_bytes(n) for n in extra)
    print(f"only with full mlflow: {len(extra)} distributions, {total // 10**6} MB installed")
    print(", ".join(f"{n} {installed_bytes(n) // 10**6}" for n in extra))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/reqs.txt")
