"""The generated CRDs on a real API server: they install, every example is accepted, and
every invalid manifest is rejected with a message that names the field."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from mendel.api.kinds import GROUP, KINDS, VERSION
from mendel.api.validation import load_documents

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))


@pytest.fixture(scope="module")
def crds_installed(k8s_api_client: client.ApiClient, poll: Callable[..., Any]) -> list[str]:
    """Create (or replace) the CRDs from crds/ and wait until each is Established."""
    api = client.ApiextensionsV1Api(k8s_api_client)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            api.create_custom_resource_definition(body)
        except ApiException as error:
            if error.status != 409:
                raise
            current = api.read_custom_resource_definition(body["metadata"]["name"])
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            api.replace_custom_resource_definition(body["metadata"]["name"], body)

    def established(name: str) -> bool:
        conditions = api.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        poll(lambda name=name: established(name), timeout=60, what=f"{name} Established")
    return names


def create(api_client: client.ApiClient, namespace: str, document: dict[str, Any],
           dry_run: bool) -> dict[str, Any]:
    body = copy.deepcopy(document)
    body["metadata"]["namespace"] = namespace
    plural = KINDS[body["kind"]].plural
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, dry_run="All" if dry_run else None
    )


def expected_field(path: Path) -> str:
    line = next(x for x in path.read_text().splitlines() if x.startswith("# field:"))
    return line.split(":", 1)[1].strip()


def test_crds_become_established(crds_installed: list[str]) -> None:
    assert sorted(crds_installed) == sorted(info.crd_name for info in KINDS.values())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_accepted_and_defaulted(crds_installed: list[str],
                                           k8s_api_client: client.ApiClient,
                                           namespace: str, path: Path) -> None:
    for document in load_documents(path.read_text()):
        stored = create(k8s_api_client, namespace, document, dry_run=False)
        assert stored["metadata"]["uid"]
        # Structural defaulting fills in the documented defaults on the server.
        assert stored["spec"]["suspend"] is False
        assert stored["spec"]["seed"] == document["spec"].get("seed", 42)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(crds_installed: list[str],
                                                      k8s_api_client: client.ApiClient,
                                                      namespace: str, path: Path) -> None:
    (document,) = load_documents(path.read_text())
    with pytest.raises(ApiException) as raised:
        create(k8s_api_client, namespace, document, dry_run=True)
    assert raised.value.status == 422
    message = json.loads(raised.value.body)["message"]
    assert expected_field(path) in message, message


def test_kubectl_explain_shows_field_descriptions(crds_installed: list[str],
                                                 kubeconfig: Path,
                                                 poll: Callable[..., Any]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")

    def explain() -> str | None:
        result = subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), "explain", "qdevolution.spec.budget"],
            capture_output=True, text=True, timeout=60,
        )
        return result.stdout if result.returncode == 0 else None

    # The API server publishes CRD schemas into its OpenAPI document a few seconds later.
    text = poll(explain, timeout=60, interval=2, what="kubectl explain to know QDEvolution")
    assert "generations" in text
    assert "May be raised on a finished run to resume it" in " ".join(text.split())
