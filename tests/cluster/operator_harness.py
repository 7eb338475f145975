"""Pieces the operator's cluster tests share: CRD installation, the operator in a thread,
and small readers of resources, Jobs and MLflow runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from mendel.api.kinds import GROUP, KINDS, VERSION
from mendel.controller.config import OperatorConfig
from mendel.controller.runtime.operator import run

REPO = Path(__file__).resolve().parents[2]


def install_crds(api: client.ApiClient, timeout: float = 60.0) -> None:
    """Create (or keep) every CRD from crds/ with the Python client, and wait until served.

    kubectl's client-side validation chokes on x-kubernetes-validations against a 1.20
    server, so the CRDs go through the API directly; 1.20 ignores the CEL rules.
    """
    ext = client.ApiextensionsV1Api(api)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as error:
            if error.status != 409:
                raise
    deadline = time.monotonic() + timeout
    for info in KINDS.values():
        while True:
            crd = ext.read_custom_resource_definition(info.crd_name)
            established = any(c.type == "Established" and c.status == "True"
                              for c in (crd.status.conditions or []))
            if established:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {info.crd_name} not established")
            time.sleep(0.2)


class OperatorThread:
    """`mendel operator` in a background thread, stopped through Kopf's stop flag."""

    def __init__(self, kubeconfig: Path, settings: OperatorConfig) -> None:
        self.kubeconfig, self.settings = kubeconfig, settings
        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True, name="operator")

    def _main(self) -> None:
        try:
            run(self.settings, self.kubeconfig, stop_flag=self.stop_flag,
                ready_flag=self.ready_flag)
        except BaseException as error:  # noqa: BLE001 - surfaced by the test
            self.error = error

    def start(self, timeout: float = 60.0) -> OperatorThread:
        self.thread.start()
        if not self.ready_flag.wait(timeout):
            raise TimeoutError(f"operator not ready: {self.error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("operator did not stop")


class Resources:
    """CRUD on Mendel resources in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name},
                "spec": spec}
        return dict(self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, KINDS[kind].plural, body))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, KINDS[kind].plural, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_spec(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, KINDS[kind].plural, name, {"spec": spec})

    def delete(self, kind: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, KINDS[kind].plural, name)

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return dict((self.get(kind, name) or {}).get("status") or {})

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        for cond in self.status(kind, name).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def jobs(self, uid: str) -> list[client.V1Job]:
        return list(self.batch.list_namespaced_job(
            self.namespace, label_selector=f"{GROUP}/uid={uid}").items)

    def config_maps(self, uid: str) -> list[client.V1ConfigMap]:
        return list(self.core.list_namespaced_config_map(
            self.namespace, label_selector=f"{GROUP}/uid={uid}").items)

    def events(self, name: str) -> list[client.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(self.namespace).items
                if e.involved_object.name == name]
