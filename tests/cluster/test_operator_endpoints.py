"""The operator's HTTP endpoints against the real control plane (v1.20.2): the Prometheus
metrics port (`--metrics-port`) and the Kopf liveness probe (`--liveness`).

The operator runs in-process (OperatorThread, with the liveness endpoint passed through)
without an MLflow tracking URI: nothing here is about tracking. A kubelet stand-in runs the
driver Pod as a `sleep`, so the resource reaches Running. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from mendel.api.validation import load_documents
from mendel.controller.config import OperatorConfig
from mendel.controller.runtime.operator import run

from .kubelet_standin import KubeletStandIn
from .operator_harness import REPO, OperatorThread, Resources, install_crds

KIND = "QDEvolution"
METRIC_NAMES = ("mendel_resources", "mendel_condition_transitions_total",
                "mendel_reconcile_seconds", "mendel_mlflow_errors_total",
                "mendel_api_errors_total")
# Stands for `mendel worker`: the driver Pod stays Running, costs nothing, needs no MLflow.
SLEEPER = ["sh", "-c", "exec sleep 600", "mendel"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()
    except OSError:
        return 0, "", ""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, tuple(sorted(labels.items()))))


class EndpointOperator(OperatorThread):
    """OperatorThread that also serves Kopf's liveness endpoint."""

    def __init__(self, kubeconfig: Path, settings: OperatorConfig, liveness: str) -> None:
        super().__init__(kubeconfig, settings)
        self.liveness = liveness

    def _main(self) -> None:
        try:
            run(self.settings, self.kubeconfig, stop_flag=self.stop_flag,
                ready_flag=self.ready_flag, liveness_endpoint=self.liveness)
        except BaseException as error:  # noqa: BLE001 - surfaced by the test
            self.error = error


@pytest.fixture(scope="module")
def endpoint_crds(k8s_api_client: client.ApiClient) -> None:
    install_crds(k8s_api_client)


@pytest.fixture(scope="module")
def sleeper_node(k8s_api_client: client.ApiClient,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeletStandIn]:
    node = KubeletStandIn(k8s_api_client, commands={"mendel": SLEEPER},
                          workdir=tmp_path_factory.mktemp("endpoints-node")).start()
    try:
        yield node
    finally:
        # stop() kills the Pod processes it knows; a Pod the stand-in was still starting
        # (say, a Job's replacement Pod after the namespace's Pods were deleted) registers
        # its process only after that. Stop again until no Pod thread is left, so no process
        # outlives the test and no thread reports to a plane that is shutting down.
        deadline = time.monotonic() + 15
        while True:
            node.stop()
            if not _pod_threads(node) or time.monotonic() > deadline:
                break
            time.sleep(0.2)


def _pod_threads(node: KubeletStandIn) -> list[threading.Thread]:
    """This stand-in's per-Pod threads (`node._run`) still alive."""
    return [t for t in threading.enumerate()
            if t.is_alive() and getattr(getattr(t, "_target", None), "__self__", None) is node]


@pytest.fixture
def resources(k8s_api_client: client.ApiClient, namespace: str,
              endpoint_crds: None) -> Resources:
    return Resources(k8s_api_client, namespace)


@pytest.fixture
def endpoints(kubeconfig: Path, namespace: str, endpoint_crds: None,
              sleeper_node: KubeletStandIn, poll: Callable[..., Any]) -> Iterator[dict[str, str]]:
    """The operator on free ports; yields its metrics and liveness URLs."""
    metrics_port = _free_port()
    liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    settings = OperatorConfig(image="mendel-worker:test", namespaces=(namespace,),
                              reconcile_interval=3.0, metrics_port=metrics_port)
    operator = EndpointOperator(kubeconfig, settings, liveness).start()
    try:
        urls = {"metrics": f"http://127.0.0.1:{metrics_port}/metrics", "liveness": liveness}
        # The metrics server starts in the startup handler, the probe server next to it.
        poll(lambda: _get(urls["metrics"])[0] == 200 and _get(urls["liveness"])[0] == 200,
             timeout=30, what="the metrics and liveness endpoints")
        yield urls
    finally:
        operator.stop()


def _spec(node: str) -> dict[str, Any]:
    spec = load_documents((REPO / "examples" / "qdevolution-small.yaml").read_text())[0]["spec"]
    spec["resources"]["driver"]["gpus"] = 0
    spec["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": node}}
    return dict(spec)


def test_metrics_endpoint_serves_prometheus_text_and_counts_resources_by_kind_and_phase(
        endpoints: dict[str, str], resources: Resources, sleeper_node: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    status, content_type, text = _get(endpoints["metrics"])
    assert status == 200
    assert content_type.startswith("text/plain")
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    assert _value(text, "mendel_resources", kind=KIND, phase="Running") is None

    name = f"m-{uuid.uuid4().hex[:6]}"
    resources.create(KIND, name, _spec(sleeper_node.name))
    text = poll(lambda: (t := _get(endpoints["metrics"])[2])
                and _value(t, "mendel_resources", kind=KIND, phase="Running") == 1.0 and t,
                timeout=90, what="mendel_resources{kind=QDEvolution,phase=Running} == 1")
    # The gauge is set when the pass computes the phase, just before its status patch lands.
    poll(lambda: resources.status(KIND, name).get("phase") == "Running", timeout=30,
         what="status.phase == Running")
    # One resource, one phase: no other phase of the kind holds it too.
    counted = {labels: value for (sample, labels), value in _samples(text).items()
               if sample == "mendel_resources" and dict(labels)["kind"] == KIND}
    assert sum(counted.values()) == 1.0, counted
    assert (_value(text, "mendel_reconcile_seconds_count", kind=KIND) or 0) >= 1
    assert _value(text, "mendel_condition_transitions_total", kind=KIND, type="Admitted",
                  status="True") == 1.0
    assert _value(text, "mendel_condition_transitions_total", kind=KIND, type="Running",
                  status="True") == 1.0
    assert _value(text, "mendel_mlflow_errors_total") == 0.0

    resources.delete(KIND, name)
    poll(lambda: resources.get(KIND, name) is None, timeout=60, what="the resource to go")
    poll(lambda: not any(value for (sample, labels), value
                         in _samples(_get(endpoints["metrics"])[2]).items()
                         if sample == "mendel_resources" and dict(labels).get("kind") == KIND),
         timeout=30, what="the deleted resource to leave mendel_resources")


def test_liveness_endpoint_answers_healthy_with_a_fresh_watch(
        endpoints: dict[str, str], resources: Resources, sleeper_node: KubeletStandIn,
        poll: Callable[..., Any]) -> None:
    status, content_type, body = _get(endpoints["liveness"])
    assert status == 200
    assert content_type.startswith("application/json")
    assert isinstance(json.loads(body)["operator_watch_age"], int | float)

    name = f"l-{uuid.uuid4().hex[:6]}"
    uid = resources.create(KIND, name, _spec(sleeper_node.name))["metadata"]["uid"]
    poll(lambda: resources.jobs(uid), timeout=60, what="the driver Job")
    # The probe's answer is cached by Kopf for 10 s; within two cache periods it must show
    # the watch events of the new Job and Pod.
    age = poll(lambda: (answer := _get(endpoints["liveness"]))[0] == 200
               and (value := json.loads(answer[2])["operator_watch_age"]) < 5.0
               and {"age": value}, timeout=30, what="operator_watch_age < 5 s")
    assert age["age"] >= 0.0
    # Let the stand-in finish starting the Pod before the fixtures tear down.
    poll(lambda: resources.status(KIND, name).get("phase") == "Running", timeout=60,
         what="status.phase == Running")
