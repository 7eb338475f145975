"""The operator against a real control plane (v1.20.2), a real `mlflow server` and a
kubelet stand-in that runs Pods as local processes.

Mechanics tests run a stand-in worker (tests/cluster/fake_worker.py) that honours the
worker contract; the tests marked `real worker` run `mendel worker` itself and skip until
it exists. Every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from mlflow import MlflowClient

from mendel.api.kinds import GROUP
from mendel.api.validation import load_documents
from mendel.controller.config import OperatorConfig
from mendel.tracking import contract
from tests.chart.support import Helm
from tests.mlflow_server import MlflowServer
from tests.support.listener import CountingListener
from tests.support.tiny_models import save_family, write_jsonl

from .kubelet_standin import KubeletStandIn
from .operator_harness import REPO, OperatorThread, Resources, install_crds

EXAMPLES = {
    "QDEvolution": "qdevolution-small.yaml",
    "ExperienceLibrary": "experiencelibrary-small.yaml",
    "CompressorTraining": "compressortraining-small.yaml",
}
FAKE_WORKER = [sys.executable, str(REPO / "tests" / "cluster" / "fake_worker.py")]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def crds(k8s_api_client: client.ApiClient) -> None:
    install_crds(k8s_api_client)


@pytest.fixture(scope="session")
def kubelet(k8s_api_client: client.ApiClient,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeletStandIn]:
    node = KubeletStandIn(k8s_api_client, capacity={"nvidia.com/gpu": "1"},
                          commands={"mendel": FAKE_WORKER},
                          env={"PYTHONPATH": str(REPO / "operator")},
                          workdir=tmp_path_factory.mktemp("kubelet")).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def resources(k8s_api_client: client.ApiClient, namespace: str, crds: None) -> Resources:
    return Resources(k8s_api_client, namespace)


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, mlflow_server: MlflowServer, crds: None,
             kubelet: KubeletStandIn) -> Iterator[Callable[[], OperatorThread]]:
    running: list[OperatorThread] = []

    def start() -> OperatorThread:
        settings = OperatorConfig(image="mendel-worker:test", tracking_uri=mlflow_server.uri,
                                  namespaces=(namespace,), reconcile_interval=3.0)
        thread = OperatorThread(kubeconfig, settings).start()
        running.append(thread)
        return thread

    yield start
    for thread in running:
        if thread.thread.is_alive():
            thread.stop()


def spec_for(kind: str, node: str, steps: int = 3, step_seconds: float = 0.3,
             **overrides: Any) -> dict[str, Any]:
    """The example's spec, pinned to the stand-in node, with the stand-in worker's pace."""
    spec = load_documents((REPO / "examples" / EXAMPLES[kind]).read_text())[0]["spec"]
    spec["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": node}}
    spec["podTemplatePatch"] = {"env": [
        {"name": "FAKE_STEPS", "value": str(steps)},
        {"name": "FAKE_STEP_SECONDS", "value": str(step_seconds)}]}
    spec.update(overrides)
    return spec


def _name() -> str:
    return f"r-{uuid.uuid4().hex[:6]}"


def _runs(server: MlflowServer, uid: str) -> list[Any]:
    mlflow = MlflowClient(server.uri)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    return list(mlflow.search_runs(experiments, f"tags.`{contract.TAG_UID}` = '{uid}'"))


@pytest.mark.parametrize("kind", list(EXAMPLES), ids=list(EXAMPLES))
def test_operator_apply_creates_job_snapshot_and_tracked_run(
        kind: str, operator: Callable[[], OperatorThread], resources: Resources,
        kubelet: KubeletStandIn, mlflow_server: MlflowServer, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    uid = resources.create(kind, name, spec_for(kind, kubelet.name))["metadata"]["uid"]
    (job,) = poll(lambda: resources.jobs(uid), timeout=60, what="the driver Job")
    (cm,) = resources.config_maps(uid)
    for child in (job, cm):
        (owner,) = child.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == (kind, name, uid)
        assert owner.controller is True and owner.block_owner_deletion is True
        assert child.metadata.labels[f"{GROUP}/kind"] == kind
    assert job.metadata.name.startswith(f"{name}-driver-")
    run_id = poll(lambda: resources.status(kind, name).get("mlflow", {}).get("runId"),
                  timeout=60, what="status.mlflow.runId")
    assert resources.condition(kind, name, "TrackingReady")["status"] == "True"
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env[contract.ENV_RUN_ID] == run_id
    assert [r.info.run_id for r in _runs(mlflow_server, uid)] == [run_id]
    poll(lambda: resources.status(kind, name).get("phase") == "Succeeded", timeout=90,
         what=f"{kind} to succeed")
    status = resources.status(kind, name)
    assert status["progress"]["step"] == 3 and status["progress"]["percent"] == 100
    assert resources.condition(kind, name, "Complete")["reason"] == "BudgetExhausted"
    assert status["checkpoint"]["step"] == 3


def test_operator_restart_mid_run_duplicates_nothing(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        mlflow_server: MlflowServer, poll: Callable[..., Any]) -> None:
    first = operator()
    name = _name()
    uid = resources.create("QDEvolution", name, spec_for("QDEvolution", kubelet.name,
                                                         steps=40))["metadata"]["uid"]
    poll(lambda: resources.status("QDEvolution", name).get("phase") == "Running", timeout=60,
         what="Running")
    first.stop()
    operator()
    poll(lambda: resources.status("QDEvolution", name).get("progress", {}).get("step", 0) >= 3,
         timeout=60, what="progress after the restart")
    assert len(resources.jobs(uid)) == 1
    assert len(resources.config_maps(uid)) == 1
    assert len(_runs(mlflow_server, uid)) == 1


def test_operator_suspend_deletes_the_job_and_resume_recreates_it(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    uid = resources.create("QDEvolution", name, spec_for("QDEvolution", kubelet.name,
                                                         steps=200))["metadata"]["uid"]
    poll(lambda: resources.status("QDEvolution", name).get("phase") == "Running", timeout=60,
         what="Running")
    (job,) = resources.jobs(uid)
    resources.patch_spec("QDEvolution", name, {"suspend": True})
    poll(lambda: not resources.jobs(uid), timeout=60, what="the Job to be deleted")
    poll(lambda: resources.status("QDEvolution", name).get("phase") == "Suspended", timeout=30,
         what="Suspended")
    assert resources.condition("QDEvolution", name, "Suspended")["reason"] == "SuspendedByUser"
    resources.patch_spec("QDEvolution", name, {"suspend": False})
    (again,) = poll(lambda: resources.jobs(uid), timeout=60, what="the Job to come back")
    assert again.metadata.name == job.metadata.name
    assert again.metadata.uid != job.metadata.uid
    poll(lambda: resources.status("QDEvolution", name).get("phase") == "Running", timeout=60,
         what="Running again")


def test_operator_delete_kills_the_mlflow_run_and_children_go(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        mlflow_server: MlflowServer, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    uid = resources.create("QDEvolution", name, spec_for("QDEvolution", kubelet.name,
                                                         steps=200))["metadata"]["uid"]
    run_id = poll(lambda: resources.status("QDEvolution", name).get("mlflow", {}).get("runId"),
                  timeout=60, what="the MLflow run")
    poll(lambda: resources.jobs(uid), timeout=60, what="the Job")
    resources.delete("QDEvolution", name)
    poll(lambda: resources.get("QDEvolution", name) is None, timeout=60,
         what="the resource to go (finalizer released)")
    assert MlflowClient(mlflow_server.uri).get_run(run_id).info.status == "KILLED"
    poll(lambda: not resources.jobs(uid) and not resources.config_maps(uid), timeout=90,
         what="garbage collection of the Job and ConfigMap")


def test_operator_gpu_beyond_capacity_stays_pending_with_the_scheduler_reason(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    spec = spec_for("QDEvolution", kubelet.name,
                    resources={"driver": {"gpus": 4, "cpu": "1", "memory": "1Gi"}})
    resources.create("QDEvolution", name, spec)
    running = poll(lambda: (c := resources.condition("QDEvolution", name, "Running"))
                   and c.get("reason") == "Unschedulable" and c, timeout=90,
                   what="Running=False/Unschedulable")
    assert "nvidia.com/gpu" in running["message"]
    assert resources.status("QDEvolution", name)["phase"] == "Pending"
    assert any(e.reason == "Unschedulable" for e in resources.events(name))


def test_operator_invalid_spec_fails_with_field_path_and_no_job(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    spec = spec_for("QDEvolution", kubelet.name)
    spec["tasks"][1]["expert"] = "nobody"  # the schema allows it; the operator does not
    uid = resources.create("QDEvolution", name, spec)["metadata"]["uid"]
    failed = poll(lambda: (c := resources.condition("QDEvolution", name, "Failed"))
                  and c.get("status") == "True" and c, timeout=60, what="Failed=True")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.tasks" in failed["message"]
    assert resources.jobs(uid) == []
    poll(lambda: any(e.reason == "InvalidSpec" for e in resources.events(name)), timeout=30,
         what="an InvalidSpec Event")


def test_operator_immutable_change_is_refused_naming_the_field(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    uid = resources.create("QDEvolution", name, spec_for("QDEvolution", kubelet.name,
                                                         steps=200))["metadata"]["uid"]
    poll(lambda: resources.jobs(uid), timeout=60, what="the Job")
    resources.patch_spec("QDEvolution", name, {"seed": 7})  # 1.20 ignores the CEL rule
    admitted = poll(lambda: (c := resources.condition("QDEvolution", name, "Admitted"))
                    and c.get("reason") == "ImmutableFieldChanged" and c, timeout=60,
                    what="Admitted=False/ImmutableFieldChanged")
    assert "spec.seed" in admitted["message"]
    assert len(resources.jobs(uid)) == 1


def test_operator_restart_policy_retrains_on_an_experiment_change(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        mlflow_server: MlflowServer, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    spec = spec_for("QDEvolution", kubelet.name, steps=400,
                    runPolicy={"onSpecChange": "Restart"})
    uid = resources.create("QDEvolution", name, spec)["metadata"]["uid"]
    first_run = poll(lambda: resources.status("QDEvolution", name).get("phase") == "Running"
                     and resources.status("QDEvolution", name)["mlflow"].get("runId"),
                     timeout=60, what="the first run")
    (first_job,) = resources.jobs(uid)
    resources.patch_spec("QDEvolution", name, {"seed": 7})  # as a change in Git would
    poll(lambda: resources.status("QDEvolution", name).get("run") == 1
         and resources.status("QDEvolution", name).get("phase") == "Running", timeout=90,
         what="the second run to be running")
    jobs = poll(lambda: (j := resources.jobs(uid)) and len(j) == 1 and j, timeout=60,
                what="the first run's Job to be gone")
    assert jobs[0].metadata.name != first_job.metadata.name
    status = poll(lambda: (st := resources.status("QDEvolution", name))
                  and st.get("mlflow", {}).get("runId") and st, timeout=30,
                  what=f"the second run's MLflow id: {resources.status('QDEvolution', name)}")
    second_run = status["mlflow"]["runId"]
    assert second_run and second_run != first_run
    assert [(r["run"], r["phase"], r.get("runId")) for r in status["history"]] == [
        (0, "Superseded", first_run), (1, "Running", second_run)]
    assert status["history"][1]["generation"] == 2
    runs = {r.info.run_id: r for r in _runs(mlflow_server, uid)}
    assert set(runs) == {first_run, second_run}
    assert runs[second_run].data.tags[contract.TAG_PREVIOUS_RUN_ID] == first_run
    assert runs[second_run].data.tags[contract.TAG_RUN_INDEX] == "1"
    assert runs[first_run].info.status == "KILLED"
    assert runs[first_run].info.experiment_id == runs[second_run].info.experiment_id
    assert resources.condition("QDEvolution", name, "Admitted")["status"] == "True"


def test_operator_mlflow_down_then_back(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        mlflow_server: MlflowServer, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    resources.create("QDEvolution", name, spec_for("QDEvolution", kubelet.name, steps=400))
    poll(lambda: resources.condition("QDEvolution", name, "TrackingReady").get("status")
         == "True", timeout=60, what="TrackingReady=True")
    mlflow_server.stop()
    try:
        down = poll(lambda: (c := resources.condition("QDEvolution", name, "TrackingReady"))
                    and c.get("status") == "False" and c, timeout=60,
                    what="TrackingReady=False")
        assert down["reason"] == "MLflowUnavailable"
        assert resources.status("QDEvolution", name)["phase"] in ("Running", "Pending")
    finally:
        mlflow_server.start()
    poll(lambda: resources.condition("QDEvolution", name, "TrackingReady").get("status")
         == "True", timeout=60, what="TrackingReady=True again")


def _run_status(server: MlflowServer, run_id: str) -> str:
    return str(MlflowClient(server.uri).get_run(run_id).info.status)


@pytest.mark.parametrize(("exit_code", "phase", "mlflow_status"), [
    pytest.param(0, "Succeeded", "FINISHED", id="succeeded"),
    pytest.param(1, "Failed", "FAILED", id="failed"),
])
def test_operator_ends_the_parent_run_with_the_outcome_once(
        exit_code: int, phase: str, mlflow_status: str, operator: Callable[[], OperatorThread],
        resources: Resources, kubelet: KubeletStandIn, mlflow_server: MlflowServer,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    spec = spec_for("QDEvolution", kubelet.name, runPolicy={"backoffLimit": 0})
    spec["podTemplatePatch"]["env"].append({"name": "FAKE_EXIT_CODE", "value": str(exit_code)})
    resources.create("QDEvolution", name, spec)
    poll(lambda: resources.status("QDEvolution", name).get("phase") == phase, timeout=90,
         what=phase)
    run_id = resources.status("QDEvolution", name)["mlflow"]["runId"]
    poll(lambda: _run_status(mlflow_server, run_id) == mlflow_status, timeout=30,
         what=f"the parent run to end {mlflow_status}")
    ended = MlflowClient(mlflow_server.uri).get_run(run_id).info.end_time
    resources.delete("QDEvolution", name)
    poll(lambda: resources.get("QDEvolution", name) is None, timeout=60,
         what="the resource to go")
    after = MlflowClient(mlflow_server.uri).get_run(run_id).info
    assert (after.status, after.end_time) == (mlflow_status, ended)  # not re-ended as KILLED


def test_operator_refuses_tracking_servers_outside_its_allow_list(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        tmp_path: Path, poll: Callable[..., Any]) -> None:
    operator()
    listener = CountingListener()
    database = tmp_path / "stolen.db"
    try:
        for uri in (listener.uri, f"sqlite:///{database}"):
            name = _name()
            spec = spec_for("QDEvolution", kubelet.name)
            spec["tracking"] = {"mlflow": {"trackingUri": uri}}
            uid = resources.create("QDEvolution", name, spec)["metadata"]["uid"]
            failed = poll(lambda n=name: (c := resources.condition("QDEvolution", n, "Failed"))
                          and c.get("status") == "True" and c, timeout=60, what="Failed=True")
            assert "spec.tracking.mlflow.trackingUri" in failed["message"]
            assert "not a tracking server this operator may use" in failed["message"]
            assert resources.jobs(uid) == []
        assert listener.accepted == 0
        assert not database.exists()
    finally:
        listener.close()


def test_operator_reports_why_a_job_cannot_create_its_pods(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    spec = spec_for("QDEvolution", kubelet.name)
    spec["podTemplatePatch"]["serviceAccountName"] = "no-such-account"
    resources.create("QDEvolution", name, spec)
    running = poll(lambda: (c := resources.condition("QDEvolution", name, "Running"))
                   and c.get("reason") == "FailedCreate" and c, timeout=90,
                   what="Running=False/FailedCreate")
    assert "no-such-account" in running["message"]
    assert resources.status("QDEvolution", name)["phase"] == "Pending"
    poll(lambda: any(e.reason == "FailedCreate" and e.type == "Warning"
                     for e in resources.events(name)), timeout=30, what="a FailedCreate Event")


@pytest.mark.parametrize("name", [
    pytest.param(f"dotted.{uuid.uuid4().hex[:6]}", id="dots"),
    pytest.param("x" * 58 + uuid.uuid4().hex[:6], id="64-characters"),
])
def test_operator_fails_names_its_children_cannot_carry_once(
        name: str, operator: Callable[[], OperatorThread], resources: Resources,
        kubelet: KubeletStandIn, poll: Callable[..., Any]) -> None:
    operator()
    uid = resources.create("QDEvolution", name,
                           spec_for("QDEvolution", kubelet.name))["metadata"]["uid"]
    failed = poll(lambda: (c := resources.condition("QDEvolution", name, "Failed"))
                  and c.get("status") == "True" and c, timeout=60, what="Failed=True")
    assert failed["message"].startswith("metadata.name: must be a DNS-1035 label")
    assert "at most 40 characters" in failed["message"]
    time.sleep(7)  # two more reconcile periods: no retry, no second Event, no child
    assert resources.jobs(uid) == [] and resources.config_maps(uid) == []
    warnings = [e for e in resources.events(name) if e.reason == "InvalidSpec"]
    assert len(warnings) == 1 and (warnings[0].count or 1) == 1


def _library_spec(node: str, name: str, **overrides: Any) -> dict[str, Any]:
    """An ExperienceLibrary whose stand-in worker registers its library under `<name>-lib`."""
    spec = spec_for("ExperienceLibrary", node, steps=2, step_seconds=0.1, **overrides)
    spec["podTemplatePatch"]["env"].append({"name": "FAKE_LIBRARY_PROMPT",
                                            "value": f"{name}-lib"})
    return spec


def _config_map(resources: Resources, name: str) -> client.V1ConfigMap | None:
    try:
        return resources.core.read_namespaced_config_map(name, resources.namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _lessons(epochs: int) -> str:
    return contract.render_experiences(
        [(f"G{i}", f"Lesson of epoch {i + 1}: check the units.") for i in range(epochs)])


def test_operator_publishes_the_experience_library_and_each_new_version(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    first = operator()
    name = _name()
    kind, target = "ExperienceLibrary", f"{name}-library"
    uid = resources.create(kind, name, _library_spec(kubelet.name, name))["metadata"]["uid"]
    library = poll(lambda: (lib := resources.status(kind, name).get("library", {}))
                   .get("configMap") and lib, timeout=90, what="status.library.configMap")
    status = resources.status(kind, name)
    assert library == {"configMap": target, "size": 1, "version": 2}
    cm = _config_map(resources, target)
    assert cm is not None
    assert cm.data["experiences.txt"] == _lessons(1)
    assert json.loads(cm.data["library.json"]) == [
        {"id": "G0", "text": "Lesson of epoch 1: check the units."}]
    assert cm.metadata.labels[f"{GROUP}/library-version"] == "2"
    assert cm.metadata.labels[f"{GROUP}/uid"] == uid
    assert cm.metadata.annotations[f"{GROUP}/prompt-uri"] == f"prompts:/{name}-lib/1"
    assert cm.metadata.annotations[f"{GROUP}/mlflow-run-id"] == status["mlflow"]["runId"]
    (owner,) = cm.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (kind, name, uid, True)
    assert [e.type for e in resources.events(name) if e.reason == "LibraryPublished"] == \
        ["Normal"]

    # A restarted operator finds it published and writes nothing.
    first.stop()
    operator()
    time.sleep(7)  # the resume pass and two more reconcile periods
    assert _config_map(resources, target).metadata.resource_version == \
        cm.metadata.resource_version

    # More epochs on the finished run: a second attempt registers version 2 of the prompt.
    poll(lambda: resources.status(kind, name).get("phase") == "Succeeded", timeout=60,
         what="the first attempt to succeed")
    resources.patch_spec(kind, name, {"practice": {"epochs": 2}})
    updated = poll(lambda: (c := _config_map(resources, target))
                   and c.metadata.annotations[f"{GROUP}/prompt-uri"]
                   == f"prompts:/{name}-lib/2" and c, timeout=90, what="the second version")
    assert updated.metadata.uid == cm.metadata.uid  # updated in place, not re-created
    assert updated.data["experiences.txt"] == _lessons(2)
    assert len(json.loads(updated.data["library.json"])) == 2
    assert updated.metadata.labels[f"{GROUP}/library-version"] == "4"
    poll(lambda: resources.status(kind, name).get("library")
         == {"configMap": target, "size": 2, "version": 4}, timeout=30,
         what="status of the second version")


def test_operator_leaves_a_config_map_it_does_not_own_alone_with_a_warning(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    taken = f"{name}-shared"
    resources.core.create_namespaced_config_map(resources.namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=taken), data={"owner": "another team"}))
    before = _config_map(resources, taken)
    spec = _library_spec(kubelet.name, name, library={"configMapName": taken})
    resources.create("ExperienceLibrary", name, spec)
    warning = poll(lambda: next((e for e in resources.events(name)
                                 if e.reason == "LibraryConfigMapConflict"), None),
                   timeout=90, what="a LibraryConfigMapConflict Event")
    assert warning.type == "Warning"
    assert f"ConfigMap {taken}" in warning.message
    assert "spec.library.configMapName" in warning.message
    poll(lambda: resources.status("ExperienceLibrary", name).get("phase") == "Succeeded",
         timeout=60, what="the run to succeed regardless")
    time.sleep(7)  # two more reconcile periods: no write, no second Event
    after = _config_map(resources, taken)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.data == {"owner": "another team"} and not after.metadata.owner_references
    library = resources.status("ExperienceLibrary", name)["library"]
    assert "configMap" not in library and library["size"] == 1
    conflicts = [e for e in resources.events(name) if e.reason == "LibraryConfigMapConflict"]
    assert len(conflicts) == 1 and (conflicts[0].count or 1) == 1


def _experiment_chart(root: Path, name: str, spec: dict[str, Any]) -> Path:
    """A one-template chart holding one QDEvolution, as a GitOps repository would ship it.

    Its annotation comes from a value, so an upgrade can change the object without changing
    its spec (and generation): Helm then waits on the status the operator has written.
    """
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: experiment\nversion: 0.1.0\n")
    (root / "values.yaml").write_text("note: first\n")
    body = yaml.safe_dump({"apiVersion": f"{GROUP}/v1alpha1", "kind": "QDEvolution",
                           "metadata": {"name": name, "annotations": {"note": "NOTE"}},
                           "spec": spec})
    (root / "templates" / "run.yaml").write_text(
        body.replace("note: NOTE", "note: {{ .Values.note | quote }}"))
    return root


def test_helm4_wait_judges_a_live_resource_by_its_ready_and_stalled_conditions(
        operator: Callable[[], OperatorThread], resources: Resources, kubelet: KubeletStandIn,
        kubeconfig: Path, namespace: str, server_minor: int, tmp_path: Path,
        poll: Callable[..., Any]) -> None:
    """Helm 4 links Flux's kstatus: its --wait decides as Flux does for a Mendel resource.

    A brand-new object has no status and reads Current (kstatus says so), so each release
    is installed first and judged by an upgrade once the operator has written a status.
    """
    operator()
    helm = Helm("4", kubeconfig, tmp_path / "helm", server_minor)
    failing = spec_for("QDEvolution", kubelet.name, runPolicy={"backoffLimit": 0})
    failing["podTemplatePatch"]["env"].append({"name": "FAKE_EXIT_CODE", "value": "1"})
    releases = {"waited": spec_for("QDEvolution", kubelet.name, steps=400), "doomed": failing}
    for name, spec in releases.items():
        helm("install", name, str(_experiment_chart(tmp_path / name, name, spec)),
             "-n", namespace, *helm.old_server_flags)
    poll(lambda: resources.status("QDEvolution", "waited").get("phase") == "Running",
         timeout=60, what="Running")
    poll(lambda: resources.status("QDEvolution", "doomed").get("phase") == "Failed",
         timeout=60, what="Failed")

    def upgrade(name: str, timeout: str) -> subprocess.CompletedProcess[str]:
        return helm("upgrade", name, str(tmp_path / name), "-n", namespace, "--set",
                    "note=second", "--wait", "--timeout", timeout, *helm.old_server_flags,
                    check=False)

    running = upgrade("waited", "60s")
    assert running.returncode == 0, running.stderr  # Ready=True: a running run is Current
    doomed = upgrade("doomed", "20s")
    assert doomed.returncode != 0  # Stalled=True: kstatus says Failed
    assert "Failed" in doomed.stderr, doomed.stderr


def micro_qdevolution(root: Path, node: str, generations: int) -> dict[str, Any]:
    """A QDEvolution over micro models (made here) that the real worker runs in seconds."""
    paths = save_family(root / "models", ["left", "right"])
    data = write_jsonl(root / "data.jsonl",
                       [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(48)])
    tasks = [{"name": n, "expert": n, "evaluator": {
        "type": "generation", "maxNewTokens": 4,
        "dataset": {"uri": str(data), "split": "validation"}}} for n in ("left", "right")]
    return {"baseModel": {"uri": str(paths["base"])},
            "experts": [{"name": n, "uri": str(paths[n])} for n in ("left", "right")],
            "tasks": tasks, "precision": "float32",
            "budget": {"generations": generations}, "checkpoint": {"everyGenerations": 2},
            "resources": {"driver": {"gpus": 0, "cpu": "1", "memory": "2Gi"}},
            "scheduling": {"nodeSelector": {"kubernetes.io/hostname": node}}}


@pytest.fixture
def real_node(k8s_api_client: client.ApiClient, tmp_path: Path) -> Iterator[KubeletStandIn]:
    """A stand-in node that runs the real `mendel worker`."""
    node = KubeletStandIn(k8s_api_client, env={"PYTHONPATH": str(REPO / "operator")},
                          commands={"mendel": [sys.executable, "-m", "mendel.cli"]},
                          workdir=tmp_path / "node").start()
    try:
        yield node
    finally:
        node.stop()


def _step_history(server: MlflowServer, run_id: str) -> list[float]:
    history = MlflowClient(server.uri).get_metric_history(run_id, contract.METRIC_PROGRESS_STEP)
    return [m.value for m in history]


@pytest.mark.slow
def test_operator_qdevolution_real_worker_runs_to_complete(
        operator: Callable[[], OperatorThread], resources: Resources, real_node: KubeletStandIn,
        mlflow_server: MlflowServer, tmp_path: Path, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    resources.create("QDEvolution", name, micro_qdevolution(tmp_path, real_node.name, 6))
    poll(lambda: resources.status("QDEvolution", name).get("phase") in ("Succeeded", "Failed"),
         timeout=300, what="the real worker to finish")
    status = resources.status("QDEvolution", name)
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["step"] == 6 and status["progress"]["percent"] == 100
    assert status["mlflow"]["runId"] and status["checkpoint"]["step"] == 6
    assert int(status["archive"]["filled"]) >= 1
    assert max(_step_history(mlflow_server, status["mlflow"]["runId"])) == 6


@pytest.mark.slow
def test_operator_qdevolution_real_worker_killed_mid_run_resumes(
        operator: Callable[[], OperatorThread], resources: Resources, real_node: KubeletStandIn,
        mlflow_server: MlflowServer, tmp_path: Path, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    generations = 400
    spec = micro_qdevolution(tmp_path, real_node.name, generations)
    uid = resources.create("QDEvolution", name, spec)["metadata"]["uid"]
    poll(lambda: (resources.status("QDEvolution", name).get("checkpoint") or {}).get("step", 0)
         >= 2, timeout=300, interval=0.2, what="a first checkpoint")
    (job,) = resources.jobs(uid)
    pods = resources.core.list_namespaced_pod(
        resources.namespace, label_selector=f"job-name={job.metadata.name}").items
    real_node.kill(resources.namespace, pods[0].metadata.name)
    poll(lambda: resources.status("QDEvolution", name).get("children", {})
         .get("restarts", 0) >= 1, timeout=120, what="a retry")
    poll(lambda: resources.status("QDEvolution", name).get("phase") in ("Succeeded", "Failed"),
         timeout=600, what="the resumed run to finish")
    status = resources.status("QDEvolution", name)
    assert status["phase"] == "Succeeded", status
    steps = _step_history(mlflow_server, status["mlflow"]["runId"])
    # Resumed, not restarted: generation 0 (the experts) was logged once, every generation
    # up to the budget was logged, and no duplicate parent run was made.
    assert steps.count(0.0) == 1, steps
    assert set(range(generations + 1)) <= {int(v) for v in steps}
    assert len(_runs(mlflow_server, uid)) == 1


@pytest.mark.slow
def test_operator_qdevolution_budget_increase_resumes_a_finished_run(
        operator: Callable[[], OperatorThread], resources: Resources, real_node: KubeletStandIn,
        mlflow_server: MlflowServer, tmp_path: Path, poll: Callable[..., Any]) -> None:
    operator()
    name = _name()
    uid = resources.create("QDEvolution", name,
                           micro_qdevolution(tmp_path, real_node.name, 4))["metadata"]["uid"]
    poll(lambda: resources.status("QDEvolution", name).get("phase") == "Succeeded",
         timeout=300, what="the first budget to finish")
    resources.patch_spec("QDEvolution", name, {"budget": {"generations": 8}})
    poll(lambda: len(resources.jobs(uid)) == 2, timeout=60, what="a second attempt's Job")
    poll(lambda: resources.status("QDEvolution", name).get("progress", {}).get("step") == 8
         and resources.status("QDEvolution", name).get("phase") == "Succeeded",
         timeout=300, what="the raised budget to finish")
    steps = _step_history(mlflow_server, resources.status("QDEvolution", name)["mlflow"]["runId"])
    assert steps.count(0.0) == 1, steps  # resumed from generation 4, not restarted
    assert set(range(9)) <= {int(v) for v in steps}
    assert len(_runs(mlflow_server, uid)) == 1
    run_id = resources.status("QDEvolution", name)["mlflow"]["runId"]
    poll(lambda: _run_status(mlflow_server, run_id) == "FINISHED", timeout=30,
         what="the resumed run to end FINISHED again")
