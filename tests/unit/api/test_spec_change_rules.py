"""The CEL rules that guard experiment-defining fields, evaluated as the API server would
(cel-python): a change is refused under runPolicy.onSpecChange Refuse (the default) and
allowed under Restart; no change, or a field absent before and after, always passes."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
import yaml

from mendel.api.crd import crds
from mendel.api.kinds import KINDS
from mendel.api.mutability import immutable_wire_paths

from ..controller.builders import EXAMPLES, FILES


def _spec_rules(kind: str) -> list[dict[str, str]]:
    crd = crds()[f"{KINDS[kind].crd_name}.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return list(spec["x-kubernetes-validations"])


def _allowed(rule: str, new: dict[str, Any], old: dict[str, Any]) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    result = program.evaluate({"self": celpy.json_to_cel(new),
                               "oldSelf": celpy.json_to_cel(old)})
    return bool(result)


def _changed(spec: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = _other(node.get(leaf))
    return out


def _other(value: Any) -> Any:
    """A different value of the same type, as an edit in Git would make."""
    if isinstance(value, list):
        return value + value[:1] if value else ["added"]
    if isinstance(value, dict):
        return {**value, "revision": "changed-in-git"}
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    return "set-in-git"


CASES = [(kind, path) for kind in KINDS
         for path in immutable_wire_paths(KINDS[kind].spec_model)]


@pytest.mark.parametrize(("kind", "path"), CASES, ids=[f"{k}:{p}" for k, p in CASES])
def test_a_change_is_refused_unless_the_policy_is_restart(kind: str, path: str) -> None:
    (rule,) = [r["rule"] for r in _spec_rules(kind) if f"self.{path} == oldSelf.{path}"
               in r["rule"]]
    old = yaml.safe_load((EXAMPLES / FILES[kind]).read_text())["spec"]
    new = _changed(old, path)
    assert _allowed(rule, old, old)
    assert not _allowed(rule, new, old)
    assert not _allowed(rule, {**new, "runPolicy": {"onSpecChange": "Refuse"}}, old)
    assert _allowed(rule, {**new, "runPolicy": {"onSpecChange": "Restart"}}, old)


def test_every_experiment_defining_field_has_a_rule() -> None:
    for kind in KINDS:
        rules = " ".join(r["rule"] for r in _spec_rules(kind))
        for path in immutable_wire_paths(KINDS[kind].spec_model):
            assert f"self.{path} == oldSelf.{path}" in rules, (kind, path)
