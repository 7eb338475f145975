"""Check a manifest the way a cluster running Mendel would, and say what is wrong where.

Two layers run in the order a real `kubectl apply` meets them:

1. the CRD's schema, as the API server applies it, with unknown fields treated as errors
   (kubectl's strict field validation): wrong types, ranges, enums, missing fields;
2. the pydantic models, as the operator applies them: cross-field rules and the rules
   the CRD states in CEL, which older API servers do not enforce.

Each problem comes back as a `FieldError` with the field's path (`spec.tasks[0].expert`)
and a message that says what would be valid.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from mendel.api.base import ApiModel, FieldValueError
from mendel.api.crd import resource_schema
from mendel.api.kinds import API_VERSION, KINDS, MAX_NAME_LENGTH, KindInfo

__all__ = ["FieldError", "InvalidResource", "check_name", "load_documents", "parse_spec",
           "validate_resource"]

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class FieldError:
    """One problem with a manifest."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<document>'}: {self.message}"


class InvalidResource(ValueError):
    """A resource failed validation; `errors` says where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class _Loader(yaml.SafeLoader):
    """YAML loader that reads '1e-4' as a float, as kubectl (YAML 1.2) does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_documents(text: str) -> list[Any]:
    """All non-empty YAML documents in a string."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def validate_resource(document: Any) -> list[FieldError]:
    """Every problem the API server or the operator would find in a manifest."""
    if not isinstance(document, dict):
        return [FieldError("", "a manifest must be a mapping with apiVersion, kind and spec")]
    errors = _check_header(document)
    if errors:
        return errors
    info = KINDS[document["kind"]]
    body = {k: v for k, v in document.items() if k != "status"}
    errors = sorted(_schema_errors(info, body))
    if errors:
        return errors
    try:
        parse_spec(info, document["spec"])
    except InvalidResource as invalid:
        return invalid.errors
    return []


def parse_spec(info: KindInfo, spec: Any) -> ApiModel:
    """Parse a spec into its model; raises InvalidResource with field paths under 'spec'."""
    try:
        return info.spec_model.model_validate(spec)
    except ValidationError as error:
        raise InvalidResource([_from_pydantic(e) for e in error.errors()]) from None


def check_name(name: object) -> FieldError | None:
    """The resource-name rule, or None when the name is fine.

    The API server accepts any DNS subdomain (253 characters, dots) for a custom resource,
    and Kubernetes 1.20 ignores the CRD's CEL rule on the name; but the name is copied
    into child Job, Pod and Service names and label values. The operator applies this
    same rule, so such a resource fails once with the rule named instead of a 422 from
    every child create.
    """
    if not isinstance(name, str) or not name:
        return FieldError("metadata.name", "required")
    if len(name) > MAX_NAME_LENGTH or not _DNS_1035.match(name):
        return FieldError(
            "metadata.name",
            f"must be a DNS-1035 label (lower-case letters, digits, '-', starting with a "
            f"letter; no dots) of at most {MAX_NAME_LENGTH} characters, so child names fit "
            f"in 63 (got {name!r}, {len(name)} characters); recreate the resource under "
            f"such a name",
        )
    return None


def _check_header(document: dict[str, Any]) -> list[FieldError]:
    errors = []
    if document.get("apiVersion") != API_VERSION:
        errors.append(FieldError("apiVersion", f"must be {API_VERSION} (got "
                                               f"{document.get('apiVersion')!r})"))
    kind = document.get("kind")
    if kind not in KINDS:
        errors.append(FieldError("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})"
                                         f"{_suggest(kind, KINDS)}"))
    name_error = check_name((document.get("metadata") or {}).get("name"))
    if name_error:
        errors.append(name_error)
    if "spec" not in document:
        errors.append(FieldError("spec", "required"))
    return errors


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    schema = resource_schema(KINDS[kind], strict=True)
    schema["properties"].pop("status")
    return jsonschema.Draft4Validator(schema)


def _schema_errors(info: KindInfo, document: dict[str, Any]) -> Iterator[FieldError]:
    for error in _validator(info.kind).iter_errors(document):
        yield from _from_jsonschema(error)


def _from_jsonschema(error: jsonschema.ValidationError) -> Iterable[FieldError]:
    path = _path(error.absolute_path)
    value, rule = error.instance, error.validator
    if rule == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        for field in sorted(set(value) - known):
            yield FieldError(_join(path, field), f"unknown field{_suggest(field, known)}; "
                                                 f"known fields: {', '.join(sorted(known))}")
    elif rule == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        yield FieldError(_join(path, missing[0] if missing else ""), "required field is missing")
    elif rule == "enum":
        choices = ", ".join(str(v) for v in error.validator_value)
        yield FieldError(path, f"unsupported value {value!r}; must be one of: {choices}"
                               f"{_suggest(value, error.validator_value)}")
    elif rule == "type":
        fields = error.schema.get("properties")
        shape = f" with fields {', '.join(fields)}" if fields else ""
        yield FieldError(path, f"must be of type {error.validator_value}{shape} (got "
                               f"{type(value).__name__} {value!r})")
    elif rule in ("minimum", "maximum"):
        exclusive = error.schema.get("exclusiveMinimum" if rule == "minimum" else
                                     "exclusiveMaximum")
        sign = {("minimum", False): ">=", ("minimum", True): ">", ("maximum", False): "<=",
                ("maximum", True): "<"}[(rule, bool(exclusive))]
        yield FieldError(path, f"must be {sign} {error.validator_value} (got {value})")
    elif rule in ("minItems", "maxItems"):
        bound = "at least" if rule == "minItems" else "at most"
        yield FieldError(path, f"must have {bound} {error.validator_value} entries "
                               f"(got {len(value)})")
    elif rule in ("minLength", "maxLength"):
        bound = "at least" if rule == "minLength" else "at most"
        yield FieldError(path, f"must be {bound} {error.validator_value} characters long")
    elif rule == "pattern":
        hint = error.schema.get("description") or f"must match {error.validator_value}"
        yield FieldError(path, f"{value!r} is not valid. {hint}")
    else:
        yield FieldError(path, error.message)


def _from_pydantic(error: Any) -> FieldError:
    path = _join("spec", _path(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldValueError):
        path, message = _join(path, cause.path), str(cause)
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] == "missing":
        message = "required field is missing"
    return FieldError(path, message)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path and field else path or field


def _suggest(value: Any, choices: Iterable[Any]) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
