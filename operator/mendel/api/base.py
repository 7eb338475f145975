"""The base class every API model derives from, and the helpers that annotate fields.

Field names are snake_case in Python and camelCase on the wire, unknown fields are errors
(as with kubectl's strict field validation), and each model carries the CEL rules that a
modern API server enforces beside the checks pydantic runs in the operator and the CLI.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = ["ApiModel", "FieldValueError", "cel", "immutable", "increase_only", "require_unique"]


class ApiModel(BaseModel):
    """Base of all Mendel API models: camelCase aliases, no unknown fields, immutable values."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in a manifest: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class FieldValueError(ValueError):
    """A cross-field rule broken at a known field.

    Model validators raise it so that the error names the field (relative to the model
    being validated, e.g. 'tasks[1].expert') rather than the whole model.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


def cel(rule: str, message: str) -> JsonDict:
    """One `x-kubernetes-validations` entry."""
    return {"rule": rule, "message": message}


def immutable(what: str) -> JsonDict:
    """Schema extra for a field that may not change once the resource exists."""
    return {
        "x-kubernetes-validations": [
            cel("self == oldSelf", f"{what} is immutable; create a new resource to change it")
        ]
    }


def increase_only(what: str) -> JsonDict:
    """Schema extra for a budget that may grow (to extend a run) but never shrink."""
    return {
        "x-kubernetes-validations": [
            cel("self >= oldSelf", f"{what} may only be increased on an existing resource")
        ]
    }


def require_unique(field: str, names: list[str]) -> None:
    """Raise a ValueError naming the first repeated name in a list keyed by name."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FieldValueError(field, f"two entries are named '{name}'; names must be unique")
        seen.add(name)
