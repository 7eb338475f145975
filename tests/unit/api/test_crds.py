"""The generated CRDs: committed files are current, structural, documented and bounded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from mendel.api.base import ApiModel
from mendel.api.crd import CrdError, crds, render_yaml, structural_schema
from mendel.api.kinds import KINDS

ROOT = Path(__file__).resolve().parents[3]
GENERATED = crds()


@pytest.mark.parametrize("filename", sorted(GENERATED), ids=str)
def test_committed_crd_matches_models(filename: str) -> None:
    committed = (ROOT / "crds" / filename).read_text()
    assert committed == render_yaml(GENERATED[filename]), (
        f"crds/{filename} is stale: run hack/generate-crds.sh and commit the result"
    )


def test_no_stray_files_in_crds_directory() -> None:
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(GENERATED)


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (path, node) pair below node; list items end in '[]', map values in '.*'."""
    nodes = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        nodes += walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        nodes += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        nodes += walk(node["additionalProperties"], f"{path}.*")
    return nodes


def is_field(path: str) -> bool:
    """Named fields need descriptions; list items and map values are described by them."""
    return path.startswith((".spec", ".status")) and not path.endswith(("[]", ".*"))


@pytest.mark.parametrize("kind", sorted(KINDS), ids=str)
def test_crd_schema_is_structural_documented_and_bounded(kind: str) -> None:
    crd = GENERATED[f"{KINDS[kind].crd_name}.yaml"]
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "anyOf" not in text and "title" not in text
    for path, node in walk(schema):
        assert "type" in node, f"{kind}{path} has no type"
        if is_field(path):
            assert node.get("description"), f"{kind}{path} has no description"
        if node["type"] == "array":
            assert "maxItems" in node, f"{kind}{path} is an unbounded list"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"


@pytest.mark.parametrize("kind", sorted(KINDS), ids=str)
def test_crd_has_status_printer_columns_and_names(kind: str) -> None:
    info = KINDS[kind]
    crd = GENERATED[f"{info.crd_name}.yaml"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == [info.short_name]
    assert "mendel" in crd["spec"]["names"]["categories"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Progress"] == ".status.progress.percent"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    for path in columns.values():
        if path.startswith(".status."):
            node = status
            for part in re.sub(r"\[.*?\]", "", path).removeprefix(".status.").split("."):
                node = node["properties"][part]
                if node["type"] == "array":
                    node = node["items"]


def test_immutable_and_increase_only_rules_are_emitted() -> None:
    spec = GENERATED["qdevolutions.mendel.dev.yaml"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]["properties"]
    # Immutability moved up to the spec, where the rule can read runPolicy.onSpecChange.
    assert all(r["rule"] != "self == oldSelf"
               for r in spec["baseModel"].get("x-kubernetes-validations", []))
    rules = GENERATED["qdevolutions.mendel.dev.yaml"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert any("self.baseModel == oldSelf.baseModel" in r["rule"]
               and r["message"].startswith("spec.baseModel defines the experiment") for r in rules)
    generations = spec["budget"]["properties"]["generations"]
    assert generations["x-kubernetes-validations"][0]["rule"] == "self >= oldSelf"
    assert "x-kubernetes-validations" not in spec["suspend"]


def test_generator_refuses_undocumented_field() -> None:
    class Undocumented(ApiModel):
        documented: int = Field(description="Has one.")
        bare: int

    with pytest.raises(CrdError, match="bare: field has no description"):
        structural_schema(Undocumented)


def test_generator_refuses_unbounded_list() -> None:
    class Unbounded(ApiModel):
        names: list[str] = Field(description="No maxItems.")

    with pytest.raises(CrdError, match="unbounded|maxItems"):
        structural_schema(Unbounded)


def test_drift_check_notices_a_changed_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from mendel.api.qdevolution import Budget

    field = Budget.model_fields["generations"]
    monkeypatch.setattr(field, "description", "A changed description.")
    Budget.model_rebuild(force=True)
    try:
        from mendel.api import QDEvolutionSpec
        QDEvolutionSpec.model_rebuild(force=True)
        regenerated = render_yaml(crds()["qdevolutions.mendel.dev.yaml"])
        assert regenerated != (ROOT / "crds" / "qdevolutions.mendel.dev.yaml").read_text()
    finally:
        monkeypatch.undo()
        Budget.model_rebuild(force=True)
        from mendel.api import QDEvolutionSpec
        QDEvolutionSpec.model_rebuild(force=True)
