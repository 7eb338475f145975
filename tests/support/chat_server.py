"""A real HTTP server that speaks OpenAI chat completions and answers from a Python script.

Real LLM servers never return 429 or garbage on demand, so retry, timeout and concurrency
tests need a server whose every answer is chosen by the test. `ScriptedChatServer` is a
stdlib `ThreadingHTTPServer` on a loopback port (a real socket, real HTTP/1.1 keep-alive),
so the client under test runs unchanged. The script maps each request body to a `Reply`:

    def script(request: dict) -> Reply | str:
        if "weather" in request["messages"][-1]["content"]:
            return Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
        return "plain text answer"

    with ScriptedChatServer(script) as server:
        chat = OpenAIChat(server.base_url, "scripted")
        ...
        assert server.count == 1 and server.max_in_flight == 1

`replies_in_order(Reply.http(503), "ok")` scripts a sequence (the last one repeats).
A script that raises makes the server answer 500 and re-raises on leaving the `with`.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Reply", "ScriptedChatServer", "replies_in_order"]


@dataclass(frozen=True)
class Reply:
    """How the server answers one request.

    Attributes:
        text: The assistant message's content.
        finish_reason: Defaults to 'tool_calls' when there are tool calls, else 'stop'.
        prompt_tokens, completion_tokens: Reported usage; by default the number of
            whitespace-separated words in the request's messages and in `text`.
        tool_calls: {'name': ..., 'arguments': dict or JSON text, 'id': optional} each.
        status: HTTP status; anything but 200 sends `body` (or a small JSON error).
        headers: Extra response headers, e.g. {'Retry-After': '1'}.
        body: Raw body sent instead of a completion (garbage, a wrong shape, ...).
        delay: Seconds to wait before answering (cut short when the server closes).
        drop: Close the connection without answering.
    """

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: Sequence[Mapping[str, Any]] = ()
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | bytes | None = None
    delay: float = 0.0
    drop: bool = False

    @classmethod
    def http(cls, status: int, *, retry_after: str | float | None = None,
             body: str | None = None) -> Reply:
        """An HTTP error answer, optionally with a Retry-After header."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return cls(status=status, headers=headers, body=body)

    @classmethod
    def garbage(cls, body: str = "<html>not json</html>") -> Reply:
        """A 200 whose body is not a chat completion."""
        return cls(body=body)


Script = Callable[[dict[str, Any]], "Reply | str"]


def replies_in_order(*replies: Reply | str) -> Script:
    """A script answering the n-th request with the n-th reply; the last one repeats."""
    if not replies:
        raise ValueError("replies_in_order needs at least one reply")
    counter = itertools.count()
    lock = threading.Lock()

    def script(_: dict[str, Any]) -> Reply | str:
        with lock:
            index = next(counter)
        return replies[min(index, len(replies) - 1)]

    return script


class ScriptedChatServer:
    """An OpenAI-compatible chat server on 127.0.0.1 answering from `script`.

    Attributes:
        requests: The JSON bodies received, in arrival order.
        request_headers: Their headers (lower-case names), same order.
        max_in_flight: The most requests being answered at the same moment.
    """

    def __init__(self, script: Script, *, model: str = "scripted") -> None:
        self.script = script
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.max_in_flight = 0
        self.script_errors: list[BaseException] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        """The API root, e.g. 'http://127.0.0.1:PORT/v1'."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        """Chat-completion requests received so far."""
        with self._lock:
            return len(self.requests)

    def start(self) -> ScriptedChatServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (pending delays end at once); re-raise the script's first error."""
        self._stop()
        if self.script_errors:
            raise RuntimeError("the chat server's script raised") from self.script_errors[0]

    def __enter__(self) -> ScriptedChatServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the test's own error is the one to see
            self._stop()

    def _stop(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _begin(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _answer(self, body: dict[str, Any]) -> Reply:
        try:
            answer = self.script(body)
        except Exception as error:  # reported at close(); the client sees a 500
            self.script_errors.append(error)
            return Reply.http(500, body=f"script raised {type(error).__name__}: {error}")
        return Reply(text=answer) if isinstance(answer, str) else answer

    def completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        """The chat.completion JSON the server sends for `reply` to request `body`."""
        calls = [_tool_call(call, index) for index, call in enumerate(reply.tool_calls)]
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if calls:  # as OpenAI sends it: no content, only the calls
            message.update(content=reply.text or None, tool_calls=calls)
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        completion = reply.completion_tokens
        if completion is None:
            completion = len(reply.text.split())
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": reply.finish_reason
                         or ("tool_calls" if calls else "stop")}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }


def _tool_call(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": str(call.get("id", f"call_{index}")), "type": "function",
            "function": {"name": call["name"], "arguments": arguments}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connect at once; the default backlog is 5
    owner: ScriptedChatServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts) leave broken pipes behind: not worth a traceback.
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model = self.server.owner.model
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": model, "object": "model", "owned_by": "tests"}]}))
        elif self.path.rstrip("/") == "/health":
            self._send(200, json.dumps({"status": "ok"}))
        else:
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, json.dumps({"error": {"message": "body is not JSON"}}))
            return
        owner = self.server.owner
        owner._begin(body, {name.lower(): value for name, value in self.headers.items()})
        try:
            self._reply(owner, body, owner._answer(body))
        finally:
            owner._end()

    def _reply(self, owner: ScriptedChatServer, body: dict[str, Any], reply: Reply) -> None:
        if reply.delay and owner._closing.wait(reply.delay):
            self.close_connection = True
            return
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.body is not None:
            payload = reply.body
        elif reply.status != 200:
            payload = json.dumps({"error": {"message": f"scripted HTTP {reply.status}",
                                            "code": reply.status}})
        else:
            payload = json.dumps(owner.completion(body, reply))
        self._send(reply.status, payload, reply.headers)

    def _send(self, status: int, payload: str | bytes,
              headers: Mapping[str, str] | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away (it timed out): nothing to answer
            self.close_connection = True
