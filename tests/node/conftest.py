"""Fixtures for tests on a real node: the local control plane plus kubelet, containerd and runc.

The stand-in node of ``tests/cluster/`` only makes a Node object exist; nothing runs. Here the
session starts its own control plane (``hack/control-plane.sh``) and a real node on it
(``hack/node.sh``), both in a temporary directory, and stops both at the end, even when a
test or the start fails. After the stop the session checks that the node left nothing on the
host (bridge, mounts, processes, cgroups, iptables chains): a dirty stop is a test error.

What the node can and cannot do (see docs/control-plane.md, "A real node"):

* images come from archives imported with ``real_node.import_images``; use
  ``imagePullPolicy: Never`` or ``IfNotPresent`` (there is no registry);
* Pods on the bridge get 10.244.0.0/24 addresses and reach the host at
  ``real_node.pod_gateway`` (10.244.0.1), which exists before the first Pod, so a test server
  can listen there first;
* there is no kube-proxy, so the ``kubernetes`` Service goes nowhere: an in-cluster API client
  needs ``hostNetwork: true`` and the env ``real_node.api_env``.

Every test under ``tests/node/`` gets the ``cluster`` and ``real_node`` markers. Without root
or without ``hack/node.sh install`` the tests are skipped, or fail when
``MENDEL_REQUIRE_REAL_NODE=1`` (for CI jobs that must not skip silently).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.cluster.conftest import (
    REPO,
    ControlPlane,
    _env_file,
    _script,
    create_ready_namespace,
    delete_namespace_now,
    wait_for,
)

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
from kubernetes import client, config  # noqa: E402

HERE = Path(__file__).resolve().parent
NODE_SCRIPT = REPO / "hack" / "node.sh"
NODE_HINT = f"run `sudo {NODE_SCRIPT.relative_to(REPO)} install`"
HELLO_SOURCE = HERE / "images" / "hello.c"
#: The test image: one static binary, see tests/node/images/hello.c for its modes.
HELLO_IMAGE = "localhost/mendel-hello:test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this directory's: filter by path.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.real_node)
            item.add_marker(
                pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
            )


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the run demands a real node (MENDEL_REQUIRE_REAL_NODE=1)."""
    if os.environ.get("MENDEL_REQUIRE_REAL_NODE") == "1":
        pytest.fail(f"MENDEL_REQUIRE_REAL_NODE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def node_script(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``hack/node.sh`` with ``args``; output captured, never raises on failure."""
    return subprocess.run(
        ["bash", str(NODE_SCRIPT), *map(str, args)],
        check=False,
        text=True,
        timeout=timeout,
        capture_output=True,
    )


def _checked(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{result.stderr}", pytrace=False)
    return result.stdout


def write_image_archive(out: Path, tag: str, entrypoint: str, files: dict[Path, str]) -> Path:
    """Write a one-layer docker-archive of static ``files`` ({host path: path in image}).

    The archive is what ``real_node.import_images`` takes; no image builder is involved.
    The image runs as nobody (65534).
    """
    specs = [f"{src}:{dest}" for src, dest in files.items()]
    _checked(
        node_script("image-archive", out, tag, entrypoint, "65534:65534", *specs, timeout=60),
        f"hack/node.sh image-archive {out}",
    )
    return out


@dataclass(frozen=True)
class RealNode:
    """A running node: kubelet v1.20.2 on containerd, registered with ``plane``."""

    plane: ControlPlane
    #: The Node's name (``localhost``; the apiserver reaches the kubelet there).
    node_name: str
    #: The host's address on the Pod bridge: Pods reach servers on the host here.
    pod_gateway: str
    #: Where a ``hostNetwork`` Pod reaches the API server (there is no kube-proxy).
    api_host: str
    api_port: int
    #: The node's state directory (containerd, kubelet, logs/).
    directory: Path
    containerd_socket: Path

    @property
    def api_env(self) -> dict[str, str]:
        """The env that makes an in-cluster client in a ``hostNetwork`` Pod find the API."""
        return {
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
        }

    def import_images(self, *archives: Path) -> None:
        """Import docker or OCI image archives into the node's containerd (``k8s.io``)."""
        _checked(
            node_script("import", self.directory, *archives, timeout=600),
            f"hack/node.sh import {' '.join(map(str, archives))}",
        )


def _require_installed() -> None:
    if os.geteuid() != 0:
        _unavailable("a real node needs root (containerd, runc, mounts, a network bridge)")
    if node_script("status", timeout=60).returncode != 0:
        _unavailable(f"the real node is not installed: {NODE_HINT}")


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A control plane of this session's own, with a real node on it; both stopped at the end."""
    _require_installed()
    base = tmp_path_factory.mktemp("real-node")
    plane_dir, node_dir = base / "plane", base / "node"
    leftovers = ""
    try:
        started = _script("start", str(plane_dir), timeout=300)
        if started.returncode != 0:
            pytest.fail(
                f"control plane failed to start (logs in {plane_dir / 'logs'}):\n{started.stderr}",
                pytrace=False,
            )
        plane_env = _env_file(plane_dir / "plane.env")
        plane = ControlPlane(
            kubeconfig=plane_dir / "kubeconfig",
            server=plane_env["MENDEL_K8S_SERVER"],
            token=plane_env["MENDEL_K8S_TOKEN"],
            directory=plane_dir,
        )
        _checked(
            node_script("start", plane_dir, node_dir, timeout=300),
            f"hack/node.sh start (logs in {node_dir / 'logs'})",
        )
        env = _env_file(node_dir / "node.env")
        yield RealNode(
            plane=plane,
            node_name=env["NODE_NAME"],
            pod_gateway=env["POD_GATEWAY"],
            api_host=env["API_HOST"],
            api_port=int(env["API_PORT"]),
            directory=node_dir,
            containerd_socket=Path(env["CONTAINERD_SOCKET"]),
        )
    finally:
        stopped = node_script("stop", node_dir, timeout=180)
        again = node_script("stop", node_dir, timeout=60)
        left = node_script("leftovers", node_dir, timeout=60)
        _script("stop", str(plane_dir), timeout=120)
        if stopped.returncode != 0:
            leftovers += f"hack/node.sh stop failed:\n{stopped.stderr}\n"
        if "nothing to stop" not in again.stderr:
            leftovers += f"a second hack/node.sh stop was not a no-op:\n{again.stderr}\n"
        if left.returncode != 0:
            leftovers += f"the stopped node left on the host:\n{left.stdout}{left.stderr}"
    if leftovers:
        pytest.fail(leftovers, pytrace=False)


@pytest.fixture(scope="session")
def node_api_client(real_node: RealNode) -> Iterator[client.ApiClient]:
    """A Kubernetes API client for the real node's plane (admin)."""
    api = config.new_client_from_config(config_file=str(real_node.plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def kubectl(real_node: RealNode) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, check=True, timeout=60, input=None)`` against the real node's plane."""
    binary = shutil.which("kubectl")
    if binary is None:
        _unavailable("kubectl is not on PATH")

    def run(
        *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, "--kubeconfig", str(real_node.plane.kubeconfig), *args],
            check=False,
            text=True,
            timeout=timeout,
            capture_output=True,
            input=input,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
        return result

    return run


@pytest.fixture
def node_namespace(node_api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace whose ``default`` ServiceAccount can run Pods; deleted afterwards."""
    core = client.CoreV1Api(node_api_client)
    name = create_ready_namespace(core, f"mendel-node-{uuid.uuid4().hex[:8]}")
    try:
        yield name
    finally:
        delete_namespace_now(core, name)


@pytest.fixture(scope="session")
def poll() -> Callable[..., Any]:
    """``wait_for`` for tests: ``poll(lambda: ..., timeout=30, what="...")``."""
    return wait_for


@pytest.fixture(scope="session")
def hello_image(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test image (tests/node/images/hello.c, static), imported into the node; its tag."""
    gcc = shutil.which("gcc")
    if gcc is None:
        _unavailable(f"gcc is not installed: {NODE_HINT}")
    out = tmp_path_factory.mktemp("hello-image")
    binary = out / "hello"
    compiled = subprocess.run(
        [gcc, "-Os", "-Wall", "-Werror", "-static", "-o", str(binary), str(HELLO_SOURCE)],
        check=False,
        text=True,
        capture_output=True,
    )
    if compiled.returncode != 0:
        pytest.fail(f"gcc {HELLO_SOURCE.name} failed:\n{compiled.stderr}", pytrace=False)
    archive = out / "hello.docker.tar"
    write_image_archive(archive, HELLO_IMAGE, "/hello", {binary: "/hello"})
    real_node.import_images(archive)
    return HELLO_IMAGE
