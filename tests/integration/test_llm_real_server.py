"""`OpenAIChat` against a real OpenAI-compatible server: llama.cpp (xllamacpp) serving
SmolLM2-135M-Instruct with one thread and four slots (tests/support/llama_server.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema

from mendel.llm import OpenAIChat, Sampling

ADDITION = [{"role": "user", "content": "What is 2+3?"}]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]


def run_chat(endpoint, work, **options):
    """Run `await work(chat)` on a fresh backend for `endpoint` and close it."""

    async def go():
        chat = OpenAIChat(endpoint.base_url, endpoint.model, timeout_seconds=60, **options)
        try:
            return await work(chat), chat
        finally:
            await chat.aclose()

    return asyncio.run(go())


def test_real_server_answers_a_plain_question(llama_server):
    reply, chat = run_chat(llama_server,
                           lambda chat: chat.chat(ADDITION, Sampling(max_tokens=24)))

    assert "5" in reply.text and reply.finish_reason == "stop"
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert chat.usage.snapshot() == {"calls": 1, "prompt_tokens": reply.prompt_tokens,
                                     "completion_tokens": reply.completion_tokens, "retries": 0}


def test_real_server_seeds_reproduce_sampled_texts(llama_server):
    seeds = [1, 2, 3]

    async def work(chat):
        texts = {}
        for seed in seeds + seeds:
            sampling = Sampling(temperature=1.0, max_tokens=16, seed=seed)
            texts.setdefault(seed, []).append((await chat.chat(STORY, sampling)).text)
        return texts

    texts, _ = run_chat(llama_server, work)

    assert all(first == again for first, again in texts.values()), texts
    assert len({first for first, _ in texts.values()}) >= 2, texts


def test_real_server_enforces_the_json_schema(llama_server):
    schema = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
              "properties": {"name": {"type": "string", "maxLength": 20},
                             "age": {"type": "integer", "minimum": 0, "maximum": 120}}}
    question = [{"role": "user", "content": "Invent a person. Give their name and age."}]

    async def work(chat):
        return [await chat.chat(question, Sampling(temperature=0.8, max_tokens=60, seed=seed),
                                json_schema=schema) for seed in (1, 2)]

    replies, _ = run_chat(llama_server, work)

    for reply in replies:
        assert not reply.truncated, reply
        jsonschema.validate(json.loads(reply.text), schema)


def test_real_server_reports_length_as_truncation(llama_server):
    reply, chat = run_chat(llama_server, lambda chat: chat.chat(STORY, Sampling(max_tokens=4)))

    assert reply.truncated and reply.finish_reason == "length"
    assert reply.completion_tokens == 4
    assert chat.usage.calls == 1 and not chat.usage.failures


class CountingTransport(httpx.AsyncBaseTransport):
    """The real transport, counting the requests it has in flight."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.in_flight = self.max_in_flight = 0

    async def handle_async_request(self, request):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self):
        await self.inner.aclose()


def test_real_server_answers_concurrent_requests(llama_server):
    transport = CountingTransport()
    questions = [[{"role": "user", "content": f"What is {n} plus {n}?"}] for n in range(8)]

    async def work(chat):
        return await asyncio.gather(*(chat.chat(q, Sampling(max_tokens=12)) for q in questions))

    replies, chat = run_chat(llama_server, work, concurrency=4, transport=transport)

    assert all(reply.text for reply in replies)
    assert transport.max_in_flight == 4
    assert chat.usage.calls == 8 and chat.usage.completion_tokens > 0
    assert chat.usage.retries == 0 and not chat.usage.failures
