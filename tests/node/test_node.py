"""The real node runs Pods: Jobs complete, logs come back, limits OOM-kill, the network works.

These tests guard the end-to-end test infrastructure itself (hack/node.sh and the fixtures in
conftest.py): when they fail, no end-to-end result can be trusted. The session's teardown
also checks that stopping the node leaves nothing on the host.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import RealNode


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _container(image: str, args: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": image, "imagePullPolicy": "Never", "args": args, **extra}


def _pod(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def _terminated(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    """The main container's terminated state, or None while it has not ended."""
    pod = core.read_namespaced_pod(name, namespace)
    for status in pod.status.container_statuses or []:
        if status.state.terminated is not None:
            return status.state.terminated
    return None


def _run_to_end(
    api: client.ApiClient, namespace: str, body: dict[str, Any], poll: Callable[..., Any]
) -> Any:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, body)
    name = body["metadata"]["name"]
    return poll(lambda: _terminated(core, namespace, name), timeout=60, what=f"Pod {name} to end")


@pytest.fixture
def host_server(real_node: RealNode) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the Pods' gateway address; answers each line with ``pong``."""
    received: list[bytes] = []
    server = socket.create_server((real_node.pod_gateway, 0))
    server.settimeout(60)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            received.append(conn.recv(1024))
            conn.sendall(b"pong\n\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        server.close()
        thread.join(timeout=5)


def test_node_is_ready_untainted_with_allocatable_resources(
    real_node: RealNode, node_api_client: client.ApiClient
) -> None:
    node = client.CoreV1Api(node_api_client).read_node(real_node.node_name)
    conditions = {c.type: c.status for c in node.status.conditions}
    assert conditions["Ready"] == "True"
    assert not node.spec.taints, "hack/node.sh must lift the not-ready taint"
    assert int(node.status.allocatable["cpu"]) >= 1
    assert node.status.allocatable["memory"].endswith("Ki")
    assert int(node.status.allocatable["memory"][:-2]) > 1024 * 1024  # > 1 GiB
    assert node.status.allocatable["pods"] == "20"
    assert node.status.node_info.kubelet_version == "v1.20.2"
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.metadata.labels["mendel.dev/real-node"] == "true"


def test_job_runs_to_complete_and_kubectl_logs_shows_its_output(
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    kubectl: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    name = _name("hello")
    pod_name_env = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [_container(hello_image, [], env=[pod_name_env])],
                }
            },
        },
    }
    batch = client.BatchV1Api(node_api_client)
    batch.create_namespaced_job(node_namespace, job)

    def finished() -> Any:
        status = batch.read_namespaced_job_status(name, node_namespace).status
        return status if (status.succeeded or status.failed) else None

    status = poll(finished, timeout=60, what=f"Job {name} to finish")
    assert status.succeeded == 1, f"Job {name} failed: {status}"
    pods = client.CoreV1Api(node_api_client).list_namespaced_pod(
        node_namespace, label_selector=f"job-name={name}"
    )
    pod = pods.items[0].metadata.name
    logs = kubectl("logs", "-n", node_namespace, f"job/{name}").stdout
    assert logs == f"hello from mendel (pod {pod})\n"


def test_pod_over_its_memory_limit_is_oom_killed(
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    poll: Callable[..., Any],
) -> None:
    limits = {"limits": {"memory": "32Mi"}}
    body = _pod(_name("oom"), _container(hello_image, ["alloc", "200"], resources=limits))
    ended = _run_to_end(node_api_client, node_namespace, body, poll)
    assert (ended.reason, ended.exit_code) == ("OOMKilled", 137)


def test_pod_within_its_memory_limit_completes(
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    poll: Callable[..., Any],
) -> None:
    """The control for the OOM test: the same allocation fits under a larger limit."""
    limits = {"limits": {"memory": "64Mi"}}
    body = _pod(_name("fits"), _container(hello_image, ["alloc", "16"], resources=limits))
    ended = _run_to_end(node_api_client, node_namespace, body, poll)
    assert (ended.reason, ended.exit_code) == ("Completed", 0)


