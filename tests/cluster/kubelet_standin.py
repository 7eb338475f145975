"""A stand-in for the kubelet, for tests only: it plays one Node and runs its Pods as local
processes.

It registers a Node with the given capacity (Ready, untainted), watches the Pods the
scheduler binds to it, and runs each Pod's first container as a subprocess: the
container's command and args (argv[0] optionally rewritten through `commands`), with the
Pod's environment resolved (values, Secret and ConfigMap keys, envFrom Secrets, the
downward API for name and namespace). ConfigMap and Secret volumes are written to a temp
dir, and env values that point under their mount paths are rewritten to it; the
termination message path is rewritten the same way. The Pod's status goes Running, then
Succeeded or Failed with the exit code and the termination message. A Pod being deleted
gets its process killed and is then removed at once (as a kubelet confirms a deletion).

No images, no isolation: this tests the control plane and the operator, not containers.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

__all__ = ["KubeletStandIn"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KubeletStandIn:
    """One Node, its Pods run as subprocesses."""

    def __init__(self, api: client.ApiClient, *, capacity: dict[str, str] | None = None,
                 commands: dict[str, list[str]] | None = None, env: dict[str, str] | None = None,
                 workdir: Path | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.name = f"mendel-kubelet-{uuid.uuid4().hex[:8]}"
        self.capacity = {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "500Gi",
                         "pods": "110", **(capacity or {})}
        self.commands = commands or {}
        self.extra_env = env or {}
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kubelet-"))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- node
    def start(self) -> KubeletStandIn:
        self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
            name=self.name, labels={"kubernetes.io/hostname": self.name})))
        status = {"capacity": self.capacity, "allocatable": self.capacity, "conditions": [{
            "type": "Ready", "status": "True", "reason": "StandIn",
            "message": "test stand-in for a kubelet", "lastHeartbeatTime": _now(),
            "lastTransitionTime": _now()}]}
        self.core.patch_node_status(self.name, {"status": status})
        self.core.patch_node(self.name, [{"op": "add", "path": "/spec/taints", "value": []}])
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)  # no Pod starts after this: _run checks _stop under the lock
        with self._lock:
            for process in self.processes.values():
                self._terminate(process)
        try:
            self.core.delete_node(self.name)
        except ApiException as error:
            if error.status != 404:
                raise

    def kill(self, namespace: str, pod: str) -> None:
        """SIGKILL a Pod's process (it ends Failed with exit code 137)."""
        with self._lock:
            process = self.processes.get(f"{namespace}/{pod}")
        if process and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    # ---------------------------------------------------------------------------- pods
    def _watch(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.core.list_pod_for_all_namespaces,
                                           field_selector=f"spec.nodeName={self.name}",
                                           timeout_seconds=5):
                    if self._stop.is_set():
                        break
                    self._on_event(event["type"], event["object"])
            except Exception:  # noqa: BLE001 - a broken watch is re-opened
                time.sleep(0.5)

    def _on_event(self, kind: str, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if kind == "DELETED" or pod.metadata.deletion_timestamp:
            with self._lock:
                process = self.processes.pop(key, None)
            if process:
                self._terminate(process)
            if kind != "DELETED":
                self._remove(pod)
            return
        with self._lock:
            if (self._stop.is_set() or key in self.started
                    or pod.status.phase in ("Succeeded", "Failed")):
                return
            self.started.add(key)
        threading.Thread(target=self._run, args=(pod,), daemon=True).start()

    def _remove(self, pod: client.V1Pod) -> None:
        try:
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                            grace_period_seconds=0)
        except ApiException as error:
            if error.status != 404:
                raise

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def _run(self, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        container = pod.spec.containers[0]
        root = self.workdir / pod.metadata.namespace / pod.metadata.name
        root.mkdir(parents=True, exist_ok=True)
        try:
            rewrites = self._volumes(pod, container, root)
            termination = root / "termination-log"
            rewrites[container.termination_message_path or "/dev/termination-log"] = \
                str(termination)
            env = self._env(pod, container, rewrites)
        except Exception as error:  # noqa: BLE001 - report like a kubelet would
            self._status(pod, "Failed", exit_code=128, message=f"stand-in: {error}")
            return
        argv = list(container.command or []) + list(container.args or [])
        argv = self.commands.get(argv[0], [argv[0]]) + argv[1:] if argv else ["true"]
        log = (root / "log").open("wb")
        with self._lock:
            if self._stop.is_set():  # stopped while this Pod was being prepared
                return
            process = subprocess.Popen(argv, env=env, cwd=root, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            self.processes[key] = process
        self._status(pod, "Running")
        code = process.wait()
        with self._lock:
            if self.processes.pop(key, None) is None:
                return  # deleted meanwhile
        message = termination.read_text()[:4096] if termination.exists() else ""
        if not message and code != 0:
            message = (root / "log").read_text(errors="replace")[-2048:]
        self._status(pod, "Succeeded" if code == 0 else "Failed",
                     exit_code=code if code >= 0 else 128 - code, message=message)

    def _volumes(self, pod: client.V1Pod, container: Any, root: Path) -> dict[str, str]:
        rewrites: dict[str, str] = {}
        sources = {v.name: v for v in pod.spec.volumes or []}
        for mount in container.volume_mounts or []:
            volume = sources.get(mount.name)
            target = root / "volumes" / mount.name
            target.mkdir(parents=True, exist_ok=True)
            if volume is not None and volume.config_map is not None:
                data = self.core.read_namespaced_config_map(
                    volume.config_map.name, pod.metadata.namespace).data or {}
                for key, value in data.items():
                    (target / key).write_text(value)
            elif volume is not None and volume.secret is not None:
                secret = self.core.read_namespaced_secret(volume.secret.secret_name,
                                                          pod.metadata.namespace)
                for key, value in (secret.data or {}).items():
                    (target / key).write_bytes(base64.b64decode(value))
            rewrites[mount.mount_path] = str(target)
        return rewrites

    def _env(self, pod: client.V1Pod, container: Any, rewrites: dict[str, str]) -> dict[str, str]:
        ns = pod.metadata.namespace
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR",
                                                           "PYTHONPATH", "VIRTUAL_ENV")}
        env.update(self.extra_env)
        for source in container.env_from or []:
            if source.secret_ref is not None:
                data = self.core.read_namespaced_secret(source.secret_ref.name, ns).data or {}
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
        for var in container.env or []:
            env[var.name] = self._value(pod, var)
        # Each container has a filesystem of its own: a retried Pod must not find the
        # previous attempt's scratch files.
        env["TMPDIR"] = str(self.workdir / ns / pod.metadata.name / "tmp")
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        for name, value in list(env.items()):
            for path, local in rewrites.items():
                if value == path or value.startswith(path.rstrip("/") + "/"):
                    env[name] = local + value[len(path):]
        return env

    def _value(self, pod: client.V1Pod, var: Any) -> str:
        if var.value_from is None:
            return var.value or ""
        ns, source = pod.metadata.namespace, var.value_from
        if source.secret_key_ref is not None:
            data = self.core.read_namespaced_secret(source.secret_key_ref.name, ns).data or {}
            return base64.b64decode(data[source.secret_key_ref.key]).decode()
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            return (self.core.read_namespaced_config_map(ref.name, ns).data or {})[ref.key]
        if source.field_ref is not None:
            return {"metadata.name": pod.metadata.name,
                    "metadata.namespace": ns}.get(source.field_ref.field_path, "")
        return ""

    def _status(self, pod: client.V1Pod, phase: str, *, exit_code: int | None = None,
                message: str = "") -> None:
        name = pod.spec.containers[0].name
        if phase == "Running":
            state: dict[str, Any] = {"running": {"startedAt": _now()}}
        else:
            state = {"terminated": {"exitCode": exit_code, "message": message,
                                    "reason": "Completed" if exit_code == 0 else "Error",
                                    "startedAt": _now(), "finishedAt": _now()}}
        ready = "True" if phase == "Running" else "False"
        status = {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "startTime": _now(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": _now()},
                {"type": "Ready", "status": ready, "lastTransitionTime": _now()},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": _now()},
            ],
            "containerStatuses": [{"name": name, "state": state, "ready": phase == "Running",
                                   "restartCount": 0, "image": pod.spec.containers[0].image,
                                   "imageID": "", "started": phase == "Running"}],
        }
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace,
                                                  {"status": status})
        except ApiException as error:
            if error.status != 404:
                raise
