"""Generate CustomResourceDefinitions from the pydantic models.

pydantic's JSON Schema is close to, but not, a Kubernetes structural schema: it uses
`$ref`/`$defs`, `anyOf` with null for optionals, draft-2020 `exclusiveMinimum` numbers
and titles. `structural_schema` rewrites it into the form the API server accepts (every
node typed, no references, OpenAPI v3.0 bounds), keeps each field's description for
`kubectl explain`, and refuses to emit a schema with an undocumented field or an
unbounded list, so those mistakes fail the build rather than reach a cluster.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from mendel.api.base import cel
from mendel.api.kinds import (
    API_VERSION,
    CATEGORIES,
    GROUP,
    KINDS,
    MAX_NAME_LENGTH,
    VERSION,
    KindInfo,
)
from mendel.api.mutability import IMMUTABLE_RULE, immutable_wire_paths

__all__ = [
    "CrdError",
    "crd_for",
    "crds",
    "render_chart_template",
    "render_yaml",
    "resource_schema",
    "structural_schema",
]

_DROP = {"title", "$defs", "discriminator"}
_CONCAT = {"x-kubernetes-validations", "required"}


class CrdError(ValueError):
    """A model cannot be expressed as a structural, documented, bounded CRD schema."""


def structural_schema(
    model: type[BaseModel], *, strict: bool = False, defaults: bool = True
) -> dict[str, Any]:
    """The model's schema in Kubernetes structural form.

    Args:
        model: The pydantic model.
        strict: Keep `additionalProperties: false` on every object, as kubectl's strict
            field validation does. A CRD may not carry it (the API server prunes unknown
            fields instead), but the CLI validates with it to name misspelled fields.
        defaults: Keep scalar defaults, which the API server then fills in on create.
            Off for status, which only the operator writes.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    options = _Options(defs=raw.get("$defs", {}), strict=strict, defaults=defaults)
    return _check(_convert(raw, options), path=model.__name__)


def resource_schema(info: KindInfo, *, strict: bool = False) -> dict[str, Any]:
    """openAPIV3Schema of a whole resource: apiVersion, kind, metadata, spec, status."""
    return {
        "type": "object",
        "description": f"{info.kind}: {info.description}",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"Always {API_VERSION}."},
            "kind": {"type": "string", "description": f"Always {info.kind}."},
            "metadata": {"type": "object"},
            "spec": _with_spec_change_rules(structural_schema(info.spec_model, strict=strict),
                                            immutable_wire_paths(info.spec_model)),
            "status": structural_schema(info.status_model, strict=strict, defaults=False),
        },
        "x-kubernetes-validations": [
            cel(
                f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                f"metadata.name must be at most {MAX_NAME_LENGTH} characters so child object "
                "names fit in 63",
            )
        ],
    }


_RESTART = ("has(self.runPolicy) && has(self.runPolicy.onSpecChange) && "
            "self.runPolicy.onSpecChange == 'Restart'")


