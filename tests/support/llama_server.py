"""SmolLM2-135M-Instruct for tests: the GGUF behind a real llama.cpp server, and an HF dir.

Both come from `hack/smollm2.py` (downloaded and converted once per machine, cached under
$MENDEL_CACHE_DIR or ~/.cache/mendel/models). The server is `hack/serve-llm.py` as a
subprocess with one thread on a free loopback port; tests get its OpenAI base URL.

Nothing here skips: a machine that cannot prepare the model or start the server fails the
test with the command that fixes it, so CI can never pass without the real-server tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.mlflow_server import free_port

__all__ = ["LlamaEndpoint", "llama_server", "smollm2", "smollm2_hf_dir"]

ROOT = Path(__file__).resolve().parents[2]
SERVED_NAME = "smollm2"


class LlamaEndpoint(NamedTuple):
    """A running server: `base_url` ('http://127.0.0.1:PORT/v1') and the served model name."""

    base_url: str
    model: str


def smollm2(*args: str) -> Path:
    """Run `hack/smollm2.py ARGS` and return the path it prints; fail the test if it cannot.

    Raises:
        pytest.fail.Exception: preparation failed (no network on first use, no gguf package).
    """
    command = [sys.executable, str(ROOT / "hack" / "smollm2.py"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"SmolLM2 is not prepared and preparing it failed; run "
                    f"`.venv/bin/python hack/smollm2.py {' '.join(args)}` once (it needs "
                    f"network the first time).\n{result.stderr[-3000:]}", pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])


def start_llama_server(gguf: Path, log_path: Path, *, slots: int = 4,
                       timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], LlamaEndpoint]:
    """Start hack/serve-llm.py on a free port and wait for /health.

    Raises:
        pytest.fail.Exception: the server exited or did not answer within `timeout`.
    """
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "hack" / "serve-llm.py"), "--model", str(gguf),
             "--port", str(port), "--threads", "1", "--slots", str(slots),
             "--alias", SERVED_NAME, "--lifetime-seconds", "3600"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = LlamaEndpoint(f"http://127.0.0.1:{port}/v1", SERVED_NAME)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _healthy(f"http://127.0.0.1:{port}/health"):
            return process, endpoint
        time.sleep(0.2)
    stop_llama_server(process)
    tail = log_path.read_text(errors="replace")[-3000:]
    pytest.fail(f"hack/serve-llm.py did not become healthy in {timeout:g} s (is xllamacpp "
                f"installed? `.venv/bin/pip install -e '.[dev]'`); its log:\n{tail}",
                pytrace=False)


def stop_llama_server(process: subprocess.Popen[bytes]) -> None:
    """End the server by its pid: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaEndpoint]:
    """A real llama.cpp server with SmolLM2-135M-Instruct (4 slots, one thread)."""
    gguf = smollm2("gguf")
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    process, endpoint = start_llama_server(gguf, log_path)
    try:
        yield endpoint
    finally:
        stop_llama_server(process)


@pytest.fixture(scope="session")
def smollm2_hf_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory (bfloat16 weights, made once)."""
    return smollm2("hf")
