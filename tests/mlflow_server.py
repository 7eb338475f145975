"""A real `mlflow server` for tests (loopback by default, or e.g. the real node's Pod
gateway so Pods reach it): sqlite store in a temp dir, one worker.

`MlflowServer(directory).start()` picks a free port (or reuses its own on restart), waits
for /health and records the pid; `stop()` ends that pid only. Stopping and starting again
on the same port is how the "MLflow down" tests take tracking away and give it back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["MlflowServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (bound and released)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """One mlflow server process, restartable on the same port."""

    def __init__(self, directory: Path, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).with_name("mlflow")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(mlflow), "server", "--host", self.host, "--port", str(self.port),
             "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
             "--artifacts-destination", str(self.directory / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.directory / 'server.log'}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # The server runs in its own session (uvicorn/gunicorn children): end that group.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.2)
