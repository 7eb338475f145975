"""The pure builders of a run's children: names, labels, owner, env, resources, Kueue,
run policy, security, the spec snapshot and multi-node torchrun wiring."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from mendel.controller.config import Capabilities
from mendel.controller.runs import manifests, multinode, naming
from mendel.tracking import contract

from .builders import UID, inputs, run_ref


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def _env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(job)["env"]}


@pytest.mark.parametrize(("name", "role", "attempt"), [
    pytest.param("demo", "driver", 0, id="short"),
    pytest.param("a" * 40, "driver", 0, id="longest-allowed-name"),
    pytest.param("b" * 63, "worker", 7, id="too-long-name-is-cut"),
])
def test_child_name_fits_63_and_is_deterministic(name: str, role: str, attempt: int) -> None:
    first = naming.child_name(name, role, UID, attempt)
    assert len(first) <= 63
    assert first == naming.child_name(name, role, UID, attempt)
    assert first != naming.child_name(name, role, UID, attempt + 1)
    assert f"-{role}-" in first


def test_driver_job_has_owner_reference_and_allow_listed_labels() -> None:
    job = manifests.driver_job(inputs())
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolution", "name": "demo",
                     "uid": UID, "controller": True, "blockOwnerDeletion": True}
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert all(naming.is_allowed_label(k) for k in labels)
        assert labels[naming.LABEL_UID] == UID
        assert labels[naming.LABEL_ROLE] == "driver"
        assert labels["app.kubernetes.io/managed-by"] == "mendel-operator"


def test_driver_job_runs_mendel_worker_with_the_contract_env() -> None:
    job = manifests.driver_job(inputs())
    container = _container(job)
    assert container["command"] == ["mendel", "worker"]
    assert container["image"] == "registry/worker:1"
    env = _env(job)
    assert env[contract.ENV_KIND] == "QDEvolution"
    assert env[contract.ENV_NAMESPACE] == "team-a"
    assert env[contract.ENV_UID] == UID
    assert env[contract.ENV_RUN_ID] == "a" * 32
    assert env[contract.ENV_TRACKING_URI] == "http://mlflow:5000"
    assert env[contract.ENV_SPEC_PATH] == f"{manifests.SPEC_MOUNT}/{contract.SPEC_FILE}"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == contract.TERMINATION_LOG_PATH


def test_spec_image_overrides_the_operator_default() -> None:
    job = manifests.driver_job(inputs(spec={"image": "mine:2"}))
    assert _container(job)["image"] == "mine:2"


@pytest.mark.parametrize(("resources", "gpu_key", "gpus", "shm"), [
    pytest.param({"driver": {"gpus": 2, "cpu": "8", "memory": "64Gi"}}, "nvidia.com/gpu", "2",
                 False, id="two-gpus"),
    pytest.param({"driver": {"gpus": 1, "gpuResource": "amd.com/gpu", "sharedMemory": "8Gi"}},
                 "amd.com/gpu", "1", True, id="amd-with-shm"),
    pytest.param({"driver": {"gpus": 0, "cpu": "2", "memory": "4Gi"}}, None, None, False,
                 id="cpu-only"),
])
def test_gpu_requests_equal_limits(resources: dict[str, Any], gpu_key: str | None,
                                   gpus: str | None, shm: bool) -> None:
    job = manifests.driver_job(inputs(spec={"resources": resources}))
    res = _container(job)["resources"]
    if gpu_key:
        assert res["requests"][gpu_key] == res["limits"][gpu_key] == gpus
    else:
        assert not any("gpu" in k for k in res["requests"])
    assert res["requests"]["memory"] == res["limits"]["memory"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert (manifests.SHM_VOLUME in volumes) is shm
    if shm:
        assert volumes[manifests.SHM_VOLUME]["emptyDir"] == {"medium": "Memory",
                                                            "sizeLimit": "8Gi"}


@pytest.mark.parametrize(("scheduling", "suspend", "labels"), [
    pytest.param({}, None, {}, id="no-queue"),
    pytest.param({"queueName": "team-a"}, True, {"kueue.x-k8s.io/queue-name": "team-a"},
                 id="queue-suspends"),
    pytest.param({"queueName": "q", "priorityClass": "high"}, True,
                 {"kueue.x-k8s.io/queue-name": "q", "kueue.x-k8s.io/priority-class": "high"},
                 id="queue-and-priority"),
])
def test_kueue_labels_and_suspend(scheduling: dict[str, Any], suspend: bool | None,
                                  labels: dict[str, str]) -> None:
    job = manifests.driver_job(inputs(spec={"scheduling": scheduling}))
    assert job["spec"].get("suspend") is suspend
    kueue = {k: v for k, v in job["metadata"]["labels"].items() if k.startswith("kueue")}
    assert kueue == labels


def test_run_policy_reaches_the_job() -> None:
    policy = {"backoffLimit": 5, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60}
    job = manifests.driver_job(inputs(spec={"runPolicy": policy}, deadline_seconds=3000))
    assert job["spec"]["backoffLimit"] == 5
    assert job["spec"]["activeDeadlineSeconds"] == 3000
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(("minor", "policy", "indexed"), [
    pytest.param("20", False, False, id="1.20"),
    pytest.param("24", False, True, id="1.24"),
    pytest.param("29+", True, True, id="1.29"),
])
def test_features_follow_the_server_version(minor: str, policy: bool, indexed: bool) -> None:
    caps = Capabilities.from_version("1", minor)
    assert (caps.pod_failure_policy, caps.indexed_jobs) == (policy, indexed)
    job = manifests.driver_job(inputs(capabilities=caps))
    assert ("podFailurePolicy" in job["spec"]) is policy
    if policy:
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        assert rules[1]["onExitCodes"]["values"] == [contract.EXIT_INVALID_SPEC]


def test_security_context_is_restricted() -> None:
    job = manifests.driver_job(inputs())
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = _container(job)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["readOnlyRootFilesystem"] is True


def test_worker_pods_get_no_api_token_and_the_operators_worker_account() -> None:
    pod = manifests.driver_job(inputs())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod  # the namespace default, still without a token
    pod = manifests.driver_job(inputs(service_account="mendel-worker"))["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "mendel-worker"
    own = inputs(service_account="mendel-worker",
                 spec={"podTemplatePatch": {"serviceAccountName": "trainer"}})
    assert manifests.driver_job(own)["spec"]["template"]["spec"]["serviceAccountName"] \
        == "trainer"


def test_worker_scratch_is_a_sized_volume_with_an_ephemeral_storage_request() -> None:
    job = manifests.driver_job(inputs(spec={"resources": {"driver": {
        "gpus": 0, "cpu": "1", "memory": "2Gi", "ephemeralStorage": "20Gi"}}}))
    pod, container = job["spec"]["template"]["spec"], _container(job)
    assert container["resources"]["requests"]["ephemeral-storage"] == "20Gi"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[manifests.SCRATCH_VOLUME] == {"name": manifests.SCRATCH_VOLUME,
                                                 "emptyDir": {"sizeLimit": "20Gi"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] == manifests.SCRATCH_VOLUME
    assert _env(job)["HOME"] == "/tmp" and _env(job)["TMPDIR"] == "/tmp"


@pytest.mark.parametrize(("patch", "field"), [
    pytest.param({"volumes": [{"name": "mendel-scratch", "emptyDir": "1Gi"}]},
                 "volumes[0].name", id="reserved-volume"),
    pytest.param({"volumes": [{"name": "v", "emptyDir": "1Gi"}],
                  "volumeMounts": [{"name": "v", "mountPath": "/tmp/"}]},
                 "volumeMounts[0].mountPath", id="reserved-path"),
])
def test_pod_template_patch_cannot_take_the_operators_volumes(patch: dict[str, Any],
                                                              field: str) -> None:
    from mendel.api.validation import InvalidResource

    with pytest.raises(InvalidResource, match=re.escape(f"spec.podTemplatePatch.{field}")):
        inputs(spec={"podTemplatePatch": patch})


def test_pod_template_patch_is_applied() -> None:
    patch = {
        "serviceAccountName": "trainer",
        "env": [{"name": "HF_HOME", "value": "/cache"},
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}],
        "envFromSecrets": [{"name": "s3-creds"}],
        "volumes": [{"name": "models", "persistentVolumeClaim": "models-pvc"},
                    {"name": "scratch", "emptyDir": "10Gi"}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "labels": {"team": "a"},
        "annotations": {"note": "x"},
        "imagePullSecrets": ["regcred"],
    }
    scheduling = {"nodeSelector": {"gpu": "h100"},
                  "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    job = manifests.driver_job(inputs(spec={"podTemplatePatch": patch,
                                            "scheduling": scheduling}))
    template = job["spec"]["template"]
    pod = template["spec"]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "models-pvc"}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "10Gi"}
    mounts = {m["name"]: m for m in _container(job)["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    env = _env(job)
    assert env["HF_HOME"] == "/cache"
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "t"}}
    assert {"secretRef": {"name": "s3-creds"}} in _container(job)["envFrom"]
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["annotations"] == {"note": "x"}
    assert "team" not in job["metadata"]["labels"]  # Pod labels only, never the Job's


def test_secrets_in_the_spec_are_referenced_never_inlined() -> None:
    spec = {"agent": {"endpoint": {"url": "https://api.example.com/v1", "model": "m",
                                   "apiKey": {"name": "llm", "key": "token"}}},
            "tracking": {"mlflow": {"credentials": {"name": "mlflow-auth"}}}}
    job = manifests.driver_job(inputs("ExperienceLibrary", spec=spec))
    env = _env(job)
    assert env["MENDEL_SECRET_AGENT_ENDPOINT_API_KEY"] == {
        "secretKeyRef": {"name": "llm", "key": "token"}}
    assert {"secretRef": {"name": "mlflow-auth"}} in _container(job)["envFrom"]
    assert "token" not in str([e.get("value") for e in _container(job)["env"]])


def test_contract_env_cannot_be_overridden_by_the_patch() -> None:
    patch = {"env": [{"name": contract.ENV_UID, "value": "spoofed"}]}
    env_list = _container(manifests.driver_job(inputs(spec={"podTemplatePatch": patch})))["env"]
    last = [e for e in env_list if e["name"] == contract.ENV_UID][-1]
    assert last["value"] == UID


def test_spec_snapshot_config_map_is_immutable_and_mounted() -> None:
    job_inputs = inputs(attempt=1, budget=60)
    spec = {"budget": {"generations": 60}}
    cm = manifests.config_map(job_inputs, spec)
    assert cm["immutable"] is True
    assert cm["metadata"]["name"] == naming.child_name("demo", "spec", UID, 1)
    assert cm["metadata"]["annotations"][naming.ANNOTATION_ATTEMPT] == "1"
    assert cm["metadata"]["annotations"][naming.ANNOTATION_BUDGET] == "60"
    document = yaml.safe_load(cm["data"][contract.SPEC_FILE])
    assert document["spec"] == spec
    assert document["metadata"]["uid"] == UID
    job = manifests.driver_job(job_inputs)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[manifests.SPEC_VOLUME]["configMap"]["name"] == cm["metadata"]["name"]


def test_output_uri_is_per_run() -> None:
    job = manifests.driver_job(inputs(spec={"output": {"uri": "s3://bucket/runs/"}}))
    assert _env(job)[contract.ENV_OUTPUT_URI] == f"s3://bucket/runs/team-a/demo/{UID}"


@pytest.mark.parametrize(("nodes", "indexed"), [
    pytest.param(2, False, id="two-nodes-1.20"),
    pytest.param(4, True, id="four-nodes-indexed"),
])
def test_multinode_training_has_a_leader_workers_and_a_headless_service(
        nodes: int, indexed: bool) -> None:
    caps = Capabilities(indexed_jobs=indexed)
    spec = {"distribution": {"numNodes": nodes, "numProcPerNode": 2},
            "resources": {"trainer": {"gpus": 2}}, "output": {"uri": "/shared/runs"}}
    job_inputs = inputs("CompressorTraining", spec=spec, capabilities=caps)
    service, leader, workers = multinode.run_jobs(job_inputs)
    svc_name = naming.child_name("demo", "rdzv", UID, 0)
    assert service["kind"] == "Service" and service["metadata"]["name"] == svc_name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"][naming.LABEL_ROLE] == "leader"
    leader_pod = leader["spec"]["template"]["spec"]
    assert (leader_pod["hostname"], leader_pod["subdomain"]) == ("leader", svc_name)
    leader_env = _env(leader)
    assert leader_env["PET_NODE_RANK"] == "0"
    assert leader_env["PET_NNODES"] == str(nodes)
    assert leader_env["PET_NPROC_PER_NODE"] == "2"
    assert leader_env["PET_MASTER_ADDR"] == f"leader.{svc_name}"
    assert leader_env["PET_MASTER_PORT"] == "29500"
    worker_env = _env(workers)
    assert "PET_NODE_RANK" not in worker_env  # c10d assigns worker ranks
    assert worker_env["PET_RDZV_ENDPOINT"] == f"leader.{svc_name}:29400"
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] == nodes - 1
    assert (workers["spec"].get("completionMode") == "Indexed") is indexed
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == UID
               for o in (service, leader, workers))


def test_single_node_training_is_one_driver_job() -> None:
    (job,) = multinode.run_jobs(inputs("CompressorTraining"))
    assert job["metadata"]["name"] == naming.child_name("demo", "driver", UID, 0)


def test_run_ref_names_the_owner() -> None:
    assert manifests.owner_reference(run_ref("CompressorTraining"))["kind"] == \
        "CompressorTraining"
