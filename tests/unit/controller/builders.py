"""Shared builders for the controller's unit tests: parsed example specs and run refs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from mendel.api.kinds import KINDS
from mendel.api.validation import parse_spec
from mendel.controller.runs.manifests import JobInputs, RunRef

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = {
    "QDEvolution": "qdevolution-small.yaml",
    "ExperienceLibrary": "experiencelibrary-small.yaml",
    "CompressorTraining": "compressortraining-small.yaml",
}
UID = "0f3c2a9e-1111-4222-8333-444455556666"


def wire_spec(kind: str, **overrides: Any) -> dict[str, Any]:
    """The example's spec with top-level keys replaced."""
    document = yaml.safe_load((EXAMPLES / FILES[kind]).read_text())
    spec = copy.deepcopy(document["spec"])
    spec.update(overrides)
    return spec


def parsed(kind: str, **overrides: Any) -> Any:
    return parse_spec(KINDS[kind], wire_spec(kind, **overrides))


def run_ref(kind: str = "QDEvolution", name: str = "demo", generation: int = 1) -> RunRef:
    return RunRef(kind=kind, name=name, namespace="team-a", uid=UID, generation=generation)


def inputs(kind: str = "QDEvolution", **fields: Any) -> JobInputs:
    spec_overrides = fields.pop("spec", {})
    return JobInputs(run=run_ref(kind), spec=parsed(kind, **spec_overrides),
                     image="registry/worker:1", tracking_uri="http://mlflow:5000",
                     run_id="a" * 32, **fields)


