"""Fixtures for tests against a real Kubernetes control plane.

By default the session starts its own plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler v1.20.2) with ``hack/control-plane.sh start`` in a temporary directory and
stops it, by the pids it recorded, when the session ends. Set ``MENDEL_KUBECONFIG`` to run
the same tests against an existing cluster instead.

Every test under ``tests/cluster/`` gets the ``cluster`` marker, so ``-m "not cluster"``
deselects them all.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = REPO / "hack" / "control-plane.sh"
INSTALL_HINT = f"run `{SCRIPT.relative_to(REPO)} install` (or set MENDEL_BUILD_CONTROL_PLANE=1)"

T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this directory's: filter by path.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)
            # The local plane's kubeconfig skips TLS verification (self-signed, loopback only).
            item.add_marker(
                pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
            )


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; return that, or fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def poll() -> Callable[..., Any]:
    """``wait_for`` for tests: ``poll(lambda: ..., timeout=30, what="...")``."""
    return wait_for


@dataclass(frozen=True)
class ControlPlane:
    kubeconfig: Path
    server: str
    token: str | None
    #: The directory holding the plane's state and logs; None for an external cluster.
    directory: Path | None = None

    @property
    def managed(self) -> bool:
        """True when this session started the plane (the v1.20.2 one), not MENDEL_KUBECONFIG."""
        return self.directory is not None


def _from_kubeconfig(path: Path) -> ControlPlane:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    auth = (cfg.api_key or {}).get("authorization") or ""
    token = auth.removeprefix("Bearer ") or None
    return ControlPlane(kubeconfig=path, server=cfg.host, token=token)


def _script(*args: str, timeout: float, capture: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        check=False,
        text=True,
        timeout=timeout,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )


def _ensure_built() -> None:
    if _script("status", timeout=30).returncode == 0:
        return
    if os.environ.get("MENDEL_BUILD_CONTROL_PLANE") != "1":
        pytest.skip(f"the local control plane is not built: {INSTALL_HINT}")
    # A cold build takes minutes; let its progress show (pytest -s).
    result = _script("install", timeout=1800, capture=False)
    if result.returncode != 0:
        pytest.fail(f"`{SCRIPT.relative_to(REPO)} install` failed (exit {result.returncode})")


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A running control plane: ours (started here) or the one MENDEL_KUBECONFIG names."""
    external = os.environ.get("MENDEL_KUBECONFIG")
    if external:
        yield _from_kubeconfig(Path(external))
        return

    _ensure_built()
    directory = tmp_path_factory.mktemp("control-plane")
    started = _script("start", str(directory), timeout=300)
    if started.returncode != 0:
        _script("stop", str(directory), timeout=60)
        pytest.fail(
            f"control plane failed to start (logs in {directory / 'logs'}):\n{started.stderr}",
            pytrace=False,
        )
    try:
        env = _env_file(directory / "plane.env")
        yield ControlPlane(
            kubeconfig=Path(started.stdout.strip().splitlines()[-1]),
            server=env["MENDEL_K8S_SERVER"],
            token=env["MENDEL_K8S_TOKEN"],
            directory=directory,
        )
    finally:
        _script("stop", str(directory), timeout=120)


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def k8s_api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def server_minor(k8s_api_client: client.ApiClient) -> int:
    """The apiserver's minor version (e.g. 20), digits only ("27+" on some providers)."""
    minor = client.VersionApi(k8s_api_client).get_code().minor
    return int("".join(ch for ch in minor if ch.isdigit()))


def create_ready_namespace(core: client.CoreV1Api, name: str, server_minor: int = 20) -> str:
    """Create a namespace and wait until Pods may be created in it; return its name."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_sa_ready() -> bool:
        try:
            sa = core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        # Before 1.24 the ServiceAccount admission rejects Pods until the token controller
        # has attached a token Secret; from 1.24 on there are no such Secrets.
        return server_minor >= 24 or bool(sa.secrets)

    wait_for(default_sa_ready, timeout=30, what=f"ServiceAccount {name}/default")
    return name


def delete_namespace_now(core: client.CoreV1Api, name: str) -> None:
    """Delete a namespace, its Pods first with no grace period.

    A kubelet stand-in never confirms a graceful Pod deletion, and a real container whose
    PID 1 ignores SIGTERM holds the namespace for 30 s; either way, delete Pods at once.
    """
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    core.delete_namespace(name)


@pytest.fixture
def namespace(k8s_api_client: client.ApiClient, server_minor: int) -> Iterator[str]:
    """A fresh namespace, ready for Pods, deleted after the test."""
    core = client.CoreV1Api(k8s_api_client)
    name = create_ready_namespace(core, f"mendel-test-{uuid.uuid4().hex[:8]}", server_minor)
    try:
        yield name
    finally:
        delete_namespace_now(core, name)


@pytest.fixture
def stand_in_node(k8s_api_client: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Register Nodes that the scheduler will bind Pods to. A stand-in for a kubelet, for tests
    only: it runs nothing, it only makes a Node exist, Ready, with the given capacity.

    ``stand_in_node(capacity={"nvidia.com/gpu": "1"})`` returns the Node's name; the Node
    also carries the label ``kubernetes.io/hostname=<name>`` for a nodeSelector.
    """
    core = client.CoreV1Api(k8s_api_client)
    created: list[str] = []

    def register(
        capacity: dict[str, str] | None = None, labels: dict[str, str] | None = None
    ) -> str:
        name = f"mendel-stand-in-{uuid.uuid4().hex[:8]}"
        resources = {"cpu": "8", "memory": "32Gi", "pods": "110", **(capacity or {})}
        core.create_node(
            client.V1Node(
                metadata=client.V1ObjectMeta(
                    name=name, labels={"kubernetes.io/hostname": name, **(labels or {})}
                )
            )
        )
        created.append(name)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status: dict[str, Any] = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "StandIn",
                    "message": "test stand-in for a kubelet",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        }
        core.patch_node_status(name, {"status": status})
        # Admission taints every new Node not-ready; the node-lifecycle controller would lift
        # it, but none runs here, so the stand-in lifts it itself.
        core.patch_node(name, [{"op": "add", "path": "/spec/taints", "value": []}])
        return name

    yield register
    for name in created:
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
