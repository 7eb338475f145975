"""The `mendel` command line: exit codes and what it prints."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from mendel.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_validate_passes_every_example() -> None:
    args = ["validate"]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        args += ["-f", str(path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count(": valid") == len(args) // 2


def test_validate_fails_and_names_field() -> None:
    path = ROOT / "tests" / "fixtures" / "invalid" / "one-expert.yaml"
    result = runner.invoke(app, ["validate", "-f", str(path)])
    assert result.exit_code == 1
    assert "spec.experts: must have at least 2 entries (got 1)" in result.output


def test_validate_reports_every_document_of_a_stream(tmp_path: Path) -> None:
    good = (ROOT / "examples" / "qdevolution-small.yaml").read_text()
    bad = (ROOT / "tests" / "fixtures" / "invalid" / "inline-api-key.yaml").read_text()
    stream = tmp_path / "two.yaml"
    stream.write_text(good + "\n---\n" + bad)
    result = runner.invoke(app, ["validate", "-f", str(stream)])
    assert result.exit_code == 1
    assert "QDEvolution/tiny-skills: valid" in result.output
    assert "ExperienceLibrary/inline-key: invalid" in result.output
    assert "1 invalid document(s)" in result.output


def test_validate_reads_standard_input() -> None:
    text = (ROOT / "examples" / "experiencelibrary-small.yaml").read_text()
    result = runner.invoke(app, ["validate", "-f", "-"], input=text)
    assert result.exit_code == 0, result.output


def test_validate_reports_unreadable_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-f", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_crds_prints_three_documents() -> None:
    result = runner.invoke(app, ["crds"])
    assert result.exit_code == 0
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    assert sorted(d["spec"]["names"]["kind"] for d in documents) == [
        "CompressorTraining", "ExperienceLibrary", "QDEvolution"]


def test_crds_writes_the_committed_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["crds", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0
    for path in (ROOT / "crds").glob("*.yaml"):
        assert (tmp_path / path.name).read_text() == path.read_text()
