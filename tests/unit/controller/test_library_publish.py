"""Publishing the experience library in a reconcile pass, with fake Kubernetes and MLflow
clients: written once per version, never over a ConfigMap the resource does not own, and
retried without failing the resource while the prompt cannot be read."""

from __future__ import annotations

import asyncio
import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest

from mendel.controller.runs import handlers, library, naming
from mendel.controller.runs.library import Notice
from mendel.controller.runs.observed import Observed, summarize_library
from mendel.controller.runs.reconciler import Outcome, reconcile
from mendel.controller.runtime.context import OperatorContext
from mendel.tracking import contract

from .builders import UID, wire_spec
from .test_reconcile_pass import FakeKube, _ctx
from .test_reconciler import FakeMlflow

TEXT = contract.render_experiences([("G0", "Check the units first."),
                                    ("G1", "Re-read the question.")])


class Kube(FakeKube):
    """FakeKube plus ConfigMaps that can be read and written, with resource versions."""

    def __init__(self, existing: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config_maps: dict[str, dict[str, Any]] = {}
        if existing:
            self.config_maps[existing["metadata"]["name"]] = existing
        self.reads: list[str] = []
        self.writes: list[dict[str, Any]] = []

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        return copy.deepcopy(self.config_maps.get(name))

    def write_config_map(self, body: dict[str, Any]) -> None:
        self.writes.append(copy.deepcopy(body))
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(len(self.writes))
        self.config_maps[body["metadata"]["name"]] = stored


class Prompts(FakeMlflow):
    """FakeMlflow plus a Prompt Registry of text templates."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: dict[tuple[str, str], Any] = {}
        self.prompts_down = False
        self.prompt_reads = 0

    def get_prompt_version(self, name: str, version: str) -> Any:
        self.prompt_reads += 1
        if self.prompts_down:
            raise ConnectionError("connection refused")
        template = self.prompts.get((name, str(version)))
        return None if template is None else SimpleNamespace(template=template)


def _setup(kube: Kube, **spec: Any) -> tuple[OperatorContext, Prompts, dict[str, Any]]:
    ctx, factory = _ctx(kube)
    factory.client = Prompts()
    body = {"kind": "ExperienceLibrary", "status": {},
            "spec": wire_spec("ExperienceLibrary", **spec),
            "metadata": {"name": "demo", "namespace": "team-a", "uid": UID, "generation": 1}}
    return ctx, factory.client, body


def _pass(ctx: OperatorContext, body: dict[str, Any], observed: Observed | None = None,
          ) -> Outcome:
    return asyncio.run(reconcile(ctx, body, observed or Observed()))


def _register(mlflow: Prompts, version: int, text: str = TEXT, step: int = 12) -> str:
    """What the workload does at the end: a prompt version and the run's tags."""
    mlflow.prompts[("demo-library", str(version))] = text
    (run,) = mlflow.runs.values()
    uri = f"prompts:/demo-library/{version}"
    run.data.tags.update({contract.TAG_LIBRARY_PROMPT_URI: uri,
                          contract.TAG_LIBRARY_SIZE: str(len(contract.parse_experiences(text))),
                          contract.TAG_LIBRARY_VERSION: str(step)})
    return uri


def _published(kube: Kube, name: str = "demo-library") -> Observed:
    """The index after the operator's write reached it."""
    return Observed(libraries=(summarize_library(kube.config_maps[name]),))


def test_a_library_is_published_once_per_version() -> None:
    kube = Kube()
    ctx, mlflow, body = _setup(kube)
    first = _pass(ctx, body)
    assert first.library_notice is None and kube.reads == [] and mlflow.prompt_reads == 0
    uri = _register(mlflow, 1)
    published = _pass(ctx, body)
    (written,) = kube.writes
    assert written["metadata"]["name"] == "demo-library"
    assert "resourceVersion" not in written["metadata"]  # a create
    assert written["data"][library.TEXT_KEY] == TEXT
    assert [e["id"] for e in json.loads(written["data"][library.JSON_KEY])] == ["G0", "G1"]
    assert written["metadata"]["annotations"][naming.ANNOTATION_PROMPT_URI] == uri
    assert published.library_notice == Notice(
        False, "LibraryPublished",
        f"published {uri} (2 experiences, version 12) to ConfigMap demo-library")
    # Seen by the index: status names it, and no request is made any more, by this operator
    # or by a restarted one (a fresh context).
    reads = len(kube.reads)
    restarted = OperatorContext(config=ctx.config, kube=ctx.kube,
                                client_factory=ctx.client_factory)
    for context in (ctx, restarted):
        steady = _pass(context, body, _published(kube))
        assert steady.library_notice is None
        assert steady.plan.reduced.status["library"]["configMap"] == "demo-library"
    assert len(kube.writes) == 1 and len(kube.reads) == reads and mlflow.prompt_reads == 1


def test_a_pass_before_the_index_saw_the_write_writes_nothing() -> None:
    kube = Kube()
    ctx, mlflow, body = _setup(kube)
    _pass(ctx, body)
    _register(mlflow, 1)
    _pass(ctx, body)
    lagging = _pass(ctx, body)  # the index has not delivered the ConfigMap yet
    assert lagging.library_notice is None
    assert len(kube.writes) == 1 and mlflow.prompt_reads == 1


def test_a_new_version_replaces_the_one_it_read() -> None:
    kube = Kube()
    ctx, mlflow, body = _setup(kube)
    _pass(ctx, body)
    _register(mlflow, 1)
    _pass(ctx, body)
    newer = contract.render_experiences([("G0", "Only one lesson is left.")])
    uri = _register(mlflow, 2, newer, step=20)
    outcome = _pass(ctx, body, _published(kube))
    second = kube.writes[-1]
    assert len(kube.writes) == 2
    assert second["metadata"]["resourceVersion"] == "1"  # replaced only if unchanged
    assert second["metadata"]["labels"][naming.LABEL_LIBRARY_VERSION] == "20"
    assert second["metadata"]["annotations"][naming.ANNOTATION_PROMPT_URI] == uri
    assert second["data"][library.TEXT_KEY] == newer
    notice = outcome.library_notice
    assert notice is not None and notice.reason == "LibraryPublished"


@pytest.mark.parametrize("existing", [
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "data": {"mine": "keep"},
                  "metadata": {"name": "shared-library", "resourceVersion": "7"}},
                 id="a-users-config-map"),
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "data": {},
                  "metadata": {"name": "shared-library", "resourceVersion": "7",
                               "labels": {naming.LABEL_ROLE: "library"},
                               "ownerReferences": [{"uid": "another-resource"}]}},
                 id="another-resources-library"),
])
def test_a_config_map_of_someone_else_is_left_alone_with_a_warning(
        existing: dict[str, Any]) -> None:
    kube = Kube(copy.deepcopy(existing))
    ctx, mlflow, body = _setup(kube, library={"configMapName": "shared-library"})
    _pass(ctx, body)
    _register(mlflow, 1)
    outcome = _pass(ctx, body)
    assert kube.writes == [] and kube.config_maps["shared-library"] == existing
    assert mlflow.prompt_reads == 0  # refused before MLflow is asked
    notice = outcome.library_notice
    assert notice is not None and notice.warning
    assert notice.reason == "LibraryConfigMapConflict"
    assert "ConfigMap shared-library" in notice.message
    assert "spec.library.configMapName" in notice.message
    status = outcome.plan.reduced.status
    assert "configMap" not in status["library"] and status["phase"] != "Failed"


