"""Print Mendel's runtime requirements (core dependencies plus the named extras), one per line.

Why: the images install their dependencies in a layer of their own, before Mendel's code is
copied in, so that a code change reuses the slow dependency layer; and hack/build-images.sh
downloads the CPU worker's wheelhouse from the very same list. Reading pyproject.toml here keeps
it the single source of truth. Runs on a bare Python >= 3.11 (tomllib), inside a build stage or
on the host:  python3 images/requirements.py [--pyproject PATH] operator worker
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

__all__ = ["requirements"]

_SELF = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)\[(?P<extras>[^\]]+)\]\s*$")


def requirements(pyproject: dict[str, object], extras: list[str]) -> list[str]:
    """The project's dependencies plus those of `extras`, self-references expanded.

    Args:
        pyproject: the parsed pyproject.toml.
        extras: names under [project.optional-dependencies].

    Returns:
        Requirement strings in a stable order, without duplicates.

    Raises:
        ValueError: an extra is not declared (the message lists the declared ones).
    """
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise ValueError("pyproject.toml has no [project] table")
    name = str(project["name"]).lower()
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()
    pending = list(extras)
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise ValueError(f"unknown extra {extra!r}; pyproject.toml declares {sorted(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            match = _SELF.match(req)
            if match and match["name"].lower() == name:
                pending.extend(e.strip() for e in match["extras"].split(","))
            else:
                out.append(req)
    return list(dict.fromkeys(out))


def main(argv: list[str]) -> int:
    """Command line: optional `--pyproject PATH`, then extras."""
    path = Path("pyproject.toml")
    if argv[:1] == ["--pyproject"]:
        path, argv = Path(argv[1]), argv[2:]
    try:
        reqs = requirements(tomllib.loads(path.read_text()), argv)
    except (OSError, ValueError, KeyError) as exc:
        print(f"images/requirements.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join(reqs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
