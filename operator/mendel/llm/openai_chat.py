"""`OpenAIChat`: a `ChatBackend` for any OpenAI-compatible /chat/completions endpoint.

Training-Free GRPO sends thousands of small requests to vLLM, llama.cpp or a hosted API,
many at once. This backend bounds how many are in flight, gives every attempt a deadline,
and retries what is worth retrying; everything else fails at once with a `ChatError` whose
reason the engine counts:

    failure                                   retried   reason when retries are spent
    timeout (attempt deadline, HTTP 408)        yes     timeout
    connection refused/reset/dropped            yes     connection
    HTTP 429                                    yes     rate_limited
    HTTP 5xx                                    yes     server_error
    2xx whose body is not a completion          yes     bad_response
    any other HTTP status (400, 401, 404, ...)  no      client_error

Retries wait `backoff_seconds * 2**attempt`, capped at `max_backoff_seconds`, with jitter
(a uniform draw from the upper half of that window). A `Retry-After` header (seconds or an
HTTP date) replaces the computed wait, capped at `max_backoff_seconds` too, so a server
cannot park a run for an hour; if it still refuses, the next retry waits again, until
`max_retries` is spent. A reply cut by `max_tokens` is a reply (`finish_reason: length`),
not an error.

The API key travels only in the Authorization header of the underlying httpx client; it
is kept out of `repr`, logs and exception messages (any echo of it in a server's error
body is masked).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from mendel.llm.chat import ChatError, ChatReply, Message, Sampling, ToolCall, UsageMeter

__all__ = ["OpenAIChat"]

log = logging.getLogger(__name__)

_SNIPPET = 300
"""Characters of an error body quoted in a ChatError message."""


class _Failure(Exception):
    """One failed attempt: why, whether to try again, and a server-requested wait."""

    def __init__(self, reason: str, message: str, *, retry: bool,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


class OpenAIChat:
    """Chat completions over HTTP, safe to call from many tasks at once.

    Its connection pool and semaphore belong to the event loop of the first call: use one
    backend per loop, and `aclose()` it there.

    Args:
        base_url: The API root that /chat/completions hangs off, e.g.
            'http://vllm:8000/v1' or 'https://api.openai.com/v1'.
        model: The model name sent with every request.
        api_key: Sent as 'Authorization: Bearer ...'; never logged or shown.
        timeout_seconds: Deadline of one attempt, from sending to the parsed body.
        max_retries: Further attempts after the first one fails retryably.
        concurrency: Requests in flight at most (a semaphore; more callers wait).
        supports_json_schema: Send `json_schema` as response_format; when False the
            schema is dropped and callers parse tolerantly.
        name: For logs and metrics; defaults to the model name.
        backoff_seconds: First retry's wait before jitter; doubles per retry.
        max_backoff_seconds: Cap of any wait, `Retry-After` included.
        extra_body: Server-specific fields merged into every request body (e.g. llama.cpp's
            `repeat_penalty`); the per-call fields win on a clash.
        transport: An httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 600.0,
        max_retries: int = 3,
        concurrency: int = 32,
        supports_json_schema: bool = True,
        name: str | None = None,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, not {max_retries}")
        self.model = model
        self.name = name or model
        self.supports_json_schema = supports_json_schema
        self.usage = UsageMeter()
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.extra_body = dict(extra_body or {})
        self._url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
        self._secret = api_key or ""
        self._gate = asyncio.Semaphore(concurrency)
        self._random = random.Random()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=concurrency,
                                max_keepalive_connections=concurrency),
            transport=transport,
        )

    def __repr__(self) -> str:
        return (f"OpenAIChat(name={self.name!r}, model={self.model!r}, "
                f"url={str(self._url.copy_with(username=None, password=None))!r})")

    async def chat(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        *,
        json_schema: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ChatReply:
        """One completion (see `ChatBackend.chat`), retried as the module docstring says.

        Raises:
            ChatError: the call failed for good; `reason` as in the module's table.
        """
        body = self.request_body(messages, sampling, json_schema=json_schema, tools=tools)
        attempt = 0
        while True:
            try:
                reply = await self._attempt(body)
            except _Failure as failure:
                if not failure.retry or attempt >= self.max_retries:
                    self.usage.failures[failure.reason] += 1
                    raise ChatError(failure.reason, self._masked(
                        f"{self.name}: {failure} (attempt {attempt + 1} of "
                        f"{self.max_retries + 1})")) from None
                delay = self._delay(attempt, failure.retry_after)
                log.warning("%s: %s; retry %d of %d in %.2f s", self.name,
                            self._masked(str(failure)), attempt + 1, self.max_retries, delay)
                self.usage.retries += 1
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self.usage.add_reply(reply)
            return reply

    def request_body(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        *,
        json_schema: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The JSON body sent for one call (public so callers can log or inspect it)."""
        body: dict[str, Any] = {
            **self.extra_body,
            "model": self.model,
            "messages": [dict(message) for message in messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if json_schema is not None and self.supports_json_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": _schema_name(json_schema), "schema": dict(json_schema),
                "strict": True}}
        if tools:
            body["tools"] = [dict(tool) for tool in tools]
        return body

    async def aclose(self) -> None:
        """Close the connection pool; later calls fail."""
        await self._client.aclose()

    async def _attempt(self, body: dict[str, Any]) -> ChatReply:
        async with self._gate:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    response = await self._client.post(self._url, json=body)
            except (TimeoutError, httpx.TimeoutException):
                raise _Failure("timeout", f"no reply within {self.timeout_seconds:g} s "
                               f"(waited {time.monotonic() - started:.1f} s)", retry=True) from None
            except httpx.TransportError as error:
                raise _Failure("connection", f"{type(error).__name__}: {error}",
                               retry=True) from None
        return _reply_of(response)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        window = min(self.backoff_seconds * 2.0**attempt, self.max_backoff_seconds)
        return window * self._random.uniform(0.5, 1.0)

    def _masked(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _reply_of(response: httpx.Response) -> ChatReply:
    status = response.status_code
    if status == 429:
        raise _Failure("rate_limited", f"HTTP 429: {_snippet(response)}", retry=True,
                       retry_after=_retry_after(response.headers.get("retry-after")))
    if status == 408:
        raise _Failure("timeout", f"HTTP 408: {_snippet(response)}", retry=True)
    if status >= 500:
        raise _Failure("server_error", f"HTTP {status}: {_snippet(response)}", retry=True,
                       retry_after=_retry_after(response.headers.get("retry-after")))
    if status >= 300:
        raise _Failure("client_error", f"HTTP {status}: {_snippet(response)}", retry=False)
    try:
        return _parse_completion(response.json())
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise _Failure("bad_response", f"HTTP {status} body is not a chat completion "
                       f"({type(error).__name__}: {error}): {_snippet(response)}",
                       retry=True) from None


def _parse_completion(data: Any) -> ChatReply:
    choice = data["choices"][0]
    message = choice["message"]
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts, as some servers send them
        content = "".join(str(part.get("text", "")) for part in content)
    usage = data.get("usage") or {}
    calls = tuple(_tool_call(call) for call in message.get("tool_calls") or ())
    return ChatReply(
        text=str(content),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        tool_calls=calls,
    )


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    function = call["function"]
    arguments = function.get("arguments")
    if not isinstance(arguments, str):  # some servers send an object, not JSON text
        arguments = json.dumps(arguments if arguments is not None else {})
    return ToolCall(id=str(call.get("id") or ""), name=str(function["name"]),
                    arguments=arguments)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _schema_name(schema: Mapping[str, Any]) -> str:
    # OpenAI requires ^[a-zA-Z0-9_-]{1,64}$; use the schema's title where it has one.
    title = re.sub(r"[^a-zA-Z0-9_-]+", "_", str(schema.get("title") or "reply"))
    return title.strip("_")[:64] or "reply"


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "") if text else "(empty body)"