def test_a_prompt_that_cannot_be_read_is_retried_without_failing_the_resource() -> None:
    kube = Kube()
    ctx, mlflow, body = _setup(kube)
    _pass(ctx, body)
    _register(mlflow, 1)
    mlflow.prompts_down = True
    outcome = _pass(ctx, body)
    assert kube.writes == []
    notice = outcome.library_notice
    assert notice is not None and notice.reason == "LibraryNotPublished"
    assert "connection refused" in notice.message
    assert outcome.invalid is None and outcome.plan.reduced.status["phase"] != "Failed"
    mlflow.prompts_down = False
    assert _pass(ctx, body).library_notice.reason == "LibraryPublished"  # type: ignore[union-attr]
    assert len(kube.writes) == 1


def test_a_missing_prompt_version_is_not_published() -> None:
    kube = Kube()
    ctx, mlflow, body = _setup(kube)
    _pass(ctx, body)
    _register(mlflow, 1)
    mlflow.prompts.clear()
    outcome = _pass(ctx, body)
    assert kube.writes == [] and outcome.library_notice is not None
    assert "does not exist" in outcome.library_notice.message


def test_library_warnings_are_posted_once_and_publications_each_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(handlers.kopf, "event",
                        lambda body, type, reason, message: posted.append((type, reason)))
    ctx, _, body = _setup(Kube())
    conflict = Notice(True, "LibraryConfigMapConflict", "taken")
    for notice in (conflict, conflict, None, conflict, Notice(False, "LibraryPublished", "ok"),
                   conflict):
        handlers._report_library(ctx, body, notice)  # type: ignore[arg-type]
    assert posted == [("Warning", "LibraryConfigMapConflict")] * 2 + [
        ("Normal", "LibraryPublished"), ("Warning", "LibraryConfigMapConflict")]
