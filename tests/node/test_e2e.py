"""The platform team's path, end to end, on a real node: images built here, the chart
installed with Helm, the operator in its own Pod with the chart's RBAC, and the laptop
example running in a real worker Pod from the CPU worker image.

Order matters inside this module (one installed stack, as a cluster would have it):
install, a run (with a `helm upgrade` in its middle), the allow-list, uninstall.

What the test plane lacks, and how the test makes up for it (docs/control-plane.md):
no kube-proxy, so the operator uses `hostNetwork` and the API server's loopback address;
no registry, so images are imported and pulled `Never`/`IfNotPresent`; MLflow runs on the
host, on the Pod bridge's gateway address, where both the operator and the worker reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from mlflow import MlflowClient

from mendel.api.kinds import GROUP, KINDS, VERSION
from mendel.tracking import contract
from tests.chart.support import CHART, tool_path
from tests.cluster.conftest import REPO, create_ready_namespace, wait_for
from tests.mlflow_server import MlflowServer, free_port
from tests.support.listener import CountingListener
from tests.support.tiny_models import save_family

from .conftest import RealNode

VERSION_TAG = "0.1.0"
RELEASE = "mendel"
SYSTEM = "mendel-system"
EXAMPLE = REPO / "examples" / "qdevolution-small.yaml"
TINY_IN_POD = "/tmp/mendel-tiny"  # where the example expects the models
PLURAL = KINDS["QDEvolution"].plural


def _images(target: str) -> Path:
    """The docker-archive of an image, built by hack/build-images.sh when missing."""
    found = subprocess.run(["bash", str(REPO / "hack" / "build-images.sh"), "archive", target],
                           capture_output=True, text=True, timeout=3000)
    if found.returncode != 0:
        pytest.fail(f"hack/build-images.sh archive {target} failed:\n{found.stderr[-4000:]}",
                    pytrace=False)
    return Path(found.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def images(real_node: RealNode) -> None:
    """The operator and CPU worker images, imported into the node's containerd."""
    real_node.import_images(_images("operator"), _images("worker-cpu"))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's tiny base and experts (MENDEL_TINY_DIR when already trained there)."""
    cached = os.environ.get("MENDEL_TINY_DIR")
    root = Path(cached) if cached else tmp_path_factory.mktemp("tiny") / "tiny"
    if not (root / "prepare.json").exists():
        prepare = REPO / "benchmarks" / "skill_acquisition" / "prepare.py"
        trained = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(prepare),
                                  "--out", str(root), "--size", "tiny"],
                                 capture_output=True, text=True, timeout=1200)
        if trained.returncode != 0:
            pytest.fail(f"training the tiny models failed:\n{trained.stderr[-4000:]}")
    # The worker runs as uid 10001: the models must be readable by others.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="module")
