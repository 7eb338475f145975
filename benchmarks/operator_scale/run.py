"""Operator scale benchmark: N QDEvolutions created at once against a real control plane.

Everything is started here and stopped again at the end, by pid:

1. a v1.20.2 control plane (`hack/control-plane.sh start DIR` / `stop DIR`), the CRDs and a
   namespace;
2. a real `mlflow server` on loopback (tests/mlflow_server.py);
3. a counting reverse proxy (proxy.py) between the operator and the apiserver, so that the
   operator's own API requests are counted (the 1.20 apiserver's request metric has no
   client label);
4. a stand-in node (node.py = tests/cluster/kubelet_standin.py in its own process) with
   room for every Pod, running each Pod as a local process (`sleep` by default);
5. `python -m mendel.cli operator` as a subprocess, so its memory can be read from
   /proc/<pid>/status (VmRSS sampled every 0.5 s, VmHWM = kernel's peak);

then creates N QDEvolutions (examples/qdevolution-small.yaml's spec, driver gpus 0, pinned
to the stand-in node, FAKE_STEPS x FAKE_STEP_SECONDS = 1 h so Pods stay Running) from a
pool of threads, and records, from watches on the resources, Jobs and Pods, per resource:
create -> driver Job exists, -> first status written, -> Pod Running (cluster side:
job controller, scheduler, stand-in), -> status.phase == Running. After all are Running
(or the deadline) it keeps watching for a steady window to measure the operator's idle
request rate, reads the operator's metrics, checks there is exactly one Job and one MLflow
run per resource, and writes a JSON report.

    .venv/bin/python benchmarks/operator_scale/run.py --count 300 \
        --out benchmarks/operator_scale/results-n300.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import json
import math
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

import urllib3  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.cluster.operator_harness import install_crds  # noqa: E402
from tests.mlflow_server import MlflowServer  # noqa: E402

from mendel.api.kinds import GROUP, KINDS, VERSION  # noqa: E402
from mendel.api.validation import load_documents  # noqa: E402

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

PLANE = REPO / "hack" / "control-plane.sh"
KIND = "QDEvolution"
PLURAL = KINDS[KIND].plural
LABEL_UID = f"{GROUP}/uid"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p90, p99 (nearest rank), max and mean, in seconds (3 decimals)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"n": len(ordered), "p50": round(rank(0.50), 3), "p90": round(rank(0.90), 3),
            "p99": round(rank(0.99), 3), "max": round(ordered[-1], 3),
            "mean": round(sum(ordered) / len(ordered), 3)}


def http_get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl._create_unverified_context()  # the local plane's self-signed loopback cert
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return 0, ""


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_total_gib": round(int(mem) / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


# --------------------------------------------------------------------------- processes
class ProcessSampler:
    """VmRSS / VmHWM / CPU seconds of one pid, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []  # (monotonic, rss MiB)
        self.peak_rss_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss")

    def status(self) -> dict[str, float]:
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                number = int(value.split()[0])
                fields[key] = number if key == "Threads" else round(number / 1024, 1)
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        fields["cpu_seconds"] = round((int(stat[11]) + int(stat[12])) / ticks, 2)
        return fields

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss = self.status()["VmRSS"]
                self.samples.append((time.monotonic(), rss))
                self.peak_rss_mib = max(self.peak_rss_mib, rss)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def stop_process(process: subprocess.Popen[Any], name: str, timeout: float = 30.0,
                 group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `timeout` (the process group when `group`)."""
    if process.poll() is not None:
        return
    send = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            send(signal.SIGKILL)
        process.wait(10)


def kill_strays(workdir: Path) -> int:
    """SIGKILL processes whose working directory is under `workdir` (Pod processes the
    stand-in started there and could not stop); returns how many."""
    killed = 0
    root = str(workdir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


# --------------------------------------------------------------------------- watches
class Recorder:
    """First-seen times (monotonic) per owner uid, from watches on one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.batch, self.core = client.BatchV1Api(api), client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.lock = threading.Lock()
        self.job: dict[str, float] = {}
        self.job_names: dict[str, set[str]] = {}
        self.pod_created: dict[str, float] = {}
        self.pod_running: dict[str, float] = {}
        self.status: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.phase: dict[str, str] = {}
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _first(self, table: dict[str, float], uid: str, now: float) -> None:
        with self.lock:
            table.setdefault(uid, now)

    def _on_job(self, job: Any, now: float) -> None:
        uid = (job.metadata.labels or {}).get(LABEL_UID)
        if uid:
            self._first(self.job, uid, now)
            with self.lock:
                self.job_names.setdefault(uid, set()).add(job.metadata.name)

    def _on_pod(self, pod: Any, now: float) -> None:
        uid = (pod.metadata.labels or {}).get(LABEL_UID)
        if uid:
            self._first(self.pod_created, uid, now)
            if pod.status and pod.status.phase == "Running":
                self._first(self.pod_running, uid, now)

    def _on_resource(self, body: dict[str, Any], now: float) -> None:
        uid = body["metadata"]["uid"]
        phase = (body.get("status") or {}).get("phase")
        if phase:
            self._first(self.status, uid, now)
            with self.lock:
                self.phase[uid] = phase
            if phase == "Running":
                self._first(self.running, uid, now)

    def _watch(self, list_fn: Callable[..., Any], handle: Callable[[Any, float], None],
               *args: Any, **kwargs: Any) -> None:
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    listing = list_fn(*args, **kwargs)
                    now = time.monotonic()
                    items = listing["items"] if isinstance(listing, dict) else listing.items
                    for item in items:
                        handle(item, now)
                    meta = listing["metadata"] if isinstance(listing, dict) else listing.metadata
                    version = meta["resourceVersion"] if isinstance(meta, dict) \
                        else meta.resource_version
                stream = watch.Watch()
                for event in stream.stream(list_fn, *args, resource_version=version,
                                           timeout_seconds=5, **kwargs):
                    now = time.monotonic()
                    item = event["object"]
                    if event["type"] == "ERROR":
                        version = None
                        break
                    meta = item["metadata"] if isinstance(item, dict) else item.metadata
                    version = meta["resourceVersion"] if isinstance(meta, dict) \
                        else meta.resource_version
                    if event["type"] != "DELETED":
                        handle(item, now)
                    if self.stop.is_set():
                        break
            except ApiException as error:
                if error.status == 410:
                    version = None
                else:
                    time.sleep(0.5)
            except Exception:  # noqa: BLE001 - a broken watch is re-opened
                time.sleep(0.5)

    def start(self) -> Recorder:
        ns = self.namespace
        selector = {"label_selector": LABEL_UID}
        specs: list[tuple[Callable[..., Any], Callable[[Any, float], None], tuple[Any, ...],
                          dict[str, Any]]] = [
            (self.batch.list_namespaced_job, self._on_job, (ns,), selector),
            (self.core.list_namespaced_pod, self._on_pod, (ns,), selector),
            (self.custom.list_namespaced_custom_object, self._on_resource,
             (GROUP, VERSION, ns, PLURAL), {}),
        ]
        for list_fn, handle, args, kwargs in specs:
            thread = threading.Thread(target=self._watch, args=(list_fn, handle, *args),
                                      kwargs=kwargs, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


# --------------------------------------------------------------------------- benchmark
def spec_for(node: str, steps: int, step_seconds: float) -> dict[str, Any]:
    spec = load_documents((REPO / "examples" / "qdevolution-small.yaml").read_text())[0]["spec"]
    spec["resources"]["driver"]["gpus"] = 0
    spec["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": node}}
    spec["podTemplatePatch"] = {"env": [
        {"name": "FAKE_STEPS", "value": str(steps)},
        {"name": "FAKE_STEP_SECONDS", "value": str(step_seconds)}]}
    return dict(spec)


def apiserver_requests(server: str, token: str) -> dict[str, float]:
    """apiserver_request_total, summed by 'VERB resource[/subresource]' (all clients)."""
    code, text = http_get(f"{server}/metrics", token, timeout=10)
    if code != 200:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource = labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else "")
            key = f"{labels.get('verb', '?')} {resource or '(none)'}"
            out[key] = out.get(key, 0.0) + sample.value
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    keys = set(after) | set(before)
    changed = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in sorted(changed.items(), key=lambda kv: -kv[1]) if v}


