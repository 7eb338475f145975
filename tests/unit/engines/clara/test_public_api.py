from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import mendel.engines.clara as clara


def test_clara_exports_are_sorted_and_resolvable():
    names = clara.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(clara, name), name


def test_every_clara_module_declares_all():
    for info in pkgutil.iter_modules(clara.__path__):
        module = importlib.import_module(f"mendel.engines.clara.{info.name}")
        assert isinstance(getattr(module, "__all__", None), list), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"
            assert name in clara.__all__, f"{info.name}.{name} is not re-exported"


def test_clara_sources_import_no_kubernetes_or_controller():
    pattern = re.compile(r"^\s*(from|import)\s+(kopf|kubernetes|mendel\.controller)\b", re.M)
    for path in Path(clara.__file__).parent.glob("*.py"):
        assert not pattern.search(path.read_text()), path.name
