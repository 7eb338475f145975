"""`OpenAIChat` against a real loopback HTTP server whose every answer the test scripts."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import subprocess
import sys
import threading
import time

import pytest
from tests.mlflow_server import free_port
from tests.support.chat_server import Reply, ScriptedChatServer, replies_in_order

import mendel.llm
from mendel.llm import ChatBackend, ChatError, OpenAIChat, Sampling, ToolCall
from mendel.llm.openai_chat import _retry_after

HELLO = [{"role": "user", "content": "say hello to the world"}]
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05}
SECRET = "sk-test-0123456789abcdef"


SHORT = Sampling(max_tokens=16)


def call(server, messages=HELLO, sampling=SHORT, **options):
    """Run one chat call on a fresh backend; return (reply or ChatError, backend)."""

    async def go():
        chat = OpenAIChat(server.base_url, "scripted", **{**FAST, **options})
        try:
            return await chat.chat(messages, sampling), chat
        except ChatError as error:
            return error, chat
        finally:
            await chat.aclose()

    return asyncio.run(go())


def arrival_times(script):
    """Wrap a script so it also records when each request arrived."""
    times = []

    def timed(request):
        times.append(time.monotonic())
        return script(request)

    return timed, times


def test_importing_mendel_llm_loads_neither_httpx_nor_torch():
    code = ("import sys, mendel.llm; heavy = {'httpx', 'torch', 'transformers'} & "
            "set(sys.modules); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stderr
    assert {"OpenAIChat", "LocalChat", "load_local_chat"} <= set(mendel.llm.__all__)


def test_openai_chat_satisfies_protocol():
    chat = OpenAIChat("http://127.0.0.1:1/v1", "m")
    assert isinstance(chat, ChatBackend)
    asyncio.run(chat.aclose())


def test_openai_chat_returns_completion_and_counts_usage():
    script = lambda request: Reply("hello world", prompt_tokens=11, completion_tokens=2)  # noqa: E731
    with ScriptedChatServer(script) as server:
        reply, chat = call(server, sampling=Sampling(temperature=0.7, top_p=0.9, max_tokens=16))

    assert (reply.text, reply.finish_reason, reply.truncated) == ("hello world", "stop", False)
    assert (reply.prompt_tokens, reply.completion_tokens) == (11, 2)
    assert chat.usage.snapshot() == {"calls": 1, "prompt_tokens": 11, "completion_tokens": 2,
                                     "retries": 0}
    body = server.requests[0]
    assert body == {"model": "scripted", "messages": HELLO, "temperature": 0.7, "top_p": 0.9,
                    "max_tokens": 16}


def test_openai_chat_sends_seed_schema_and_tools():
    schema = {"title": "Edit plan!", "type": "object",
              "properties": {"op": {"type": "string", "maxLength": 10}}}
    tools = [{"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]

    async def go(server):
        chat = OpenAIChat(server.base_url, "scripted", extra_body={"repeat_penalty": 1.3})
        await chat.chat(HELLO, Sampling(seed=7), json_schema=schema, tools=tools)
        await chat.aclose()

    with ScriptedChatServer(lambda request: "{}") as server:
        asyncio.run(go(server))

    body = server.requests[0]
    assert body["seed"] == 7
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "Edit_plan", "schema": schema, "strict": True}}
    assert body["tools"] == tools
    assert body["repeat_penalty"] == 1.3


def test_openai_chat_drops_schema_when_unsupported():
    with ScriptedChatServer(lambda request: "{}") as server:
        async def go():
            chat = OpenAIChat(server.base_url, "m", supports_json_schema=False)
            await chat.chat(HELLO, Sampling(), json_schema={"type": "object"})
            await chat.aclose()

        asyncio.run(go())

    assert "response_format" not in server.requests[0]
    assert "seed" not in server.requests[0]


def test_openai_chat_parses_tool_calls():
    reply = Reply(tool_calls=[{"id": "c1", "name": "search", "arguments": {"q": "paris"}},
                              {"name": "stop", "arguments": "not json"}])
    with ScriptedChatServer(lambda request: reply) as server:
        answer, _ = call(server)

    assert answer.text == ""
    assert answer.finish_reason == "tool_calls"
    assert answer.tool_calls == (ToolCall("c1", "search", '{"q": "paris"}'),
                                 ToolCall("call_1", "stop", "not json"))


def test_openai_chat_length_is_a_truncated_reply_not_an_error():
    with ScriptedChatServer(lambda request: Reply("cut sho", finish_reason="length")) as server:
        reply, chat = call(server)

    assert reply.truncated and reply.text == "cut sho"
    assert server.count == 1 and chat.usage.calls == 1 and not chat.usage.failures


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(Reply.http(429), id="429"),
        pytest.param(Reply.http(500), id="500"),
        pytest.param(Reply.http(503, retry_after=0), id="503"),
        pytest.param(Reply.garbage(), id="garbage-body"),
        pytest.param(Reply.garbage(json.dumps({"object": "chat.completion"})), id="no-choices"),
        pytest.param(Reply(drop=True), id="dropped-connection"),
        pytest.param(Reply("late", delay=2.0), id="timeout"),
    ],
)
def test_openai_chat_retries_transient_failures(first):
    with ScriptedChatServer(replies_in_order(first, "fine")) as server:
        reply, chat = call(server, timeout_seconds=0.5)

    assert reply.text == "fine"
    assert server.count == 2
    assert chat.usage.retries == 1 and chat.usage.calls == 1 and not chat.usage.failures


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(Reply.http(429), "rate_limited", id="429"),
        pytest.param(Reply.http(502), "server_error", id="502"),
        pytest.param(Reply.garbage(), "bad_response", id="garbage-body"),
        pytest.param(Reply(drop=True), "connection", id="dropped-connection"),
        pytest.param(Reply("late", delay=2.0), "timeout", id="timeout"),
    ],
)
def test_openai_chat_fails_after_max_retries(answer, reason):
    with ScriptedChatServer(lambda request: answer) as server:
        error, chat = call(server, max_retries=2, timeout_seconds=0.3)

    assert isinstance(error, ChatError) and error.reason == reason
    assert "attempt 3 of 3" in str(error)
    assert server.count == 3
    assert chat.usage.retries == 2 and chat.usage.calls == 0
    assert chat.usage.failures == {reason: 1}
    assert chat.usage.snapshot()[f"failures/{reason}"] == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_openai_chat_does_not_retry_client_errors(status):
    with ScriptedChatServer(lambda request: Reply.http(status, body="no such model")) as server:
        error, chat = call(server)

    assert isinstance(error, ChatError) and error.reason == "client_error"
    assert f"HTTP {status}" in str(error) and "no such model" in str(error)
    assert server.count == 1 and chat.usage.retries == 0
    assert chat.usage.failures == {"client_error": 1}


def test_openai_chat_connection_refused_is_a_connection_failure():
    class Nobody:  # nothing listens on this port
        base_url = f"http://127.0.0.1:{free_port()}/v1"

    error, chat = call(Nobody, max_retries=1)

    assert isinstance(error, ChatError) and error.reason == "connection"
    assert chat.usage.retries == 1 and chat.usage.failures == {"connection": 1}


def test_openai_chat_honours_retry_after_seconds():
    script, times = arrival_times(replies_in_order(Reply.http(429, retry_after=1), "ok"))
    with ScriptedChatServer(script) as server:
        reply, _ = call(server, backoff_seconds=0.01, max_backoff_seconds=30)

    assert reply.text == "ok" and server.count == 2
    assert 0.95 <= times[1] - times[0] < 1.6


def test_openai_chat_honours_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1-2 s away
    script, times = arrival_times(replies_in_order(Reply.http(503, retry_after=when), "ok"))
    with ScriptedChatServer(script) as server:
        reply, _ = call(server, backoff_seconds=0.01, max_backoff_seconds=30)

    assert reply.text == "ok"
    assert 0.9 <= times[1] - times[0] < 2.6


def test_openai_chat_caps_retry_after():
    script, times = arrival_times(replies_in_order(Reply.http(429, retry_after=3600), "ok"))
    with ScriptedChatServer(script) as server:
        reply, _ = call(server, backoff_seconds=0.01, max_backoff_seconds=0.2)

    assert reply.text == "ok"
    assert 0.19 <= times[1] - times[0] < 0.8


def test_openai_chat_backs_off_exponentially_with_jitter():
    script, times = arrival_times(lambda request: Reply.http(500))
    with ScriptedChatServer(script) as server:
        error, _ = call(server, max_retries=3, backoff_seconds=0.1, max_backoff_seconds=10)

    assert error.reason == "server_error" and server.count == 4
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    for retry, gap in enumerate(gaps):
        window = 0.1 * 2**retry
        assert window / 2 - 0.01 <= gap < window + 0.3, (retry, gaps)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        pytest.param("3", 3.0, 3.0, id="seconds"),
        pytest.param("0.5", 0.5, 0.5, id="fraction"),
        pytest.param("-4", 0.0, 0.0, id="negative"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, 0.0, id="date-in-the-past"),
    ],
)
def test_retry_after_parsing(value, low, high):
    assert low <= _retry_after(value) <= high


@pytest.mark.parametrize("value", [None, "", "soon", "Someday, 99 Foo 20 GMT"])
def test_retry_after_unreadable_is_ignored(value):
    assert _retry_after(value) is None


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_openai_chat_keeps_at_most_concurrency_requests_in_flight(concurrency):
    calls = 3 * concurrency
    # Each request waits until `concurrency` of them are in the server at once, so the
    # maximum is reached for sure; had the client let more through, it would show.
    barrier = threading.Barrier(concurrency, timeout=10)

    def script(request):
        barrier.wait()
        return "ok"

    async def go(server):
        chat = OpenAIChat(server.base_url, "m", concurrency=concurrency, max_retries=0)
        replies = await asyncio.gather(*(chat.chat(HELLO, Sampling()) for _ in range(calls)))
        await chat.aclose()
        return replies

    with ScriptedChatServer(script) as server:
        replies = asyncio.run(go(server))

    assert [reply.text for reply in replies] == ["ok"] * calls
    assert server.count == calls
    assert server.max_in_flight == concurrency


def test_openai_chat_never_reveals_the_api_key(caplog):
    caplog.set_level(logging.DEBUG)
    echo = f"invalid api key {SECRET}"
    script = replies_in_order(Reply.http(503, body=echo), Reply.http(401, body=echo))
    with ScriptedChatServer(script) as server:
        async def go():
            chat = OpenAIChat(server.base_url, "m", api_key=SECRET, **FAST)
            with pytest.raises(ChatError) as raised:
                await chat.chat(HELLO, Sampling())
            await chat.aclose()
            return chat, raised.value

        chat, error = asyncio.run(go())

    assert server.request_headers[0]["authorization"] == f"Bearer {SECRET}"
    assert error.reason == "client_error" and "invalid api key ***" in str(error)
    assert "retry 1 of 3" in caplog.text
    shown = [repr(chat), str(chat), str(error), repr(error), caplog.text,
             str(chat.usage.snapshot()), str(vars(chat).get("_client"))]
    assert not [text for text in shown if SECRET in text]


def test_openai_chat_repr_hides_url_credentials():
    chat = OpenAIChat("http://user:pw@127.0.0.1:1/v1", "m", name="agent")

    assert "pw" not in repr(chat) and "agent" in repr(chat)
    asyncio.run(chat.aclose())