def mlflow(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[MlflowServer]:
    """A real MLflow server on the Pod gateway: the operator and the worker Pods reach it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-e2e"), host=real_node.pod_gateway)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    """The installed chart and what the tests need to drive it."""

    node: RealNode
    api: client.ApiClient
    helm: Path
    kubectl: Callable[..., subprocess.CompletedProcess[str]]
    namespace: str
    values: Path
    mlflow: MlflowServer

    def helm_run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.node.plane.kubeconfig),
               "HELM_CACHE_HOME": str(self.values.parent / "helm-cache"),
               "HELM_CONFIG_HOME": str(self.values.parent / "helm-config"),
               "HELM_DATA_HOME": str(self.values.parent / "helm-data")}
        result = subprocess.run([str(self.helm), *args], capture_output=True, text=True,
                                timeout=timeout, env=env)
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result

    def resource(self, name: str, plural: str = PLURAL) -> dict[str, Any] | None:
        try:
            return dict(client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name))
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def status(self, name: str, plural: str = PLURAL) -> dict[str, Any]:
        return dict((self.resource(name, plural) or {}).get("status") or {})

    def operator_pods(self) -> list[client.V1Pod]:
        return [p for p in client.CoreV1Api(self.api).list_namespaced_pod(
            SYSTEM, label_selector="app.kubernetes.io/component=operator").items
            if p.metadata.deletion_timestamp is None]

    def ready_operator(self) -> client.V1Pod | None:
        for pod in self.operator_pods():
            ready = any(c.type == "Ready" and c.status == "True"
                        for c in (pod.status.conditions or []))
            if ready:
                return pod
        return None


@pytest.fixture(scope="module")
def stack(real_node: RealNode, node_api_client: client.ApiClient, images: None,
          mlflow: MlflowServer, kubectl: Callable[..., subprocess.CompletedProcess[str]],
          tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """`helm install` of charts/mendel, as docs/install.md says, plus the test plane's needs."""
    core = client.CoreV1Api(node_api_client)
    namespace = f"research-{uuid.uuid4().hex[:6]}"
    for name in (SYSTEM, namespace):
        create_ready_namespace(core, name)
    work = tmp_path_factory.mktemp("helm")
    values = work / "values.yaml"
    values.write_text(yaml.safe_dump({
        "image": {"repository": "localhost/mendel-operator", "tag": VERSION_TAG,
                  "pullPolicy": "Never"},
        "workers": {"image": {"repository": "localhost/mendel-worker",
                              "tag": f"{VERSION_TAG}-cpu"}},
        "watch": {"namespaces": [namespace]},
        "tracking": {"uri": mlflow.uri},
        "interval": 5,
        # The test plane: no kube-proxy, so the API server is reached on loopback.
        "hostNetwork": True,
        "env": [{"name": k, "value": v} for k, v in real_node.api_env.items()],
        "health": {"port": free_port()},
        "metrics": {"port": free_port()},
    }))
    installed = Stack(real_node, node_api_client, tool_path("3"), kubectl, namespace, values,
                      mlflow)
    # 1.20 does not know x-kubernetes-validations: Helm 3 would refuse the CRD templates.
    installed.helm_run("install", RELEASE, str(CHART), "-n", SYSTEM, "-f", str(values),
                       "--disable-openapi-validation", "--wait", "--timeout", "180s",
                       timeout=240)
    return installed


def test_the_operator_runs_in_its_pod_with_the_charts_service_account(stack: Stack) -> None:
    pod = wait_for(stack.ready_operator, timeout=120, what="a Ready operator Pod")
    assert pod.spec.service_account_name == "mendel"  # the chart's full name for release "mendel"
    container = pod.spec.containers[0]
    assert container.image == f"localhost/mendel-operator:{VERSION_TAG}"
    assert container.security_context.read_only_root_filesystem is True
    assert pod.status.container_statuses[0].restart_count == 0  # logged in, not crash-looping
    logs = stack.kubectl("logs", "-n", SYSTEM, pod.metadata.name).stdout
    assert "401" not in logs and "LoginError" not in logs
    # `helm test`: the liveness endpoint answers and the CRDs are Established.
    tested = stack.helm_run("test", RELEASE, "-n", SYSTEM, "--timeout", "120s", timeout=180)
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout


def _tiny_volume(stack: Stack, tiny: Path, claim: str = "tiny-models") -> None:
    """The tiny models as a read-only PersistentVolume (hostPath) and its claim."""
    core = client.CoreV1Api(stack.api)
    pv = f"{claim}-{stack.namespace}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                 "storageClassName": "", "hostPath": {"path": str(tiny), "type": "Directory"},
                 "persistentVolumeReclaimPolicy": "Retain"}})
    core.create_namespaced_persistent_volume_claim(stack.namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(lambda: core.read_namespaced_persistent_volume_claim(
        claim, stack.namespace).status.phase == "Bound", timeout=60,
        what=f"the {claim} claim to bind")


def _example_for_the_node() -> dict[str, Any]:
    """examples/qdevolution-small.yaml, given its models by a volume and sized for the node."""
    document = yaml.safe_load(EXAMPLE.read_text())
    spec = document["spec"]
    spec["resources"] = {"driver": {"gpus": 0, "cpu": "1", "memory": "3Gi",
                                    "ephemeralStorage": "2Gi"}}
    spec["podTemplatePatch"] = {
        "volumes": [{"name": "tiny", "persistentVolumeClaim": "tiny-models"}],
        "volumeMounts": [{"name": "tiny", "mountPath": TINY_IN_POD, "readOnly": True}],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
    }
    return dict(document)


def _worker_pods(stack: Stack, uid: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(stack.api).list_namespaced_pod(
        stack.namespace, label_selector=f"{GROUP}/uid={uid}").items)


def test_the_example_runs_to_succeeded_in_a_worker_pod_through_a_helm_upgrade(
        stack: Stack, tiny_models: Path, tmp_path: Path) -> None:
    _tiny_volume(stack, tiny_models)
    manifest = tmp_path / "qdevolution-small.yaml"
    manifest.write_text(yaml.safe_dump(_example_for_the_node()))
    stack.kubectl("apply", "-n", stack.namespace, "-f", str(manifest))
    name = "tiny-skills"
    uid = stack.resource(name)["metadata"]["uid"]  # type: ignore[index]
    wait_for(lambda: stack.status(name).get("progress", {}).get("step", 0) >= 10, timeout=600,
             interval=1, what="progress past generation 10 in the worker Pod")
    (worker,) = _worker_pods(stack, uid)
    assert worker.spec.node_name == stack.node.node_name
    assert worker.spec.automount_service_account_token is False
    assert worker.spec.service_account_name == "mendel-worker"
    assert not any("serviceaccount" in (m.mount_path or "")
                   for m in worker.spec.containers[0].volume_mounts)
    assert worker.spec.containers[0].security_context.read_only_root_filesystem is True

    # helm upgrade with a changed value: the operator Pod is replaced, the run goes on.
    before = stack.ready_operator()
    assert before is not None
    stack.helm_run("upgrade", RELEASE, str(CHART), "-n", SYSTEM, "-f", str(stack.values),
                   "--set", "interval=7", "--disable-openapi-validation", "--wait",
                   "--timeout", "180s", timeout=240)
    after = wait_for(lambda: (p := stack.ready_operator()) and p.metadata.uid
                     != before.metadata.uid and p, timeout=180, what="the new operator Pod")
    assert "--interval=7" in after.spec.containers[0].args

    wait_for(lambda: stack.status(name).get("phase") in ("Succeeded", "Failed"), timeout=900,
             interval=2, what="the run to finish")
    status = stack.status(name)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    (same,) = _worker_pods(stack, uid)
    assert same.metadata.uid == worker.metadata.uid  # not disturbed by the operator's roll
    assert status["children"]["restarts"] == 0
    assert status["progress"]["step"] == status["progress"]["total"] == 300
    assert int(status["archive"]["filled"]) > 3  # children became elites, not only experts
    run_id, experiment_id = status["mlflow"]["runId"], status["mlflow"]["experimentId"]
    assert run_id and experiment_id
    run = MlflowClient(stack.mlflow.uri).get_run(run_id)
    wait_for(lambda: MlflowClient(stack.mlflow.uri).get_run(run_id).info.status == "FINISHED",
             timeout=60, what="the parent run to end FINISHED")
    assert run.data.tags[contract.TAG_UID] == uid
    logs = stack.kubectl("logs", "-n", stack.namespace, worker.metadata.name).stdout
    assert f"MLflow run {run_id}" in logs
    assert "generation 300/300 (100%)" in logs


def test_compressor_training_trains_evaluates_and_registers_in_a_worker_pod(
        stack: Stack, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    models = tmp_path_factory.mktemp("clara-models")
    save_family(models, [])
    for path in [models, *models.rglob("*")]:  # the worker runs as uid 10001
        path.chmod(0o755 if path.is_dir() else 0o644)
    _tiny_volume(stack, models, claim="clara-models")
    name, plural = "tiny-compressor", KINDS["CompressorTraining"].plural
    stage = {"learningRate": 1e-3, "batchSize": 4, "microBatchSize": 2}
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CompressorTraining",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "/models/base"},
            "compression": {"rate": 16, "docMaxTokens": 64},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "stages": {"pretraining": {"dataset": {"uri": "builtin:facts", "limit": 8}, **stage},
                       "endToEnd": {"dataset": {"uri": "builtin:facts-retrieval", "limit": 4},
                                    **stage, "topK": 2}},
            "precision": "float32", "gradientCheckpointing": False, "checkpointEverySteps": 2,
            "evaluation": {"uri": "builtin:facts", "split": "validation", "limit": 3},
            "resources": {"trainer": {"gpus": 0, "cpu": "1", "memory": "3Gi",
                                      "ephemeralStorage": "2Gi"}},
            "podTemplatePatch": {
                "volumes": [{"name": "models", "persistentVolumeClaim": "clara-models"}],
                "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]},
            "tracking": {"mlflow": {"registeredModel": {"name": "tiny-compressor-clara"}}},
        },
    }
    path = tmp_path / "compressortraining.yaml"
    path.write_text(yaml.safe_dump(manifest))
    stack.kubectl("apply", "-n", stack.namespace, "-f", str(path))
    wait_for(lambda: stack.status(name, plural).get("phase") in ("Succeeded", "Failed"),
             timeout=900, interval=2, what="the CompressorTraining to finish")
    status = stack.status(name, plural)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["training"]["stage"] == "done"
    assert float(status["training"]["evalScore"]) >= 0.0
    assert status["progress"]["step"] == status["progress"]["total"] > 0
    uid = stack.resource(name, plural)["metadata"]["uid"]  # type: ignore[index]
    (worker,) = _worker_pods(stack, uid)
    assert worker.spec.automount_service_account_token is False
    assert worker.spec.containers[0].security_context.read_only_root_filesystem is True
    mlflow_client = MlflowClient(stack.mlflow.uri)
    version = mlflow_client.get_model_version_by_alias("tiny-compressor-clara", "candidate")
    logged = mlflow_client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.status == "READY" and logged.source_run_id == status["mlflow"]["runId"]


def test_a_tracking_uri_outside_the_allow_list_is_refused_and_nothing_is_sent(
        stack: Stack, tmp_path: Path) -> None:
    listener = CountingListener()
    try:
        document = _example_for_the_node()
        document["metadata"] = {"name": "elsewhere"}
        document["spec"]["tracking"] = {"mlflow": {"trackingUri": listener.uri}}
        manifest = tmp_path / "elsewhere.yaml"
        manifest.write_text(yaml.safe_dump(document))
        stack.kubectl("apply", "-n", stack.namespace, "-f", str(manifest))
        wait_for(lambda: stack.status("elsewhere").get("phase") == "Failed", timeout=120,
                 what="the resource to be refused")
        failed = next(c for c in stack.status("elsewhere")["conditions"]
                      if c["type"] == "Failed")
        assert "not a tracking server this operator may use" in failed["message"]
        uid = stack.resource("elsewhere")["metadata"]["uid"]  # type: ignore[index]
        assert _worker_pods(stack, uid) == []
        assert listener.accepted == 0
    finally:
        listener.close()


def test_helm_uninstall_keeps_the_crds_and_the_users_resources(stack: Stack) -> None:
    stack.helm_run("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
    ext = client.ApiextensionsV1Api(stack.api)
    for info in KINDS.values():
        assert ext.read_custom_resource_definition(info.crd_name).metadata.name
    assert stack.resource("tiny-skills") is not None
    assert stack.resource("elsewhere") is not None
    wait_for(lambda: not stack.operator_pods(), timeout=120, what="the operator Pod to go")
