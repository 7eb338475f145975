"""Which spec fields define the experiment (may not change in place), and which ones did.

The `immutable(...)` markers on the API models are the one source: the CRD generator turns
them into CEL rules on the spec (refused unless runPolicy.onSpecChange is Restart, which
modern API servers enforce), and the operator compares the current spec with the spec
snapshot of the run to do the same on servers without CEL (Kubernetes 1.20 ignores it).
"""

from __future__ import annotations

import types
from functools import cache
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["IMMUTABLE_RULE", "changed_immutable_fields", "immutable_paths", "immutable_wire_paths"]

IMMUTABLE_RULE = "self == oldSelf"


def _is_immutable(extra: Any) -> bool:
    if not isinstance(extra, dict):
        return False
    return any(v.get("rule") == IMMUTABLE_RULE for v in extra.get("x-kubernetes-validations", []))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return []


@cache
def immutable_paths(model: type[BaseModel]) -> tuple[tuple[str, ...], ...]:
    """Attribute paths (python names) of every immutable field, nested ones included."""
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        if _is_immutable(info.json_schema_extra):
            out.append((name,))
            continue
        for sub in _models_in(info.annotation):
            out.extend((name, *rest) for rest in immutable_paths(sub))
    return tuple(dict.fromkeys(out))


def _get(model: Any, path: tuple[str, ...]) -> Any:
    value = model
    for part in path:
        if value is None:
            return None
        value = getattr(value, part, None)
    return value


def _wire_path(model: type[BaseModel], path: tuple[str, ...]) -> str:
    parts, current = [], [model]
    for part in path:
        alias = part
        for m in current:
            info = m.model_fields.get(part)
            if info is not None:
                alias = info.alias or part
                current = _models_in(info.annotation)
                break
        parts.append(alias)
    return "spec." + ".".join(parts)


def immutable_wire_paths(model: type[BaseModel]) -> list[str]:
    """Wire paths below spec (tasks, scheduling.queueName) of every immutable field."""
    return [_wire_path(model, path).removeprefix("spec.") for path in immutable_paths(model)]


def changed_immutable_fields(old: BaseModel, new: BaseModel) -> list[str]:
    """Wire paths (spec.tasks, spec.scheduling.queueName) of immutable fields that differ."""
    model = type(new)
    return [_wire_path(model, path) for path in immutable_paths(model)
            if _get(old, path) != _get(new, path)]
