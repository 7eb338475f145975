"""Serve a GGUF over the OpenAI chat-completions API with llama.cpp's own server (xllamacpp).

xllamacpp is a prebuilt wheel of llama.cpp's HTTP server (no compiler, no dependencies), so
tests and benchmarks get a real OpenAI-compatible endpoint in about a second:

    python hack/serve-llm.py --model "$(python hack/smollm2.py gguf)" --port 8081

It prints one line, the base URL (http://HOST:PORT/v1), once /health answers, then serves in
the foreground until SIGTERM/SIGINT or until --lifetime-seconds have passed, so a crashed
test run cannot leave a server behind. Keep --threads at 1 on small machines: llama.cpp's
worker threads spin at barriers, and with every core taken one busy neighbour process makes
decoding 30x slower.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="path of the .gguf file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--slots", type=int, default=4,
                        help="requests decoded in parallel (more are queued, not refused)")
    parser.add_argument("--ctx", type=int, default=4096,
                        help="context tokens shared by all slots")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--alias", default="smollm2", help="model name the API reports")
    parser.add_argument("--lifetime-seconds", type=float, default=3600.0,
                        help="exit after this long even if nobody stops the server")
    parser.add_argument("--health-timeout", type=float, default=60.0)
    return parser.parse_args(argv)


def start_server(args: argparse.Namespace) -> object:
    """Start llama.cpp's server in this process (it runs in background threads)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.slots
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.model_alias = [args.alias]
    return xllamacpp.Server(params)


def wait_healthy(base: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"serve-llm: no model file at {args.model}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = start_server(args)
    base = f"http://{args.host}:{args.port}"
    if not wait_healthy(base, args.health_timeout):
        print(f"serve-llm: {base}/health did not answer in {args.health_timeout} s",
              file=sys.stderr)
        return 1
    print(f"{base}/v1", flush=True)
    stop.wait(args.lifetime_seconds)
    del server
    sys.stdout.flush()
    # llama.cpp's server threads are not daemon threads and have no stop call: leave at once.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