def test_pod_on_the_bridge_reaches_a_host_server_on_the_gateway(
    real_node: RealNode,
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    host_server: tuple[int, list[bytes]],
    kubectl: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    port, received = host_server
    name = _name("bridge")
    body = _pod(name, _container(hello_image, ["connect", real_node.pod_gateway, str(port)]))
    ended = _run_to_end(node_api_client, node_namespace, body, poll)
    assert ended.exit_code == 0, kubectl("logs", "-n", node_namespace, name, check=False).stdout
    assert received == [b"ping\n"]
    pod = client.CoreV1Api(node_api_client).read_namespaced_pod(name, node_namespace)
    assert pod.status.pod_ip.startswith("10.244.0.")
    assert "pong" in kubectl("logs", "-n", node_namespace, name).stdout


def test_host_network_pod_reaches_the_api_server_through_the_api_env(
    real_node: RealNode,
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    kubectl: Callable[..., Any],
    poll: Callable[..., Any],
) -> None:
    name = _name("hostnet")
    env = [{"name": k, "value": v} for k, v in real_node.api_env.items()]
    # $(VAR) in args is expanded by the kubelet from the container's env.
    args = [
        "connect",
        "$(KUBERNETES_SERVICE_HOST)",
        "$(KUBERNETES_SERVICE_PORT)",
        "GET /version HTTP/1.0\r\n\r\n",
    ]
    body = _pod(name, _container(hello_image, args, env=env), hostNetwork=True)
    ended = _run_to_end(node_api_client, node_namespace, body, poll)
    logs = kubectl("logs", "-n", node_namespace, name).stdout
    assert ended.exit_code == 0, logs
    # Go's TLS server answers a plain-HTTP request with this: it is the API server's port.
    assert "Client sent an HTTP request to an HTTPS server" in logs
    assert f"connected to {real_node.api_host}:{real_node.api_port}" in logs


def test_deployment_gets_a_running_pod(
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    poll: Callable[..., Any],
) -> None:
    """The plane runs the deployment and replicaset controllers for the real node."""
    name = _name("dep")
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [_container(hello_image, ["sleep", "600"])]},
            },
        },
    }
    apps = client.AppsV1Api(node_api_client)
    apps.create_namespaced_deployment(node_namespace, deployment)
    status = poll(
        lambda: apps.read_namespaced_deployment_status(name, node_namespace).status.ready_replicas,
        timeout=60,
        what=f"Deployment {name} to be available",
    )
    assert status == 1


def test_claim_binds_a_host_path_volume_that_a_pod_writes(
    real_node: RealNode,
    node_api_client: client.ApiClient,
    node_namespace: str,
    hello_image: str,
    tmp_path: Path,
    poll: Callable[..., Any],
) -> None:
    """The plane runs the persistentvolume-binder: a claim binds a hostPath volume."""
    core = client.CoreV1Api(node_api_client)
    host_dir = tmp_path / "volume"
    host_dir.mkdir(mode=0o777)
    host_dir.chmod(0o777)  # the image runs as nobody
    pv_name = _name("pv")
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
            },
        }
    )
    try:
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        core.create_namespaced_persistent_volume_claim(node_namespace, claim)

        def bound() -> bool:
            pvc = core.read_namespaced_persistent_volume_claim("data", node_namespace)
            return bool(pvc.status.phase == "Bound")

        poll(
            bound,
            timeout=60,
            what="the claim to bind",
        )
        container = _container(
            hello_image,
            ["write", "/data/out.txt", "written by a pod"],
            volumeMounts=[{"name": "data", "mountPath": "/data"}],
        )
        body = _pod(
            _name("writer"),
            container,
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        )
        ended = _run_to_end(node_api_client, node_namespace, body, poll)
        assert ended.exit_code == 0
        assert (host_dir / "out.txt").read_text() == "written by a pod\n"
    finally:
        try:
            core.delete_persistent_volume(pv_name)
        except ApiException as exc:
            if exc.status != 404:
                raise
