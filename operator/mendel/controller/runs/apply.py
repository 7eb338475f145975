"""Applying a plan: get-or-create, delete Jobs and publish the library ConfigMap.

The Kubernetes client is injected (a `kubernetes.client.ApiClient`); calls are synchronous
and the reconciler runs them in a worker thread. Errors are one of:

    KubeError            any API failure other than the expected ones below
    (409 on create)      the object exists: success, the name is deterministic
    (404 on delete)      the object is gone already: success
    (404 on read)        the object does not exist: None
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mendel.api.kinds import GROUP, VERSION

__all__ = ["KubeError", "KubeGateway"]


class KubeError(Exception):
    """The API server refused or failed a request (temporary: retried by the next pass)."""

    def __init__(self, verb: str, what: str, status: int | None, reason: str) -> None:
        self.verb, self.status = verb, status
        super().__init__(f"{verb} {what}: {status} {reason}")


class KubeGateway:
    """The writes a reconcile may do: create children, delete Jobs, write the library."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self.requests = 0

    def create_all(self, objects: Iterable[dict[str, Any]]) -> list[str]:
        """Create each object unless it exists; return the names actually created."""
        created = []
        for body in objects:
            if self._create(body):
                created.append(f"{body['kind']}/{body['metadata']['name']}")
        return created

    def _create(self, body: dict[str, Any]) -> bool:
        namespace, kind = body["metadata"]["namespace"], body["kind"]
        creators: dict[str, Callable[..., Any]] = {
            "Job": self._batch.create_namespaced_job,
            "ConfigMap": self._core.create_namespaced_config_map,
            "Service": self._core.create_namespaced_service,
        }
        create = creators[kind]
        self.requests += 1
        try:
            create(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise KubeError("create", f"{kind} {body['metadata']['name']}", error.status,
                            str(error.reason)) from error
        return True

    def delete_jobs(self, namespace: str, names: Iterable[str]) -> list[str]:
        """Delete Jobs and (in the background) their Pods; return the names deleted."""
        deleted = []
        for name in names:
            self.requests += 1
            try:
                self._batch.delete_namespaced_job(name, namespace,
                                                  propagation_policy="Background")
            except ApiException as error:
                if error.status == 404:
                    continue
                raise KubeError("delete", f"Job {name}", error.status,
                                str(error.reason)) from error
            deleted.append(name)
        return deleted

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap as plain wire-form data (camelCase keys), or None if there is none."""
        self.requests += 1
        try:
            found = self._core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise KubeError("get", f"ConfigMap {name}", error.status,
                            str(error.reason)) from error
        data: dict[str, Any] = self._core.api_client.sanitize_for_serialization(found)
        return data

    def write_config_map(self, body: dict[str, Any]) -> None:
        """Create a ConfigMap, or replace it when the body carries the resourceVersion it was
        read at (409: someone changed or created it meanwhile; the next pass reads again)."""
        meta = body["metadata"]
        replace: Callable[..., Any] = self._core.replace_namespaced_config_map
        create: Callable[..., Any] = self._core.create_namespaced_config_map
        update = bool(meta.get("resourceVersion"))
        self.requests += 1
        try:
            if update:
                replace(meta["name"], meta["namespace"], body)
            else:
                create(meta["namespace"], body)
        except ApiException as error:
            raise KubeError("update" if update else "create", f"ConfigMap {meta['name']}",
                            error.status, str(error.reason)) from error

    def patch_status(self, plural: str, namespace: str, name: str,
                     patch: dict[str, Any]) -> None:
        """Merge-patch the status subresource of a Mendel resource (404: it is gone)."""
        if not patch:
            return
        self.requests += 1
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": patch})
        except ApiException as error:
            if error.status == 404:
                return
            raise KubeError("patch", f"{plural}/{name} status", error.status,
                            str(error.reason)) from error

    def job_create_failures(self, namespace: str, names: Iterable[str],
                            ) -> dict[str, tuple[str, str]]:
        """Job name -> (reason, message) of its latest Warning Event, for Jobs that have one.

        One list per Job, selected by the server (involvedObject fields), newest last.
        """
        failures: dict[str, tuple[str, str]] = {}
        for name in names:
            self.requests += 1
            selector = f"involvedObject.kind=Job,involvedObject.name={name},type=Warning"
            try:
                events = self._core.list_namespaced_event(namespace, field_selector=selector)
            except ApiException as error:
                raise KubeError("list", f"Events of Job {name}", error.status,
                                str(error.reason)) from error
            if events.items:
                latest = max(events.items, key=_event_time)
                failures[name] = (str(latest.reason or "Warning"), str(latest.message or ""))
        return failures

    def server_version(self) -> tuple[str, str]:
        """(major, minor) of the API server."""
        self.requests += 1
        info = client.VersionApi(self._core.api_client).get_code()
        return str(info.major), str(info.minor)


def _event_time(event: Any) -> str:
    when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
    return when.isoformat() if when is not None else ""
