"""charts/mendel on a real API server with real Helm 3 and Helm 4: install, RBAC as the
operator's ServiceAccount sees it (`kubectl auth can-i --as`), upgrade that changes the CRDs,
uninstall that keeps the CRDs and the users' resources, and a re-install that adopts them.

The plane has no deployment controller and no kubelet, so nothing waits for the operator to
run; on a 1.20 server the CRDs (x-kubernetes-validations) need Helm 3's
--disable-openapi-validation (Helm 4: also --server-side=false), used only there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mendel.api.kinds import GROUP, KINDS, VERSION
from tests.chart.support import CHART, HELM_VERSIONS, REPO, Helm, tool_path

CRD_NAMES = sorted(info.crd_name for info in KINDS.values())
ALLOWED = [  # (verb, resource, extra kubectl flags)
    ("get", "qdevolutions.mendel.dev", []),
    ("watch", "experiencelibraries.mendel.dev", []),
    ("patch", "compressortrainings.mendel.dev", []),
    ("patch", "qdevolutions.mendel.dev", ["--subresource=status"]),
    ("create", "jobs.batch", []),
    ("delete", "jobs.batch", []),
    ("list", "pods", []),
    ("create", "configmaps", []),
    ("get", "configmaps", []),
    ("update", "configmaps", []),
    ("create", "services", []),
    ("create", "events", []),
    ("list", "events", []),
    ("create", "events.events.k8s.io", []),
]
DENIED = [
    ("create", "qdevolutions.mendel.dev", []),
    ("delete", "experiencelibraries.mendel.dev", []),
    ("update", "qdevolutions.mendel.dev", ["--subresource=status"]),
    ("get", "secrets", []),
    ("delete", "pods", []),
    ("create", "pods", []),
    ("patch", "configmaps", []),
    ("delete", "configmaps", []),
    ("delete", "services", []),
    ("get", "services", []),
    ("patch", "jobs.batch", []),
    ("create", "roles.rbac.authorization.k8s.io", []),
]


@pytest.fixture(params=HELM_VERSIONS, ids=lambda v: f"helm{v}")
def helm(request: pytest.FixtureRequest, kubeconfig: Path, tmp_path: Path,
         server_minor: int) -> Helm:
    return Helm(request.param, kubeconfig, tmp_path / "helm", server_minor)


@pytest.fixture
def extension_api(k8s_api_client: client.ApiClient) -> client.ApiextensionsV1Api:
    return client.ApiextensionsV1Api(k8s_api_client)


@pytest.fixture
def no_mendel_crds(extension_api: client.ApiextensionsV1Api,
                   poll: Callable[..., Any]) -> None:
    """Start without Mendel CRDs (a kept CRD belongs to an earlier release). The chart keeps
    them when it is uninstalled, so the tests after this one still find them."""
    for name in CRD_NAMES:
        try:
            extension_api.delete_custom_resource_definition(name)
        except ApiException as error:
            if error.status != 404:
                raise

    def gone() -> bool:
        names = {c.metadata.name for c in extension_api.list_custom_resource_definition().items}
        return not names & set(CRD_NAMES)

    poll(gone, timeout=60, what="Mendel CRDs deleted")


@pytest.fixture
def other_namespace(k8s_api_client: client.ApiClient) -> Iterator[str]:
    """A second watched namespace (no Pods are ever created in it)."""
    core = client.CoreV1Api(k8s_api_client)
    name = f"mendel-watched-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def can_i(kubeconfig: Path, account: str, verb: str, resource: str, namespace: str | None,
          *flags: str) -> bool:
    """`kubectl auth can-i --as <account>`: yes (exit 0) or no (exit 1), nothing else."""
    where = ["--all-namespaces"] if namespace is None else ["-n", namespace]
    result = subprocess.run(
        [str(tool_path("kubectl")), "--kubeconfig", str(kubeconfig), "auth", "can-i", verb,
         resource, *where, *flags, "--as", account], capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.returncode == 0


def established(extension_api: client.ApiextensionsV1Api, name: str) -> bool:
    crd = extension_api.read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True"
               for c in (crd.status.conditions or []))


def create_library(api: client.ApiClient, namespace: str) -> str:
    body = yaml.safe_load((REPO / "examples" / "experiencelibrary-small.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, KINDS["ExperienceLibrary"].plural, body)
    return str(body["metadata"]["name"])


def upgraded_chart(tmp_path: Path) -> Path:
    """A copy of the chart as a next release would ship it: version 0.1.1, and a QDEvolution
    CRD with a new label and a changed printer-column description."""
    chart = tmp_path / "mendel-next"
    shutil.copytree(CHART, chart)
    meta = chart / "Chart.yaml"
    meta.write_text(meta.read_text().replace("version: 0.1.0", "version: 0.1.1"))
    crd = chart / "templates" / "crds" / "qdevolutions.mendel.dev.yaml"
    text = crd.read_text()
    assert "    app.kubernetes.io/part-of: mendel\n" in text and "description: Run phase.\n" in text
    crd.write_text(text.replace("    app.kubernetes.io/part-of: mendel\n",
                                "    app.kubernetes.io/part-of: mendel\n"
                                "    mendel.dev/upgrade-probe: \"2\"\n", 1)
                   .replace("description: Run phase.\n", "description: Run phase (v2).\n", 1))
    return chart


def test_chart_install_upgrade_uninstall_keeps_crds_and_resources(
        helm: Helm, namespace: str, k8s_api_client: client.ApiClient,
        extension_api: client.ApiextensionsV1Api, poll: Callable[..., Any],
        no_mendel_crds: None, tmp_path: Path) -> None:
    notes = helm.install("mendel", namespace)
    assert f"kubectl get qde -n {namespace}" in notes
    for name in CRD_NAMES:
        poll(lambda name=name: established(extension_api, name), timeout=60,
             what=f"{name} Established")
        crd = extension_api.read_custom_resource_definition(name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
    library = create_library(k8s_api_client, namespace)

    helm.install("mendel", namespace, chart=upgraded_chart(tmp_path), verb="upgrade")
    crd = extension_api.read_custom_resource_definition("qdevolutions.mendel.dev")
    assert crd.metadata.labels["mendel.dev/upgrade-probe"] == "2"
    columns = {c.name: c.description for c in crd.spec.versions[0].additional_printer_columns}
    assert columns["Phase"] == "Run phase (v2)."
    assert "revision: 2" in helm("status", "mendel", "-n", namespace).stdout.lower()

    uninstalled = helm("uninstall", "mendel", "-n", namespace)
    assert "kept" in (uninstalled.stdout + uninstalled.stderr)
    remaining = {c.metadata.name for c in extension_api.list_custom_resource_definition().items}
    assert set(CRD_NAMES) <= remaining
    client.CustomObjectsApi(k8s_api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, KINDS["ExperienceLibrary"].plural, library)
    apps = client.AppsV1Api(k8s_api_client)
    poll(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=30,
         what="the operator Deployment removed")

    # The same release name and namespace adopt the kept CRDs and apply this chart's schema
    # (adoption patches what the chart renders; it leaves extra labels alone).
    helm.install("mendel", namespace)
    crd = extension_api.read_custom_resource_definition("qdevolutions.mendel.dev")
    columns = {c.name: c.description for c in crd.spec.versions[0].additional_printer_columns}
    assert columns["Phase"] == "Run phase."
    helm("uninstall", "mendel", "-n", namespace)


def test_chart_rbac_namespaced_mode(helm: Helm, namespace: str, other_namespace: str,
                                    kubeconfig: Path, no_mendel_crds: None,
                                    k8s_api_client: client.ApiClient) -> None:
    helm.install("mendel", namespace,
                 values={"watch.namespaces": [namespace, other_namespace]})
    operator = f"system:serviceaccount:{namespace}:mendel"
    for watched in (namespace, other_namespace):
        for verb, resource, flags in ALLOWED:
            assert can_i(kubeconfig, operator, verb, resource, watched, *flags), (
                f"operator cannot {verb} {resource} {' '.join(flags)} in {watched}")
        for verb, resource, flags in DENIED:
            assert not can_i(kubeconfig, operator, verb, resource, watched, *flags), (
                f"operator may {verb} {resource} {' '.join(flags)} in {watched}")
        worker = f"system:serviceaccount:{watched}:mendel-worker"
        for verb, resource, flags in ALLOWED:
            assert not can_i(kubeconfig, worker, verb, resource, watched, *flags), (
                f"worker may {verb} {resource} in {watched}")
        account = client.CoreV1Api(k8s_api_client).read_namespaced_service_account(
            "mendel-worker", watched)
        assert account.automount_service_account_token is False
    assert not can_i(kubeconfig, operator, "list", "qdevolutions.mendel.dev", "default")
    assert not can_i(kubeconfig, operator, "list", "qdevolutions.mendel.dev", None)
    assert not can_i(kubeconfig, operator, "list", "customresourcedefinitions", None)
    helm("uninstall", "mendel", "-n", namespace)


def test_chart_rbac_cluster_mode(helm: Helm, namespace: str, kubeconfig: Path,
                                 no_mendel_crds: None) -> None:
    helm.install("mendel", namespace, values={"watch.allNamespaces": True})
    operator = f"system:serviceaccount:{namespace}:mendel"
    for verb, resource, flags in ALLOWED:
        assert can_i(kubeconfig, operator, verb, resource, None, *flags), (verb, resource)
        assert can_i(kubeconfig, operator, verb, resource, "default", *flags), (verb, resource)
    for verb, resource, flags in DENIED:
        assert not can_i(kubeconfig, operator, verb, resource, None, *flags), (verb, resource)
    # Cluster-wide, Kopf watches the CRDs (list, watch) and may do nothing else with them.
    assert can_i(kubeconfig, operator, "watch", "customresourcedefinitions", None)
    assert not can_i(kubeconfig, operator, "delete", "customresourcedefinitions", None)
    helm("uninstall", "mendel", "-n", namespace)


def test_chart_test_hook_script_sees_crds_established(
        helm: Helm, namespace: str, kubeconfig: Path, no_mendel_crds: None,
        extension_api: client.ApiextensionsV1Api, poll: Callable[..., Any]) -> None:
    """The `helm test` CRD check, run here as a process (no kubelet on the plane) with the
    kubeconfig: it passes once the chart's CRDs are Established, and fails without them."""
    rendered = helm("template", "mendel", str(CHART), "-n", namespace,
                    "--show-only", "templates/tests/crds-established.yaml").stdout
    pod = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python3", "-c"]
    script = container["args"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(kubeconfig)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=120)

    missing = run()
    assert missing.returncode != 0 and "Not Found" in missing.stderr, missing.stderr
    helm.install("mendel", namespace)
    passed = run()
    assert passed.returncode == 0, passed.stderr
    assert sorted(line.split(":")[0] for line in passed.stdout.splitlines()) == CRD_NAMES
    helm("uninstall", "mendel", "-n", namespace)
