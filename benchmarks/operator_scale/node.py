"""The benchmark's stand-in node: tests/cluster/kubelet_standin.py in a process of its own.

It registers one Node with the given capacity, runs the Pods bound to it as local processes
and prints the Node's name on its first stdout line. SIGTERM/SIGINT kill every Pod process
and delete the Node.

Worker modes (what `mendel worker` is mapped to):
- `sleep` (default): a shell that checks the spec snapshot was mounted and sleeps
  FAKE_STEPS x FAKE_STEP_SECONDS. About 1 MB and no CPU per Pod, so 300 of them cost nothing
  on a 2-core machine; no MLflow traffic from the workers.
- `fake`: tests/cluster/fake_worker.py (Python; logs progress to MLflow). Heavy: each imports
  the MLflow client (~1-2 CPU-seconds, ~100 MB): fine for tens of Pods, not for 300 on 2 cores.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402
from tests.cluster.kubelet_standin import KubeletStandIn  # noqa: E402

SLEEP_WORKER = [
    "sh", "-c",
    'test -s "$MENDEL_SPEC_PATH" || { echo "no spec snapshot" >&2; exit 3; }; '
    'exec sleep "$(awk -v n="${FAKE_STEPS:-3}" -v s="${FAKE_STEP_SECONDS:-0.5}" '
    "'BEGIN { print n * s }')\"",
    "mendel",  # $0; the Pod's own args ("worker", ...) follow as $1...
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--worker", choices=("sleep", "fake"), default="sleep")
    parser.add_argument("--capacity", action="append", default=[],
                        help="resource=quantity (repeatable)")
    args = parser.parse_args()

    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 32  # one thread per Pod start; avoid pool churn
    api = client.ApiClient(cfg)
    capacity = dict(item.split("=", 1) for item in args.capacity)
    if args.worker == "sleep":
        command = SLEEP_WORKER
    else:
        command = [sys.executable, str(REPO / "tests" / "cluster" / "fake_worker.py")]
    node = KubeletStandIn(api, capacity=capacity, commands={"mendel": command},
                          env={"PYTHONPATH": str(REPO / "operator")}, workdir=args.workdir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    print(node.name, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
