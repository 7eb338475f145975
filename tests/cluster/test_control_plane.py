"""The local control plane is real: its apiserver, controllers and scheduler do their jobs.

These tests guard the test infrastructure itself (hack/control-plane.sh and the fixtures):
when they fail, the operator's cluster tests cannot be trusted either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

if TYPE_CHECKING:
    from .conftest import ControlPlane


def _gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_apiserver_answers_version(
    control_plane: ControlPlane, k8s_api_client: client.ApiClient
) -> None:
    info = client.VersionApi(k8s_api_client).get_code()
    assert info.major == "1"
    if control_plane.managed:
        assert info.git_version == "v1.20.2"
        assert info.minor == "20"


def test_job_controller_creates_a_pod(
    k8s_api_client: client.ApiClient, namespace: str, poll: Callable[..., Any]
) -> None:
    batch = client.BatchV1Api(k8s_api_client)
    core = client.CoreV1Api(k8s_api_client)
    job = batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="hello"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[
                            client.V1Container(name="main", image="busybox", command=["true"])
                        ],
                    )
                ),
            ),
        ),
    )

    def job_pods() -> list[client.V1Pod]:
        return core.list_namespaced_pod(namespace, label_selector="job-name=hello").items

    (pod,) = poll(job_pods, timeout=60, what="the Job controller to create the Job's Pod")
    (owner,) = pod.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", "hello", job.metadata.uid)
    assert owner.controller is True


def test_garbage_collector_deletes_dependents(
    k8s_api_client: client.ApiClient, namespace: str, poll: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(k8s_api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="dependent",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1",
                        kind="ConfigMap",
                        name="owner",
                        uid=owner.metadata.uid,
                    )
                ],
            )
        ),
    )

    core.delete_namespaced_config_map("owner", namespace)

    poll(
        lambda: _gone(lambda: core.read_namespaced_config_map("dependent", namespace)),
        timeout=60,
        what="the garbage collector to delete the dependent ConfigMap",
    )


def _gpu_pod(name: str, node: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            restart_policy="Never",
            # Pin to the stand-in node: on an external cluster other GPU nodes may exist.
            node_selector={"kubernetes.io/hostname": node},
            containers=[
                client.V1Container(
                    name="main",
                    image="busybox",
                    command=["true"],
                    resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
                )
            ],
        ),
    )


def test_scheduler_binds_gpu_pods_within_node_capacity(
    k8s_api_client: client.ApiClient,
    namespace: str,
    stand_in_node: Callable[..., str],
    poll: Callable[..., Any],
) -> None:
    core = client.CoreV1Api(k8s_api_client)
    node = stand_in_node(capacity={"nvidia.com/gpu": "1"})

    core.create_namespaced_pod(namespace, _gpu_pod("first", node))
    bound = poll(
        lambda: core.read_namespaced_pod("first", namespace).spec.node_name,
        timeout=60,
        what="the scheduler to bind the GPU Pod",
    )
    assert bound == node

    # The node's one GPU is taken: a second GPU Pod must stay unschedulable, for that reason.
    core.create_namespaced_pod(namespace, _gpu_pod("second", node))

    def unschedulable() -> client.V1PodCondition | None:
        pod = core.read_namespaced_pod("second", namespace)
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return condition
        return None

    condition = poll(unschedulable, timeout=60, what="the second GPU Pod to be unschedulable")
    assert "nvidia.com/gpu" in condition.message
    assert core.read_namespaced_pod("second", namespace).spec.node_name is None
