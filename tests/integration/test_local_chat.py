"""`LocalChat` on the real SmolLM2-135M-Instruct (HF dir from hack/smollm2.py, cached once
per machine), float32 on the CPU with one torch thread."""

from __future__ import annotations

import asyncio

import pytest
import torch

from mendel.llm import ChatError, LocalChat, Sampling
from mendel.llm.local import load_causal_lm

pytestmark = pytest.mark.slow

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
ADDITION = [{"role": "user", "content": "What is 2+3?"}]
STORY = [{"role": "user", "content": "Tell me a story about a dragon."}]


@pytest.fixture(scope="module")
def smollm2_lm(smollm2_hf_dir):
    # Two intra-op threads on a 2-core machine with a busy neighbour stall at every barrier.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_causal_lm(smollm2_hf_dir, "float32", "cpu")
    torch.set_num_threads(threads)


def run(lm, calls, max_batch=16):
    """Send (messages, sampling) pairs at once to a fresh LocalChat; return it and replies."""
    chat = LocalChat(lm.model, lm.tokenizer, max_batch=max_batch, name="smollm2")

    async def go():
        return await asyncio.gather(*(chat.chat(m, s) for m, s in calls))

    return chat, asyncio.run(go())


def test_local_chat_greedy_is_deterministic_and_batched(smollm2_lm):
    calls = [(FRANCE, Sampling(max_tokens=16)), (ADDITION, Sampling(max_tokens=16))]

    chat, first = run(smollm2_lm, calls)
    _, again = run(smollm2_lm, calls)

    assert first == again
    assert "Paris" in first[0].text and "5" in first[1].text
    assert [reply.finish_reason for reply in first] == ["stop", "stop"]
    assert chat.batches == 1


def test_local_chat_batches_concurrent_calls(smollm2_lm):
    calls = [([{"role": "user", "content": f"Name the number {n}."}], Sampling(max_tokens=6))
             for n in range(6)]

    chat, replies = run(smollm2_lm, calls, max_batch=4)

    assert len(replies) == 6 and all(reply.text for reply in replies)
    assert chat.batches == 2 < len(calls)


def test_local_chat_reports_length_and_counts_usage(smollm2_lm):
    tokenizer = smollm2_lm.tokenizer
    prompt = tokenizer.apply_chat_template(STORY, tokenize=False, add_generation_prompt=True)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])

    chat, (reply, short) = run(smollm2_lm, [(STORY, Sampling(max_tokens=5)),
                                             (ADDITION, Sampling(max_tokens=16))])

    assert reply.truncated and reply.completion_tokens == 5
    assert reply.prompt_tokens == prompt_tokens
    assert not short.truncated and 0 < short.completion_tokens < 16
    assert chat.usage.snapshot() == {
        "calls": 2, "retries": 0, "prompt_tokens": prompt_tokens + short.prompt_tokens,
        "completion_tokens": 5 + short.completion_tokens}


def test_local_chat_seeded_sampling_is_reproducible(smollm2_lm):
    calls = [(STORY, Sampling(temperature=1.0, max_tokens=10, seed=seed)) for seed in (1, 2, 1)]

    _, first = run(smollm2_lm, calls)
    _, again = run(smollm2_lm, calls)

    assert [reply.text for reply in first] == [reply.text for reply in again]
    assert first[0].text == first[2].text != first[1].text


def test_local_chat_ignores_schemas_and_refuses_tools(smollm2_lm):
    chat = LocalChat(smollm2_lm.model, smollm2_lm.tokenizer)
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]

    async def go():
        reply = await chat.chat(ADDITION, Sampling(max_tokens=8),
                                json_schema={"type": "object"})
        with pytest.raises(ChatError) as raised:
            await chat.chat(ADDITION, Sampling(), tools=tools)
        await chat.aclose()
        return reply, raised.value

    reply, error = asyncio.run(go())

    assert reply.text and error.reason == "client_error"
