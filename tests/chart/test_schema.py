"""values.schema.json: strict (every object closed), draft-07 with local $refs only, in sync with
values.yaml, and enforced by both Helm 3 (gojsonschema) and Helm 4 (jsonschema v6).

The two libraries word their errors differently, so the negative cases assert on the field
path each error names, never on the message text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.support import CHART, template

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return node


def nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema object below node, with a readable path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += nodes(value, f"{path}/{index}")
    return found


def error_paths(stderr: str) -> list[tuple[tuple[str, ...], str]]:
    """(field path, message) of each schema error, from Helm 3's or Helm 4's wording.

    Helm 3: ``- env.0.name: Must not validate…``, ``- (root): Additional property x…``.
    Helm 4: ``- at '/env/0/name': 'not' failed``, ``- at '': additional properties 'x'…``.
    """
    errors = []
    for line in stderr.splitlines():
        if match := re.match(r"^\s*-\s+at '([^']*)':\s*(.*)$", line):
            path = tuple(p for p in match.group(1).split("/") if p)
        elif match := re.match(r"^\s*-\s+(\S+):\s+(.*)$", line):
            path = () if match.group(1) == "(root)" else tuple(match.group(1).split("."))
        else:
            continue
        errors.append((path, match.group(2)))
    return errors


def test_schema_is_draft07_with_local_refs_only() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    for path, node in nodes(SCHEMA):
        if "$ref" in node:
            assert node["$ref"].startswith("#/definitions/"), f"{path}: remote $ref"
            assert len(node) == 1, f"{path}: draft-07 ignores keywords next to $ref"


def test_schema_closes_every_object() -> None:
    for path, node in nodes(SCHEMA):
        # (The affinity terms inside are Kubernetes' own types, typed object-or-array and
        # validated by the API server.)
        if path.endswith("/properties") or path == "/definitions":
            continue
        types = node.get("type")
        if types == "object":
            extra = node.get("additionalProperties")
            if "properties" in node:
                assert extra is False, f"{path}: an object with fields must be closed"
            else:
                assert isinstance(extra, dict) and "type" in extra, (
                    f"{path}: a map must type its values")


def schema_keys(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    """values.yaml's keys as dotted paths, recursing where the schema has fields."""
    keys = []
    for key, value in values.items():
        assert key in schema.get("properties", {}), f"{prefix}{key} is not in the schema"
        sub = schema["properties"][key]
        resolved = resolve(sub)
        if isinstance(value, dict) and value and "properties" in resolved and sub.get(
                "$ref") != "#/definitions/resources":
            keys += schema_keys(value, resolved, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_schema_and_values_have_the_same_keys() -> None:
    def schema_only(schema: dict[str, Any], values: dict[str, Any], prefix: str) -> list[str]:
        missing = []
        for key, sub in schema.get("properties", {}).items():
            if key not in values:
                missing.append(prefix + key)
            elif isinstance(values[key], dict) and values[key] and "properties" in resolve(
                    sub) and sub.get(
                    "$ref") != "#/definitions/resources":
                missing += schema_only(resolve(sub), values[key], f"{prefix}{key}.")
        return missing

    schema_keys(VALUES, SCHEMA)  # every values key is in the schema
    assert schema_only(SCHEMA, VALUES, "") == [], "schema keys without a default in values.yaml"


NEGATIVE = [
    pytest.param({"bogus": 1}, (), "bogus", id="unknown-top-level-key"),
    pytest.param({"image.tagg": "x"}, ("image",), "tagg", id="unknown-nested-key"),
    pytest.param({"mlflow.persistence.sise": "1Gi"}, ("mlflow", "persistence"), "sise",
                 id="unknown-deep-key"),
    pytest.param({"interval": "30s"}, ("interval",), None, id="interval-string"),
    pytest.param({"hostNetwork": "yes"}, ("hostNetwork",), None, id="bool-as-string"),
    pytest.param({"watch.namespaces": "team-a"}, ("watch", "namespaces"), None,
                 id="namespaces-not-a-list"),
    pytest.param({"watch.namespaces": ["Team_A"]}, ("watch", "namespaces", "0"), None,
                 id="namespace-not-a-dns-label"),
    pytest.param({"health.port": 70000}, ("health", "port"), None, id="port-out-of-range"),
    pytest.param({"image.pullPolicy": "Sometimes"}, ("image", "pullPolicy"), None,
                 id="pull-policy-enum"),
    pytest.param({"tracking.allowedUris": ["mlflow:5000"]}, ("tracking", "allowedUris", "0"),
                 None, id="allowed-uri-not-http"),
    pytest.param({"env": [{"name": "MLFLOW_TRACKING_TOKEN", "value": "t0ken"}]},
                 ("env", "0", "name"), None, id="credential-in-plain-env"),
    pytest.param({"env": [{"name": "A", "valueFrom": {}}]}, ("env", "0"), "valueFrom",
                 id="plain-env-valueFrom"),
    pytest.param({"envFrom": [{"configMapRef": {"name": "x"}}]}, ("envFrom", "0"), None,
                 id="envFrom-not-a-secret"),
    pytest.param({"secretEnv": [{"name": "TOKEN", "secretName": "s"}]}, ("secretEnv", "0"),
                 "key", id="secretEnv-without-key"),
    pytest.param({"nodeSelector": {"pool": 3}}, ("nodeSelector", "pool"), None,
                 id="nodeSelector-value-not-string"),
    pytest.param({"mlflow.artifacts.s3.bucketUri": "gs://bucket"},
                 ("mlflow", "artifacts", "s3", "bucketUri"), None, id="bucket-not-s3"),
]


@pytest.mark.parametrize(("values", "path", "word"), NEGATIVE)
def test_schema_rejects_naming_the_field(helm: Path, values: dict[str, Any],
                                         path: tuple[str, ...], word: str | None) -> None:
    result = template(helm, values)
    assert result.returncode != 0, f"accepted {values}"
    errors = error_paths(result.stderr)
    matching = [message for found, message in errors if found == path]
    assert matching, f"no error at {'/'.join(path) or '(root)'}: {result.stderr}"
    if word:
        assert any(word in message for message in matching), result.stderr


@pytest.mark.parametrize("values", [
    pytest.param({"tracking.uri": "http://mlflow.mlflow:5000"}, id="tracking-uri"),
    pytest.param({"env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "10.0.0.1"}]},
                 id="plain-env"),
    pytest.param({"secretEnv": [{"name": "MLFLOW_TRACKING_TOKEN", "secretName": "mlflow",
                                 "key": "token"}]}, id="secret-env"),
    pytest.param({"interval": 2.5}, id="fractional-interval"),
    pytest.param({"workers.serviceAccount.name": "runner"}, id="worker-account"),
])
def test_schema_accepts_valid_values(helm: Path, values: dict[str, Any]) -> None:
    result = template(helm, values)
    assert result.returncode == 0, result.stderr
