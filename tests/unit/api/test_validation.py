"""`validate_resource`: every example passes, every invalid fixture fails naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mendel.api.validation import load_documents, validate_resource

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))
OPERATOR_ONLY = sorted((ROOT / "tests" / "fixtures" / "operator-only").glob("*.yaml"))


def expectation(path: Path) -> tuple[str, str]:
    """The '# field:' and optional '# message:' header lines of a fixture."""
    lines = path.read_text().splitlines()
    field = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# field:"))
    message = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("# message:")), ""
    )
    return field, message


def test_fixture_sets_are_large_enough() -> None:
    assert len(EXAMPLES) >= 6
    assert len(INVALID) >= 8


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_validate_resource_accepts_example(path: Path) -> None:
    documents = load_documents(path.read_text())
    assert documents
    for document in documents:
        assert validate_resource(document) == []


@pytest.mark.parametrize("path", INVALID + OPERATOR_ONLY, ids=lambda p: p.stem)
def test_validate_resource_names_the_field(path: Path) -> None:
    field, message = expectation(path)
    (document,) = load_documents(path.read_text())
    errors = validate_resource(document)
    assert errors, f"{path.name} was accepted"
    paths = [error.path for error in errors]
    assert field in paths, f"expected an error at {field}, got {[str(e) for e in errors]}"
    if message:
        assert any(message in error.message for error in errors if error.path == field)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        pytest.param("a list", "", id="not-a-mapping"),
        pytest.param({"apiVersion": "v1", "kind": "QDEvolution", "metadata": {"name": "x"},
                      "spec": {}}, "apiVersion", id="wrong-api-version"),
        pytest.param({"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolutoin",
                      "metadata": {"name": "x"}, "spec": {}}, "kind", id="misspelled-kind"),
        pytest.param({"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolution",
                      "spec": {}}, "metadata.name", id="no-name"),
    ],
)
def test_validate_resource_checks_header(document: object, path: str) -> None:
    errors = validate_resource(document)
    assert path in [error.path for error in errors]


def test_misspelled_kind_gets_a_suggestion() -> None:
    document = {"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolutoin",
                "metadata": {"name": "x"}, "spec": {}}
    (error,) = [e for e in validate_resource(document) if e.path == "kind"]
    assert "did you mean 'QDEvolution'" in error.message


def test_load_documents_reads_exponent_floats_as_numbers() -> None:
    (document,) = load_documents("learningRate: 1e-4\nother: 2.5E+3\n")
    assert document == {"learningRate": 1e-4, "other": 2500.0}


def test_status_is_ignored_when_validating() -> None:
    (document,) = load_documents((ROOT / "examples" / "qdevolution-small.yaml").read_text())
    document["status"] = {"phase": "Bogus"}
    assert validate_resource(document) == []