def operator_metrics(port: int) -> dict[str, Any]:
    code, text = http_get(f"http://127.0.0.1:{port}/metrics")
    if code != 200:
        return {"error": f"HTTP {code}"}
    out: dict[str, Any] = {"resources": {}, "transitions": {}, "api_errors": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "mendel_resources":
                out["resources"][f"{labels['kind']}/{labels['phase']}"] = sample.value
            elif sample.name == "mendel_condition_transitions_total":
                key = f"{labels['kind']}/{labels['type']}={labels['status']}"
                out["transitions"][key] = sample.value
            elif sample.name == "mendel_reconcile_seconds_count":
                out["reconcile_passes"] = out.get("reconcile_passes", 0) + sample.value
            elif sample.name == "mendel_reconcile_seconds_sum":
                out["reconcile_seconds_sum"] = out.get("reconcile_seconds_sum", 0) + sample.value
            elif sample.name == "mendel_mlflow_errors_total":
                out["mlflow_errors"] = sample.value
            elif sample.name == "mendel_api_errors_total":
                out["api_errors"][labels["verb"]] = sample.value
    if out.get("reconcile_passes"):
        out["reconcile_mean_seconds"] = round(out["reconcile_seconds_sum"]
                                              / out["reconcile_passes"], 4)
    return out


class Benchmark:
    def __init__(self, args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack):
        self.args, self.workdir, self.stack = args, workdir, stack
        self.result: dict[str, Any] = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine(),
        }

    # ------------------------------------------------------------------ set-up
    def start_plane(self) -> None:
        directory = self.workdir / "plane"
        started = subprocess.run(["bash", str(PLANE), "start", str(directory)], text=True,
                                 capture_output=True, timeout=300, check=False)
        self.stack.callback(subprocess.run, ["bash", str(PLANE), "stop", str(directory)],
                            timeout=120, check=False, capture_output=True)
        if started.returncode != 0:
            raise RuntimeError(f"control plane failed to start:\n{started.stderr[-3000:]}")
        self.kubeconfig = Path(started.stdout.strip().splitlines()[-1])
        env = dict(line.split("=", 1) for line in
                   (directory / "plane.env").read_text().splitlines() if "=" in line)
        self.server, self.token = env["MENDEL_K8S_SERVER"], env["MENDEL_K8S_TOKEN"]
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = max(16, self.args.creators)
        self.api = client.ApiClient(cfg)
        self.stack.callback(self.api.close)
        log(f"control plane at {self.server}")

    def make_namespace(self) -> None:
        core = client.CoreV1Api(self.api)
        self.namespace = "mendel-bench"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=self.namespace)))
        deadline = time.monotonic() + 60
        while True:  # 1.20: Pods are refused until the default SA has its token Secret
            with contextlib.suppress(ApiException):
                if core.read_namespaced_service_account("default", self.namespace).secrets:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("default ServiceAccount has no token")
            time.sleep(0.2)

    def start_mlflow(self) -> None:
        self.mlflow = MlflowServer(self.workdir / "mlflow").start()
        self.stack.callback(self.mlflow.stop)
        log(f"mlflow server at {self.mlflow.uri}")

    def start_proxy(self) -> None:
        port_file = self.workdir / "proxy.port"
        logfile = (self.workdir / "proxy.log").open("wb")
        self.stack.callback(logfile.close)
        process = subprocess.Popen(
            [sys.executable, str(HERE / "proxy.py"), "--upstream", self.server,
             "--port-file", str(port_file)], stdout=logfile, stderr=subprocess.STDOUT)
        self.stack.callback(stop_process, process, "proxy", 10)
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"proxy did not start; see {self.workdir / 'proxy.log'}")
            time.sleep(0.1)
        self.proxy = f"http://127.0.0.1:{port_file.read_text()}"
        self.operator_kubeconfig = self.workdir / "operator.kubeconfig"
        self.operator_kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.proxy}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "admin",
                                                       "namespace": "default"}}]}))
        log(f"counting proxy at {self.proxy}")

    def start_node(self) -> None:
        workdir = self.workdir / "node"
        workdir.mkdir()
        count = str(self.args.count)
        capacity = {"cpu": str(4 * self.args.count + 16), "memory": f"{8 * self.args.count}Gi",
                    "pods": str(self.args.count + 100), "nvidia.com/gpu": str(self.args.count)}
        logfile = (self.workdir / "node.log").open("w")
        self.stack.callback(logfile.close)
        process = subprocess.Popen(
            [sys.executable, str(HERE / "node.py"), "--kubeconfig", str(self.kubeconfig),
             "--workdir", str(workdir), "--worker", self.args.worker,
             *[f"--capacity={k}={v}" for k, v in capacity.items()]],
            stdout=subprocess.PIPE, stderr=logfile, text=True)

        def stop() -> None:
            stop_process(process, "stand-in node", 60)
            strays = kill_strays(workdir)
            if strays:
                log(f"killed {strays} stray Pod process(es) under {workdir}")

        self.stack.callback(stop)
        assert process.stdout is not None
        self.node = process.stdout.readline().strip()
        if not self.node:
            raise RuntimeError(f"stand-in node did not start; see {self.workdir / 'node.log'}")
        self.node_process = process
        self.result["node"] = {"name": self.node, "capacity": capacity, "pods": count,
                               "worker": self.args.worker}
        log(f"stand-in node {self.node} ({self.args.worker} workers)")

    def start_operator(self) -> None:
        self.metrics_port, liveness_port = free_port(), free_port()
        self.liveness = f"http://127.0.0.1:{liveness_port}/healthz"
        argv = [sys.executable, "-m", "mendel.cli", "operator", "--namespace", self.namespace,
                "--tracking-uri", self.mlflow.uri, "--image", "mendel-worker:bench",
                "--kubeconfig", str(self.operator_kubeconfig),
                "--metrics-port", str(self.metrics_port), "--liveness", self.liveness,
                "--interval", str(self.args.interval)]
        logfile = (self.workdir / "operator.log").open("wb")
        self.stack.callback(logfile.close)
        self.operator = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT,
                                         cwd=REPO)
        self.stack.callback(stop_process, self.operator, "operator", 30)
        self.result["operator_command"] = " ".join(argv[1:])
        self.sampler = ProcessSampler(self.operator.pid).start()
        self.stack.callback(self.sampler.stop)
        deadline = time.monotonic() + 120
        while http_get(self.liveness)[0] != 200 or \
                http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[0] != 200:
            if self.operator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator not ready; see {self.workdir / 'operator.log'}")
            time.sleep(0.25)
        log(f"operator pid {self.operator.pid} ready")

    # ------------------------------------------------------------------ measurement
    def counts(self) -> dict[str, Any]:
        code, text = http_get(f"{self.proxy}/_proxy/counts")
        return dict(json.loads(text)) if code == 200 else {}

    def snapshot(self) -> dict[str, Any]:
        return {"at": time.monotonic(), "proxy": self.counts(),
                "apiserver": apiserver_requests(self.server, self.token),
                "operator": self.sampler.status()}

    def create_all(self) -> dict[str, tuple[str, float, float]]:
        custom = client.CustomObjectsApi(self.api)
        spec = spec_for(self.node, self.args.steps, self.args.step_seconds)

        def create(index: int) -> tuple[str, float, float]:
            name = f"bench-{index:04d}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                    "metadata": {"name": name}, "spec": copy.deepcopy(spec)}
            sent = time.monotonic()
            created = cast(dict[str, Any], custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body))
            return str(created["metadata"]["uid"]), sent, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(self.args.creators) as pool:
            done = list(pool.map(create, range(self.args.count)))
        return {uid: (f"bench-{i:04d}", sent, at) for i, (uid, sent, at) in enumerate(done)}

    def run(self) -> dict[str, Any]:
        self.start_plane()
        install_crds(self.api)
        self.make_namespace()
        self.start_mlflow()
        self.start_proxy()
        self.start_node()
        self.start_operator()
        recorder = Recorder(self.api, self.namespace).start()
        self.stack.callback(recorder.close)

        time.sleep(self.args.idle_seconds)
        idle = self.snapshot()
        log(f"idle: operator RSS {idle['operator']['VmRSS']} MiB; creating {self.args.count}")
        created = self.create_all()
        first_sent = min(sent for _, sent, _ in created.values())
        last_created = max(at for _, _, at in created.values())
        log(f"{len(created)} created in {last_created - first_sent:.2f} s")

        deadline = first_sent + self.args.deadline
        milestones: dict[str, float] = {}
        while time.monotonic() < deadline:
            with recorder.lock:
                jobs, running = len(recorder.job), len(recorder.running)
                pods = len(recorder.pod_running)
            now = time.monotonic()
            if jobs >= len(created):
                milestones.setdefault("all_jobs", now)
            if running >= len(created):
                milestones.setdefault("all_running", now)
                break
            if int(now) % 10 == 0:
                log(f"jobs {jobs}, pods running {pods}, resources running {running}"
                    f" / {len(created)}; operator RSS {self.sampler.status()['VmRSS']} MiB")
            time.sleep(1.0 - (now % 1.0))
        burst = self.snapshot()
        log(f"burst window over after {burst['at'] - first_sent:.1f} s; "
            f"steady window {self.args.steady_seconds} s")
        self.result["gauge_scrapes"] = self.scrape_gauge(len(created), self.args.steady_seconds)
        steady = self.snapshot()
        recorder.close()

        self.result["operator_metrics"] = operator_metrics(self.metrics_port)
        self.result["liveness"] = json.loads(http_get(self.liveness)[1] or "null")
        self.result["checks"] = self.checks(created, recorder)
        self.result.update(self.summarize(created, recorder, idle, burst, steady, first_sent,
                                          last_created, milestones))
        self.result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return self.result

    def scrape_gauge(self, expected: int, seconds: float) -> dict[str, Any]:
        """Scrape /metrics every 0.5 s for `seconds`; count the scrapes whose
        mendel_resources does not add up to `expected` (all resources are Running now)."""
        totals: Counter[float] = Counter()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            code, text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
            if code == 200:
                counted = sum(s.value for f in text_string_to_metric_families(text)
                              for s in f.samples if s.name == "mendel_resources")
                totals[counted] += 1
            time.sleep(0.5)
        return {"expected": expected, "scrapes": sum(totals.values()),
                "short": sum(n for value, n in totals.items() if value != expected),
                "sums_seen": {str(k): v for k, v in sorted(totals.items())}}

    def checks(self, created: dict[str, tuple[str, float, float]],
               recorder: Recorder) -> dict[str, Any]:
        jobs = client.BatchV1Api(self.api).list_namespaced_job(self.namespace).items
        per_uid = Counter(((j.metadata and j.metadata.labels) or {}).get(LABEL_UID)
                          for j in jobs)
        from mlflow import MlflowClient

        mlflow = MlflowClient(self.mlflow.uri)
        experiments = [e.experiment_id for e in mlflow.search_experiments()]
        runs = mlflow.search_runs(experiments, max_results=5 * len(created) + 100)
        runs_per_uid = Counter(r.data.tags.get("mendel.uid") for r in runs)
        log_text = (self.workdir / "operator.log").read_text(errors="replace")
        return {
            "resources": len(created),
            "with_exactly_one_job": sum(1 for uid in created if per_uid.get(uid) == 1),
            "jobs_total": len(jobs),
            "with_exactly_one_mlflow_run": sum(1 for uid in created
                                               if runs_per_uid.get(uid) == 1),
            "mlflow_runs_total": len(runs),
            "final_phases": dict(Counter(recorder.phase.get(uid, "(none)") for uid in created)),
            "operator_log_errors": sum(1 for line in log_text.splitlines()
                                       if " ERROR " in line or "Traceback" in line),
            "operator_log_lines": log_text.count("\n"),
        }

    def summarize(self, created: dict[str, tuple[str, float, float]], recorder: Recorder,
                  idle: dict[str, Any], burst: dict[str, Any], steady: dict[str, Any],
                  first_sent: float, last_created: float,
                  milestones: dict[str, float]) -> dict[str, Any]:
        def since_create(table: dict[str, float]) -> list[float]:
            return [table[uid] - at for uid, (_, _, at) in created.items() if uid in table]

        def between(later: dict[str, float], earlier: dict[str, float]) -> list[float]:
            return [later[uid] - earlier[uid] for uid in created
                    if uid in later and uid in earlier]

        def rel(table: dict[str, float], uid: str, at: float) -> float | None:
            return round(table[uid] - at, 3) if uid in table else None

        per_resource = [
            {"name": name, "create_call": round(at - sent, 3),
             "job": rel(recorder.job, uid, at), "first_status": rel(recorder.status, uid, at),
             "pod_created": rel(recorder.pod_created, uid, at),
             "pod_running": rel(recorder.pod_running, uid, at),
             "running": rel(recorder.running, uid, at)}
            for uid, (name, sent, at) in sorted(created.items(), key=lambda kv: kv[1][0])]
        n = len(created)
        burst_proxy = diff(burst["proxy"].get("requests", {}), idle["proxy"].get("requests", {}))
        steady_proxy = diff(steady["proxy"].get("requests", {}),
                            burst["proxy"].get("requests", {}))
        burst_api = diff(burst["apiserver"], idle["apiserver"])
        non_watch = sum(v for k, v in burst_proxy.items() if not k.startswith("WATCH"))
        steady_seconds = steady["at"] - burst["at"]
        steady_non_watch = sum(v for k, v in steady_proxy.items() if not k.startswith("WATCH"))
        return {
            "latency_seconds": {
                "create_call": percentiles([at - sent for _, sent, at in created.values()]),
                "to_job": percentiles(since_create(recorder.job)),
                "to_first_status": percentiles(since_create(recorder.status)),
                "to_pod_created": percentiles(since_create(recorder.pod_created)),
                "to_pod_running": percentiles(since_create(recorder.pod_running)),
                "to_running": percentiles(since_create(recorder.running)),
                "pod_running_to_resource_running": percentiles(
                    between(recorder.running, recorder.pod_running)),
            },
            "reached": {"job": len(recorder.job), "first_status": len(recorder.status),
                        "pod_running": len(recorder.pod_running),
                        "running": len(recorder.running), "of": n},
            "wall_seconds": {
                "creating": round(last_created - first_sent, 2),
                "all_jobs": round(milestones["all_jobs"] - first_sent, 2)
                if "all_jobs" in milestones else None,
                "all_running": round(milestones["all_running"] - first_sent, 2)
                if "all_running" in milestones else None,
                "burst_window": round(burst["at"] - idle["at"], 2),
                "steady_window": round(steady_seconds, 2),
            },
            "operator_memory_mib": {
                "idle_rss": idle["operator"]["VmRSS"],
                "rss_after_burst": burst["operator"]["VmRSS"],
                "rss_after_steady": steady["operator"]["VmRSS"],
                "peak_rss_sampled": self.sampler.peak_rss_mib,
                "peak_vmhwm": steady["operator"]["VmHWM"],
                "threads": steady["operator"]["Threads"],
                "timeline": [(round(t - first_sent, 1), r) for t, r in self.sampler.samples[::4]],
            },
            "operator_cpu_seconds": {
                "burst": round(burst["operator"]["cpu_seconds"]
                               - idle["operator"]["cpu_seconds"], 2),
                "steady": round(steady["operator"]["cpu_seconds"]
                                - burst["operator"]["cpu_seconds"], 2),
            },
            "per_resource_seconds_since_create": per_resource,
            "api_requests": {
                "source": "operator: counting proxy in front of the apiserver (every request "
                          "the operator process made); all_clients: apiserver_request_total "
                          "delta (operator + controller-manager + scheduler + stand-in node + "
                          "this benchmark's creates and watches)",
                "operator_burst_by_verb": burst_proxy,
                "operator_burst_non_watch": non_watch,
                "operator_burst_per_resource": round(non_watch / n, 2),
                "operator_steady_by_verb": steady_proxy,
                "operator_steady_per_resource_per_minute": round(
                    steady_non_watch / n / (steady_seconds / 60), 3) if steady_seconds else None,
                "operator_user_agents_total": steady["proxy"].get("user_agents", {}),
                "all_clients_burst_total": sum(burst_api.values()),
                "all_clients_burst_per_resource": round(sum(burst_api.values()) / n, 2),
                "all_clients_burst_by_verb": dict(list(burst_api.items())[:25]),
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", "-n", type=int, default=300)
    parser.add_argument("--worker", choices=("sleep", "fake"), default="sleep",
                        help="what the stand-in node runs for `mendel worker` (see node.py)")
    parser.add_argument("--steps", type=int, default=1000, help="FAKE_STEPS")
    parser.add_argument("--step-seconds", type=float, default=3.6, help="FAKE_STEP_SECONDS")
    parser.add_argument("--interval", type=float, default=30.0, help="operator --interval")
    parser.add_argument("--creators", type=int, default=16, help="threads creating resources")
    parser.add_argument("--deadline", type=float, default=600.0,
                        help="seconds after the first create to wait for all Running")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mendel-opscale-"))
    log(f"work directory {workdir}")
    # SIGTERM unwinds like Ctrl-C, so every process started here is stopped.
    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(lambda: subprocess.run(["rm", "-rf", str(workdir)], check=False))
        try:
            result = Benchmark(args, workdir, stack).run()
        finally:
            log("stopping everything")
    keys = ("latency_seconds", "reached", "wall_seconds", "checks", "gauge_scrapes")
    summary = {k: result[k] for k in keys if k in result}
    summary["operator_memory_mib"] = {k: v for k, v in result["operator_memory_mib"].items()
                                      if k != "timeline"}
    summary["operator_cpu_seconds"] = result["operator_cpu_seconds"]
    summary["api_requests"] = {k: v for k, v in result["api_requests"].items()
                               if k.endswith(("per_resource", "per_minute", "non_watch",
                                              "total"))}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
