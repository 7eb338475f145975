"""Against a real MLflow store (sqlite): the experiments parent runs go to, reading a
registered library's prompt text back, and the operator's client keeping to its own
tracking server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mendel.tracking import contract
from mendel.tracking import runs as tracking


@pytest.fixture()
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _parent_run_experiment(client: Any, experiment: str) -> dict[str, str]:
    snapshot = tracking.ensure_parent_run(client, experiment=experiment,
                                          tags={contract.TAG_UID: "u-1"}, run_name="ns/a")
    return dict(client.get_experiment(snapshot.experiment_id).tags)


def test_experiments_mendel_creates_open_in_the_model_training_view(store: str) -> None:
    tags = _parent_run_experiment(tracking.make_client(store), "mendel/ns/QDEvolution")
    assert tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize(("chosen", "expected"), [
    pytest.param(None, "custom_model_development", id="untagged-is-tagged"),
    pytest.param("genai_development", "genai_development", id="a-chosen-kind-stays"),
])
def test_an_existing_experiment_gets_the_kind_only_if_it_has_none(
        store: str, chosen: str | None, expected: str) -> None:
    client = tracking.make_client(store)
    client.create_experiment("theirs", tags={} if chosen is None else
                             {"mlflow.experimentKind": chosen})
    assert _parent_run_experiment(client, "theirs")["mlflow.experimentKind"] == expected


def test_load_prompt_text_reads_one_numbered_version(store: str) -> None:
    client = tracking.make_operator_client(store)
    client.register_prompt("lib", "[G0]. First.")
    client.register_prompt("lib", "[G0]. First.\n[G1]. Second.")
    assert tracking.load_prompt_text(client, "lib", "1") == "[G0]. First."
    assert tracking.load_prompt_text(client, "lib", "2") == "[G0]. First.\n[G1]. Second."


@pytest.mark.parametrize(("name", "version"), [
    pytest.param("lib", "9", id="no-such-version"),
    pytest.param("nothing", "1", id="no-such-prompt"),
    pytest.param("chat", "1", id="a-chat-prompt"),
])
def test_load_prompt_text_maps_what_it_cannot_publish_to_tracking_unavailable(
        store: str, name: str, version: str) -> None:
    client = tracking.make_operator_client(store)
    client.register_prompt("lib", "[G0]. First.")
    client.register_prompt("chat", [{"role": "system", "content": "be brief"}])
    with pytest.raises(tracking.TrackingUnavailable):
        tracking.load_prompt_text(client, name, version)


def test_the_operator_client_ignores_a_registry_uri_from_the_environment(
        store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    client = tracking.make_operator_client(store)
    client.register_prompt("lib", "[G0]. Here.")
    assert not (tmp_path / "elsewhere.db").exists()
    assert tracking.load_prompt_text(tracking.make_operator_client(store), "lib", "1") == \
        "[G0]. Here."
