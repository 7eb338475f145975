"""Publishing an experience library, decided from data: the ConfigMap builder, when a pass
publishes, whose ConfigMap may be written, and what status says."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mendel.controller.runs import library, naming
from mendel.controller.runs.library import Publication
from mendel.controller.runs.observed import LibraryView, Observed, summarize_library
from mendel.controller.runs.plan import PlanInputs, plan_run
from mendel.controller.runs.summary import kind_summary
from mendel.tracking import contract
from mendel.tracking.runs import RunSnapshot

from .builders import UID, parsed, run_ref, wire_spec

REF = run_ref("ExperienceLibrary")
TEXT = contract.render_experiences([("G0", "Check the units first."),
                                    ("G1", "Re-read the question before answering.")])
URI = "prompts:/demo-library/3"
RUN = RunSnapshot(run_id="r" * 32, experiment_id="1",
                  tags={contract.TAG_LIBRARY_PROMPT_URI: URI, contract.TAG_LIBRARY_SIZE: "2",
                        contract.TAG_LIBRARY_VERSION: "12"})
WANTED = Publication(config_map="demo-library", prompt_uri=URI, prompt_name="demo-library",
                     prompt_version="3", version=12, run_id="r" * 32)


def view(name: str = "demo-library", uri: str = URI, version: str = "12",
         owned: bool = True) -> LibraryView:
    return LibraryView(name=name, prompt_uri=uri, version=version, owned=owned)


def wanted(observed: Observed | None = None, run: RunSnapshot = RUN,
           kind: str = "ExperienceLibrary", **spec: Any) -> Publication | None:
    return library.publication(run_ref(kind), parsed(kind, **spec), run, observed or Observed())


def test_config_map_holds_the_text_the_entries_and_who_made_it() -> None:
    body = library.config_map(REF, WANTED, TEXT)
    meta = body["metadata"]
    assert (body["kind"], meta["name"], meta["namespace"]) == ("ConfigMap", "demo-library",
                                                               "team-a")
    assert body["data"][library.TEXT_KEY] == TEXT
    assert json.loads(body["data"][library.JSON_KEY]) == [
        {"id": "G0", "text": "Check the units first."},
        {"id": "G1", "text": "Re-read the question before answering."}]
    assert meta["labels"] == {**naming.child_labels("ExperienceLibrary", "demo", UID, "library"),
                              naming.LABEL_LIBRARY_VERSION: "12"}
    assert all(naming.is_allowed_label(key) for key in meta["labels"])
    assert meta["annotations"] == {naming.ANNOTATION_PROMPT_URI: URI,
                                   naming.ANNOTATION_MLFLOW_RUN_ID: "r" * 32}
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ExperienceLibrary", "demo", UID)
    assert owner["controller"] is True and owner["blockOwnerDeletion"] is True
    assert "resourceVersion" not in meta and "immutable" not in body  # it is updated later


def test_config_map_replaces_only_the_version_it_read() -> None:
    body = library.config_map(REF, WANTED, TEXT, resource_version="4711")
    assert body["metadata"]["resourceVersion"] == "4711"


def test_config_map_of_an_empty_library_has_an_empty_entry_list() -> None:
    body = library.config_map(REF, WANTED, "None")
    assert body["data"][library.TEXT_KEY] == "None"
    assert json.loads(body["data"][library.JSON_KEY]) == []


def test_too_large_is_about_the_data_a_config_map_can_hold() -> None:
    small = library.config_map(REF, WANTED, TEXT)
    huge = library.config_map(REF, WANTED, "[G0]. " + "x" * library.MAX_DATA_BYTES)
    assert not library.too_large(small) and library.too_large(huge)


@pytest.mark.parametrize(("uri", "expected"), [
    pytest.param("prompts:/demo-library/3", ("demo-library", "3"), id="numbered"),
    pytest.param(" prompts:/lib.v2_x/12 ", ("lib.v2_x", "12"), id="padded"),
    pytest.param("prompts:/demo-library@production", None, id="alias"),
    pytest.param("prompts:/demo-library/latest", None, id="word"),
    pytest.param("prompts://other.example/lib/3", None, id="another-server"),
    pytest.param("models:/lib/3", None, id="a-model"),
    pytest.param("", None, id="empty"),
])
def test_parse_prompt_uri_takes_only_a_numbered_version(uri: str,
                                                        expected: tuple[str, str] | None) -> None:
    assert library.parse_prompt_uri(uri) == expected


def test_publication_is_due_when_the_tag_first_appears() -> None:
    assert wanted() == WANTED


@pytest.mark.parametrize("observed", [
    pytest.param(Observed(libraries=(view(uri="prompts:/demo-library/2", version="8"),)),
                 id="an-older-version"),
    pytest.param(Observed(libraries=(view(owned=False),)), id="not-owned"),
    pytest.param(Observed(libraries=(view(name="old-name"),)), id="under-another-name"),
])
def test_publication_is_due_until_its_own_config_map_holds_the_version(
        observed: Observed) -> None:
    assert wanted(observed) == WANTED


def test_publication_is_not_due_once_published() -> None:
    assert wanted(Observed(libraries=(view(),))) is None


@pytest.mark.parametrize(("run", "kind"), [
    pytest.param(RunSnapshot(run_id="r" * 32), "ExperienceLibrary", id="no-tag-yet"),
    pytest.param(RunSnapshot(run_id="r" * 32, tags={contract.TAG_LIBRARY_PROMPT_URI:
                                                    "prompts:/x@latest"}),
                 "ExperienceLibrary", id="alias-uri"),
    pytest.param(RunSnapshot(error="MLflow down"), "ExperienceLibrary", id="mlflow-down"),
    pytest.param(RUN, "QDEvolution", id="another-kind"),
])
def test_publication_is_not_due_without_a_numbered_prompt(run: RunSnapshot, kind: str) -> None:
    assert wanted(run=run, kind=kind) is None


def test_publication_goes_to_the_configured_name() -> None:
    due = wanted(library={"configMapName": "agents.math-library"})
    assert due is not None and due.config_map == "agents.math-library"


def test_library_version_falls_back_to_the_metric() -> None:
    run = RunSnapshot(run_id="r", metrics={contract.METRIC_LIBRARY_VERSION: 7.0},
                      tags={contract.TAG_LIBRARY_VERSION: "seven"})
    assert library.library_version(run) == 7
    assert library.library_version(RunSnapshot()) == 0


def _existing(uid: str = UID, role: str = "library", uri: str = URI,
              version: str = "12") -> dict[str, Any]:
    return {"metadata": {
        "name": "demo-library", "resourceVersion": "99",
        "labels": {naming.LABEL_ROLE: role, naming.LABEL_LIBRARY_VERSION: version},
        "annotations": {naming.ANNOTATION_PROMPT_URI: uri},
        "ownerReferences": [{"kind": "ExperienceLibrary", "uid": uid}]}}


@pytest.mark.parametrize(("existing", "expected"), [
    pytest.param(None, "absent", id="absent"),
    pytest.param(_existing(), "current", id="holds-the-version"),
    pytest.param(_existing(uri="prompts:/demo-library/2", version="8"), "ours", id="older"),
    pytest.param(_existing(uid="someone-else"), "foreign", id="another-owner"),
    pytest.param(_existing(role="spec"), "foreign", id="our-spec-snapshot"),
    pytest.param({"metadata": {"name": "demo-library"}, "data": {"k": "v"}}, "foreign",
                 id="a-users-config-map"),
])
def test_ownership_writes_only_our_own_library(existing: dict[str, Any] | None,
                                              expected: str) -> None:
    assert library.ownership(existing, REF, WANTED) == expected


def test_summarize_library_trusts_an_owner_reference_not_a_label() -> None:
    body = library.config_map(REF, WANTED, TEXT)
    assert summarize_library(body) == view()
    body["metadata"]["ownerReferences"] = [{"uid": "another"}]
    assert summarize_library(body).owned is False


def _plan(observed: Observed, run: RunSnapshot = RUN, previous: dict[str, Any] | None = None,
          **spec: Any) -> Any:
    wire = wire_spec("ExperienceLibrary", **spec)
    return plan_run(PlanInputs(run=REF, spec_wire=wire, spec=parsed("ExperienceLibrary", **spec),
                               observed=observed, mlflow=run, previous=previous or {},
                               now=datetime(2026, 1, 1, tzinfo=UTC)))


def test_plan_carries_the_publication_and_status_waits_for_the_write() -> None:
    before = _plan(Observed())
    assert before.publish == WANTED
    assert "configMap" not in before.reduced.status["library"]
    after = _plan(Observed(libraries=(view(),)), previous=before.reduced.status)
    assert after.publish is None
    assert after.reduced.status["library"] == {"size": 2, "version": 12,
                                               "configMap": "demo-library"}


def test_status_never_names_a_config_map_the_operator_does_not_own() -> None:
    run = RunSnapshot(run_id="r" * 32, experiment_id="1",
                      tags={**RUN.tags, contract.TAG_LIBRARY_CONFIG_MAP: "claimed"})
    stale = {"library": {"size": 2, "version": 12, "configMap": "demo-library"}}
    for observed in (Observed(), Observed(libraries=(view(owned=False),))):
        status = _plan(observed, run=run, previous=stale).reduced.status
        assert "configMap" not in status["library"]
    # While MLflow is down the mirrored library stays, but configMap still follows the index.
    down = _plan(Observed(), run=RunSnapshot(error="down"), previous=stale).reduced.status
    assert down["library"] == {"size": 2, "version": 12}


def test_kind_summary_prefers_metrics_and_falls_back_to_the_library_tags() -> None:
    spec = parsed("ExperienceLibrary")
    assert kind_summary("ExperienceLibrary", spec, RUN)["library"] == {"size": 2, "version": 12}
    moving = RunSnapshot(run_id="r", tags=RUN.tags,
                         metrics={contract.METRIC_LIBRARY_SIZE: 5.0,
                                  contract.METRIC_LIBRARY_VERSION: 14.0})
    assert kind_summary("ExperienceLibrary", spec, moving)["library"] == {"size": 5,
                                                                         "version": 14}
