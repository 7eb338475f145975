from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import mendel.engines
import mendel.engines.cycleqd as cycleqd


def test_cycleqd_exports_are_sorted_and_resolvable():
    names = cycleqd.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(cycleqd, name), name


def test_every_cycleqd_module_declares_all():
    for info in pkgutil.iter_modules(cycleqd.__path__):
        module = importlib.import_module(f"mendel.engines.cycleqd.{info.name}")
        assert isinstance(getattr(module, "__all__", None), list), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_engine_sources_import_no_kubernetes_or_controller():
    assert mendel.engines.__all__ == []
    pattern = re.compile(r"^\s*(from|import)\s+(kopf|kubernetes|mendel\.controller)\b", re.M)
    for path in Path(cycleqd.__file__).parent.glob("*.py"):
        assert not pattern.search(path.read_text()), path.name
