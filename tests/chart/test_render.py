"""`helm template` of charts/mendel: what the chart renders for each setting that matters."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import Render
from tests.chart.support import CHART, REPO, find, one, template

OPERATOR_RULES = [
    {"apiGroups": ["mendel.dev"],
     "resources": ["qdevolutions", "experiencelibraries", "compressortrainings"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["mendel.dev"],
     "resources": ["qdevolutions/status", "experiencelibraries/status",
                   "compressortrainings/status"],
     "verbs": ["get", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps"],
     "verbs": ["get", "list", "watch", "create", "update"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
]
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
CRD_NAMES = {"qdevolutions.mendel.dev", "experiencelibraries.mendel.dev",
             "compressortrainings.mendel.dev"}


def operator(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment", "r1-mendel")["spec"]["template"]["spec"]


def args(objects: list[dict[str, Any]]) -> list[str]:
    return operator(objects)["containers"][0]["args"]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "no version in pyproject.toml"
    return match.group(1)


def test_chart_version_and_app_version_equal_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (project_version(), project_version())


def test_chart_lint_strict_passes(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", [
    pytest.param({}, id="defaults"),
    pytest.param({"watch.allNamespaces": True, "mlflow.enabled": True}, id="cluster-mlflow"),
], )
def test_chart_helm3_and_helm4_render_the_same(helm: Path, helm3: Path,
                                               values: dict[str, Any]) -> None:
    ours, reference = template(helm, values), template(helm3, values)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == reference.stdout


def test_operator_runs_restricted_with_tmp_home(render: Render) -> None:
    pod = operator(render())
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
    assert env(container)["HOME"] == "/tmp"
    assert container["command"] == ["mendel", "operator"]
    assert pod["serviceAccountName"] == "r1-mendel"
    assert pod["automountServiceAccountToken"] is True
    assert "hostNetwork" not in pod


def test_operator_is_one_replica_replaced_with_recreate(render: Render) -> None:
    spec = one(render(), "Deployment", "r1-mendel")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_operator_args_default(render: Render) -> None:
    assert args(render()) == [
        "--namespace=mendel-system",
        "--image=ghcr.io/mendel-dev/mendel-worker:0.1.0",
        "--worker-service-account=mendel-worker",
        "--interval=30",
        "--metrics-port=9090",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    (container,) = operator(render())["containers"]
    assert container["image"] == "ghcr.io/mendel-dev/mendel-operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 8080, "metrics": 9090}


def test_operator_args_from_values(render: Render) -> None:
    objects = render({
        "watch.namespaces": ["team-a", "team-b"],
        "image": {"repository": "registry.local/mendel-operator", "tag": "dev",
                  "pullPolicy": "Never"},
        "workers.image": {"repository": "registry.local/mendel-worker", "tag": "7"},
        "workers.serviceAccount.name": "runner",
        "tracking.uri": "http://mlflow.mlflow:5000",
        "tracking.allowedUris": ["https://mlflow.example.com", "http://mlflow.mlflow:5000"],
        "interval": 5,
        "metrics.enabled": False,
        "health.port": 8181,
    })
    assert args(objects) == [
        "--namespace=team-a",
        "--namespace=team-b",
        "--image=registry.local/mendel-worker:7",
        "--worker-service-account=runner",
        "--tracking-uri=http://mlflow.mlflow:5000",
        "--allowed-tracking-uri=https://mlflow.example.com",
        "--allowed-tracking-uri=http://mlflow.mlflow:5000",
        "--interval=5",
        "--liveness=http://0.0.0.0:8181/healthz",
    ]
    (container,) = operator(objects)["containers"]
    assert container["image"] == "registry.local/mendel-operator:dev"
    assert container["imagePullPolicy"] == "Never"
    service = one(objects, "Service", "r1-mendel")
    assert [p["name"] for p in service["spec"]["ports"]] == ["health"]


def test_operator_scheduling_and_env_from_values(render: Render) -> None:
    objects = render({
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "priorityClassName": "system-cluster-critical",
        "resources": {"limits": {"memory": "2Gi"}},
        "hostNetwork": True,
        "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}],
        "secretEnv": [{"name": "MLFLOW_TRACKING_TOKEN", "secretName": "mlflow", "key": "token"}],
        "envFrom": [{"secretRef": {"name": "mlflow-basic-auth"}}],
    })
    pod = operator(objects)
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    (container,) = pod["containers"]
    # Helm merges maps: the default requests stay.
    assert container["resources"] == {"limits": {"memory": "2Gi"},
                                      "requests": {"cpu": "100m", "memory": "256Mi"}}
    variables = env(container)
    assert variables["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert variables["MLFLOW_TRACKING_TOKEN"] == {
        "secretKeyRef": {"name": "mlflow", "key": "token"}}
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-basic-auth"}}]
    # The test Pods follow hostNetwork; the CRD check gets the API server address too.
    live = one(objects, "Pod", "r1-mendel-test-live")["spec"]
    assert live["hostNetwork"] is True
    assert "127.0.0.1:8080/healthz" in live["containers"][0]["args"][0]
    assert live["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    crds = one(objects, "Pod", "r1-mendel-test-crds")["spec"]
    assert crds["hostNetwork"] is True
    assert env(crds["containers"][0])["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


def test_rbac_namespaced_mode_role_per_watched_namespace(render: Render) -> None:
    objects = render({"watch.namespaces": ["team-a", "team-b"]})
    assert not find(objects, "ClusterRole", "r1-mendel")
    assert not find(objects, "ClusterRoleBinding", "r1-mendel")
    for namespace in ("team-a", "team-b"):
        role = one(objects, "Role", "r1-mendel", namespace)
        assert role["rules"] == OPERATOR_RULES
        binding = one(objects, "RoleBinding", "r1-mendel", namespace)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "r1-mendel"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "r1-mendel",
                                        "namespace": "mendel-system"}]
        worker = one(objects, "ServiceAccount", "mendel-worker", namespace)
        assert worker["automountServiceAccountToken"] is False
    assert len(find(objects, "Role")) == 2
    # The operator's own account lives in the release namespace only; no worker SA there.
    one(objects, "ServiceAccount", "r1-mendel", "mendel-system")
    assert not find(objects, "ServiceAccount", "mendel-worker", "mendel-system")


def test_rbac_cluster_mode_cluster_role(render: Render) -> None:
    objects = render({"watch.allNamespaces": True})
    assert not find(objects, "Role") and not find(objects, "RoleBinding")
    assert one(objects, "ClusterRole", "r1-mendel")["rules"] == OPERATOR_RULES + [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["list", "watch"]}]
    binding = one(objects, "ClusterRoleBinding", "r1-mendel")
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "r1-mendel",
                                    "namespace": "mendel-system"}]
    # No worker ServiceAccount can be created everywhere: none, and no flag naming one.
    assert not find(objects, "ServiceAccount", "mendel-worker")
    assert "--all-namespaces" in args(objects)
    assert not any(a.startswith(("--namespace", "--worker-service-account"))
                   for a in args(objects))


def test_rbac_cluster_mode_passes_an_explicit_worker_account(render: Render) -> None:
    objects = render({"watch.allNamespaces": True, "workers.serviceAccount.name": "runner"})
    assert "--worker-service-account=runner" in args(objects)
    assert not find(objects, "ServiceAccount", "runner")


def test_rbac_off_renders_no_roles(render: Render) -> None:
    objects = render({"rbac.create": False, "serviceAccount.create": False,
                      "serviceAccount.name": "ops"})
    assert not [o for o in objects if o["kind"] in
                ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
                and "helm.sh/hook" not in o["metadata"].get("annotations", {})]
    assert operator(objects)["serviceAccountName"] == "ops"
    assert not find(objects, "ServiceAccount", "ops")


def test_crds_rendered_with_keep_policy_and_chart_labels(render: Render) -> None:
    crds = find(render(), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == CRD_NAMES
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        labels = crd["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "mendel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "mendel-0.1.0"


def test_crds_keep_off_and_install_off(render: Render) -> None:
    for crd in find(render({"crds.keep": False}), "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {}
    assert not find(render({"crds.install": False}), "CustomResourceDefinition")


def test_chart_has_no_crds_directory() -> None:
    # Helm installs crds/ once and never upgrades it: the CRDs must be templates.
    assert not (CHART / "crds").exists()


def test_mlflow_off_by_default(render: Render) -> None:
    objects = render()
    assert not [o for o in objects if "mlflow" in o["metadata"]["name"]]
    assert not any(a.startswith(("--tracking-uri", "--allowed-tracking-uri"))
                   for a in args(objects))


def test_mlflow_on_defaults_tracking_uri_and_allow_list(render: Render) -> None:
    objects = render({"mlflow.enabled": True})
    url = "http://r1-mendel-mlflow.mendel-system.svc:5000"
    assert f"--tracking-uri={url}" in args(objects)
    assert [a for a in args(objects) if a.startswith("--allowed")] == [
        f"--allowed-tracking-uri={url}"]
    service = one(objects, "Service", "r1-mendel-mlflow")
    assert service["spec"]["ports"][0]["port"] == 5000
    pvc = one(objects, "PersistentVolumeClaim", "r1-mendel-mlflow")
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    pod = one(objects, "Deployment", "r1-mendel-mlflow")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert container["image"].startswith("ghcr.io/mlflow/mlflow:v")
    assert container["args"] == [
        "--host=0.0.0.0", "--port=5000", "--backend-store-uri=sqlite:////mlflow/mlflow.db",
        "--serve-artifacts", "--artifacts-destination=/mlflow/artifacts"]
    hosts = env(container)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"r1-mendel-mlflow.mendel-system.svc:*", "localhost:*"} <= set(hosts)
    assert service["spec"]["selector"] == pod_labels(objects, "r1-mendel-mlflow")


def pod_labels(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    labels = one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return {k: v for k, v in labels.items() if k != "app.kubernetes.io/component"}


def test_mlflow_on_keeps_an_explicit_tracking_uri_and_adds_it_to_the_allow_list(
        render: Render) -> None:
    objects = render({"mlflow.enabled": True, "tracking.uri": "http://other:5000",
                      "tracking.allowedUris": ["https://extra.example.com"]})
    assert [a for a in args(objects) if "tracking-uri" in a] == [
        "--tracking-uri=http://other:5000",
        "--allowed-tracking-uri=https://extra.example.com",
        "--allowed-tracking-uri=http://other:5000",
    ]


def test_mlflow_external_database_and_s3_need_no_volume(render: Render) -> None:
    objects = render({"mlflow.enabled": True,
                      "mlflow.backend.databaseUriSecret": {"name": "mlflow-db", "key": "uri"},
                      "mlflow.artifacts.s3": {"bucketUri": "s3://runs/mendel",
                                              "endpointUrl": "http://minio.minio:9000",
                                              "credentialsSecret": "mlflow-s3"}})
    assert not find(objects, "PersistentVolumeClaim")
    (container,) = one(objects, "Deployment", "r1-mendel-mlflow")["spec"]["template"]["spec"][
        "containers"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in container["args"]
    assert "--artifacts-destination=s3://runs/mendel" in container["args"]
    variables = env(container)
    assert variables["MLFLOW_BACKEND_STORE_URI"] == {
        "secretKeyRef": {"name": "mlflow-db", "key": "uri"}}
    assert variables["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow-s3"}}]
    assert all(m["name"] != "data" for m in container["volumeMounts"])


def test_service_monitor_only_when_enabled(render: Render) -> None:
    assert not find(render(), "ServiceMonitor")
    monitor = one(render({"metrics.serviceMonitor.enabled": True,
                          "metrics.serviceMonitor.labels": {"release": "prom"}}),
                  "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_test_hooks_use_chart_images_and_clean_up(render: Render) -> None:
    objects = render({"mlflow.enabled": True})
    hooks = [o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/hook")]
    assert {(o["kind"], o["metadata"]["name"]) for o in hooks} == {
        ("Pod", "r1-mendel-test-live"), ("Pod", "r1-mendel-test-crds"),
        ("ServiceAccount", "r1-mendel-test-crds"), ("ClusterRole", "r1-mendel-test-crds"),
        ("ClusterRoleBinding", "r1-mendel-test-crds")}
    images = {c["image"] for o in objects if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    for hook in hooks:
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "test"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
        if hook["kind"] == "Pod":
            (container,) = hook["spec"]["containers"]
            assert container["image"] in images
            assert container["securityContext"] == RESTRICTED_CONTAINER
    role = one(objects, "ClusterRole", "r1-mendel-test-crds")
    assert role["rules"] == [{"apiGroups": ["apiextensions.k8s.io"],
                              "resources": ["customresourcedefinitions"],
                              "resourceNames": sorted(CRD_NAMES, key=[
                                  "qdevolutions.mendel.dev", "experiencelibraries.mendel.dev",
                                  "compressortrainings.mendel.dev"].index),
                              "verbs": ["get"]}]
    live = one(objects, "Pod", "r1-mendel-test-live")["spec"]
    assert live["automountServiceAccountToken"] is False
    assert "http://r1-mendel.mendel-system.svc:8080/healthz" in live["containers"][0]["args"][0]


def test_notes_name_the_next_commands(helm3: Path, tmp_path: Path) -> None:
    # `helm template` never prints NOTES.txt and `helm install --dry-run` needs a cluster: render
    # it through a ConfigMap in a copy of the chart.
    chart = tmp_path / "mendel"
    shutil.copytree(CHART, chart)
    notes_text = (CHART / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_probe.tpl").write_text(
        '{{- define "probe.notes" }}' + notes_text + "{{- end }}")
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ include "probe.notes" . | quote }}\n')
    result = template(helm3, chart=chart, namespace="team-a")
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    notes = one(objects, "ConfigMap", "notes")["data"]["notes"]
    assert "kubectl apply -n team-a -f" in notes
    assert "kubectl get qde -n team-a" in notes
    assert "helm test r1 -n team-a" in notes
