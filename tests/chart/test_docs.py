"""docs/install.md stays true to the chart: its values table lists exactly the keys of
values.yaml (which test_schema.py ties to values.schema.json), with their defaults, and its
RBAC table names exactly the rules the chart renders."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.chart.conftest import Render
from tests.chart.support import CHART, REPO, one
from tests.chart.test_schema import SCHEMA, VALUES, schema_keys

DOC = (REPO / "docs" / "install.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", DOC, re.M | re.S)
    assert match, f"docs/install.md has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[2:]  # header and separator


def documented_values() -> dict[str, list[str]]:
    return {row[0].strip("`"): row for row in table_rows(section("Values"))}


def lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def test_values_table_lists_exactly_the_values_keys() -> None:
    documented = list(documented_values())
    assert len(documented) == len(set(documented)), "a key is documented twice"
    assert sorted(documented) == sorted(schema_keys(VALUES, SCHEMA))


def test_values_table_defaults_match_values_yaml() -> None:
    for key, row in documented_values().items():
        default = lookup(VALUES, key)
        if isinstance(default, dict) and default and key.endswith("resources"):
            continue  # summarised in words
        shown = row[2].strip("`")
        expected = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix(
            "\n...").strip()
        if isinstance(default, str):
            expected = default if default else '""'
        assert shown == expected, f"{key}: docs say {row[2]}, values.yaml has {default!r}"


def test_rbac_table_matches_rendered_rules(render: Render) -> None:
    # The table lists every rule of the cluster-wide mode, a superset of the namespaced one.
    role = one(render({"watch.allNamespaces": True}), "ClusterRole", "r1-mendel")
    namespaced = one(render(), "Role", "r1-mendel")["rules"]
    assert all(rule in role["rules"] for rule in namespaced)
    rendered = {(tuple(rule["apiGroups"]), ", ".join(rule["verbs"])) for rule in role["rules"]}
    documented = set()
    for group, _resources, verbs, _why in table_rows(section("RBAC")):
        groups = tuple('' if g.strip() == '`""`' else g.strip().strip("`")
                       for g in group.split(","))
        documented.add((groups, verbs))
    assert documented == rendered
    assert len(table_rows(section("RBAC"))) == len(role["rules"])


def test_chart_readme_points_to_the_docs() -> None:
    assert "docs/install.md" in (CHART / "values.yaml").read_text()