def _present(root: str, parts: list[str]) -> str:
    """CEL: every step of root.a.b.c exists."""
    return " && ".join(f"has({root}.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))


def _with_spec_change_rules(spec: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Move each immutable field's `self == oldSelf` rule up to the spec, where it can see
    runPolicy.onSpecChange: the change is allowed under Restart and refused otherwise.

    A field-level rule cannot read a sibling, so the rule lives on the spec object, guarded
    with has() for optional fields (absent before and after is no change).
    """
    rules = []
    for path in paths:
        parts = path.split(".")
        node = spec
        for part in parts:
            node = node["properties"][part]
        kept = [r for r in node.get("x-kubernetes-validations", [])
                if r["rule"] != IMMUTABLE_RULE]
        node.pop("x-kubernetes-validations", None)
        if kept:
            node["x-kubernetes-validations"] = kept
        new, old = _present("self", parts), _present("oldSelf", parts)
        same = f"({new} ? ({old} && self.{path} == oldSelf.{path}) : !({old}))"
        rules.append(cel(f"{_RESTART} || {same}",
                         f"spec.{path} defines the experiment and cannot change in place: set "
                         "spec.runPolicy.onSpecChange to Restart to start a new run with it, "
                         "or create a new resource"))
    spec["x-kubernetes-validations"] = spec.get("x-kubernetes-validations", []) + rules
    return spec


def crd_for(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/name": "mendel", "app.kubernetes.io/part-of": "mendel"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": [info.short_name],
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in info.columns],
                    "schema": {"openAPIV3Schema": resource_schema(info)},
                }
            ],
        },
    }


def crds() -> dict[str, dict[str, Any]]:
    """Every CRD, keyed by the file name it is written to under crds/."""
    return {f"{info.crd_name}.yaml": crd_for(info) for info in KINDS.values()}


def render_yaml(document: dict[str, Any]) -> str:
    """Stable YAML for a generated document (keys in insertion order, long lines kept)."""
    header = "# Generated by hack/generate-crds.sh from the models in mendel.api; do not edit.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def render_chart_template(document: dict[str, Any]) -> str:
    """The CRD as a Helm template for charts/mendel, from the same document as crds/.

    The chart ships its CRDs in templates/, not crds/, because Helm never upgrades what is in
    crds/. So the chart's copy is a template: the same spec, plus the chart's labels and the
    annotations (``helm.sh/resource-policy: keep`` by default, so uninstalling the chart keeps
    the CRDs and every resource of their kinds) and a switch, ``crds.install``. Braces that
    Go templates would read are escaped, so any description renders verbatim.
    """
    if not document["metadata"].get("labels"):
        raise CrdError(f"{document['metadata']['name']}: the chart template needs labels to extend")
    head = {key: document[key] for key in ("apiVersion", "kind")}
    metadata = yaml.safe_dump({"metadata": document["metadata"]}, sort_keys=False, width=100)
    spec = yaml.safe_dump({"spec": document["spec"]}, sort_keys=False, width=100,
                          allow_unicode=True)
    text = "".join([
        "{{- /* Generated by hack/generate-crds.sh from the models in mendel.api; "
        "do not edit. */}}\n",
        "{{- if .Values.crds.install }}\n",
        _escape_template(yaml.safe_dump(head, sort_keys=False)),
        _escape_template(metadata),
        '    {{- include "mendel.crdLabels" . | nindent 4 }}\n',
        "  annotations:\n",
        '    {{- include "mendel.crdAnnotations" . | nindent 4 }}\n',
        _escape_template(spec),
        "{{- end }}\n",
    ])
    return text


def _escape_template(text: str) -> str:
    """Make Go-template delimiters literal: ``{{`` becomes ``{{ "{{" }}`` (one pass)."""
    return re.sub(r"\{\{|\}\}", lambda m: '{{ "' + m.group(0) + '" }}', text)


@dataclass(frozen=True)
class _Options:
    defs: dict[str, Any]
    strict: bool
    defaults: bool


def _keep_default(value: Any, options: _Options) -> bool:
    # Only scalars: object defaults would freeze today's nested defaults into stored
    # objects, and the API server mishandles empty-string defaults.
    return options.defaults and value not in (None, "") and not isinstance(value, dict | list)


def _convert(node: dict[str, Any], options: _Options) -> dict[str, Any]:
    node = _inline(node, options.defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "additionalProperties" and value is False
                            and not options.strict):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, options) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, options)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default" and not _keep_default(value, options):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if "enum" in out and "type" not in out:
        out["type"] = _enum_type(out["enum"])
    return _ordered(out)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Description and type first, the rest alphabetically: stable, readable files."""
    head = [k for k in ("description", "type") if k in node]
    return {k: node[k] for k in head + sorted(k for k in node if k not in head)}


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Resolve $ref, allOf-of-one and Optional anyOf, merging the outer keys over the inner."""
    node = dict(node)
    target: dict[str, Any] | None = None
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
    elif "allOf" in node and len(node["allOf"]) == 1:
        target = node.pop("allOf")[0]
    elif "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise CrdError(f"unsupported union in schema: {node['anyOf']}")
        node.pop("anyOf")
        target = options[0]
    if target is None:
        return node
    merged = dict(_inline(target, defs))
    for key, value in node.items():
        if key in _CONCAT and key in merged:
            merged[key] = list(merged[key]) + [v for v in value if v not in merged[key]]
        else:
            merged[key] = value
    return merged


def _enum_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) for v in values):
        return "integer"
    return "string"


def _check(node: dict[str, Any], path: str) -> dict[str, Any]:
    """Refuse nodes the API server would reject or that `kubectl explain` could not explain."""
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise CrdError(f"{path}: schema node has no type: {node}")
    if node.get("type") == "array":
        if "maxItems" not in node:
            raise CrdError(f"{path}: list without maxItems; every list must be bounded")
        _check(node["items"], f"{path}[]")
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description"):
            raise CrdError(f"{path}.{name}: field has no description")
        _check(sub, f"{path}.{name}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _check(extra, f"{path}.*")
    return node
