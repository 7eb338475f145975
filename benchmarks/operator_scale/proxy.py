"""A counting reverse proxy in front of the kube-apiserver, for the operator only.

The 1.20 apiserver's `apiserver_request_total` has no client label, so the operator's own
requests cannot be told apart there. The benchmark therefore gives the operator a
kubeconfig that points at this proxy (plain HTTP on loopback), which forwards every request
to the apiserver (HTTPS, the operator's own bearer token passed through) and counts it by
verb and resource. Responses are streamed, so watches work unchanged.

    python proxy.py --upstream https://127.0.0.1:6443 --port 0 --port-file FILE

`GET /_proxy/counts` answers the counts so far as JSON:
    {"requests": {"LIST jobs": 3, "WATCH jobs": 2, "PATCH qdevolutions/status": 300, ...},
     "user_agents": {"kopf/1.45.2": 900, "OpenAPI-Generator/...": 600}, "total": 1500}
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
# Forward the client's headers as they are: aiohttp would otherwise add its own
# Content-Type (application/octet-stream, which the apiserver refuses with 415 where the
# Python client sent none), Accept-Encoding and User-Agent.
_NO_AUTO = ("Content-Type", "Accept-Encoding", "User-Agent")


def classify(method: str, path: str, query: dict[str, str]) -> str:
    """'VERB resource[/subresource]' for an apiserver request path.

    LIST and GET are told apart by a name in the path, WATCH by `watch=true` (or the
    legacy /watch/ prefix); discovery and /version count under their path.
    """
    parts = [p for p in path.split("/") if p]
    watch = query.get("watch") in ("true", "1")
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return f"{method} /{'/'.join(parts[:1])}"
    if rest[:1] == ["watch"]:
        watch, rest = True, rest[1:]
    if not rest:
        return f"{method} (discovery)"
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # namespaced: drop namespaces/<ns>
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"GET": "WATCH" if watch else ("GET" if named else "LIST"), "POST": "CREATE",
            "PUT": "UPDATE", "PATCH": "PATCH",
            "DELETE": "DELETE" if named else "DELETECOLLECTION"}.get(method, method)
    return f"{verb} {resource}"


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: collections.Counter[str] = collections.Counter()
        self.agents: collections.Counter[str] = collections.Counter()
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(ssl=False, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def counts(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": dict(self.requests),
                                  "user_agents": dict(self.agents),
                                  "total": sum(self.requests.values())})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        self.requests[classify(request.method, request.path, dict(request.query))] += 1
        self.agents[request.headers.get("User-Agent", "-").split(" ")[0]] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self.session.request(request.method, self.upstream + request.path_qs,
                                        headers=headers, data=body or None,
                                        allow_redirects=False,
                                        skip_auto_headers=_NO_AUTO) as answer:
            out = web.StreamResponse(status=answer.status, reason=answer.reason)
            for key, value in answer.headers.items():
                if key.lower() not in _HOP:
                    out.headers.add(key, value)
            if answer.content_length is not None:
                out.content_length = answer.content_length
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out


async def main(upstream: str, port: int, port_file: Path | None) -> None:
    proxy = CountingProxy(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.close)
    app.router.add_get("/_proxy/counts", proxy.counts)
    app.router.add_route("*", "/{tail:.*}", proxy.forward)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                           shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if port_file is not None:
        port_file.write_text(str(bound))
    print(f"proxy on http://127.0.0.1:{bound} -> {upstream}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args()
    asyncio.run(main(args.upstream, args.port, args.port_file))
