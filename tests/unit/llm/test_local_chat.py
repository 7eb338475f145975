"""`LocalChat` on a tiny random Llama: batching, per-row sampling, refusals. The real
SmolLM2 runs in tests/integration/test_local_chat.py."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tests.unit.llm.tiny import tiny_llama, tiny_tokenizer

from mendel.llm import ChatBackend, ChatError, LocalChat, Sampling
from mendel.llm.local_chat import RowSampler

TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
QUESTIONS = ["def add(a, b):", "what is 2 + 3?", "the quick brown fox", "x"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two intra-op threads on a 2-core machine with a busy neighbour stall at every barrier.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def chat():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    return LocalChat(tiny_llama(len(tokenizer)), tokenizer, max_batch=8)


def ask(text):
    return [{"role": "user", "content": text}]


def gather(chat, samplings, questions=QUESTIONS):
    async def go():
        return await asyncio.gather(*(chat.chat(ask(question), sampling)
                                      for question, sampling in zip(questions, samplings,
                                                                    strict=True)))

    return asyncio.run(go())


def test_local_chat_satisfies_protocol(chat):
    assert isinstance(chat, ChatBackend) and chat.supports_json_schema is False


def test_row_sampler_leaves_greedy_rows_and_draws_one_token_for_the_others():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    settings = [Sampling(temperature=0.0), Sampling(temperature=1.0), Sampling(temperature=1.0)]

    chosen = RowSampler(settings, [5, 7, 7], torch.device("cpu"))(None, scores)

    assert torch.equal(chosen[0], scores[0])
    assert [int(torch.isfinite(row).sum()) for row in chosen[1:]] == [1, 1]
    assert torch.equal(chosen[1], chosen[2]) or not torch.equal(scores[1], scores[2])


def test_row_sampler_repeats_a_seed_and_tiny_top_p_is_greedy():
    scores = torch.randn(1, 50, generator=torch.Generator().manual_seed(1))
    draws = []
    for _ in range(2):
        sampler = RowSampler([Sampling(temperature=1.5)], [42], torch.device("cpu"))
        draws.append([int(sampler(None, scores).argmax()) for _ in range(20)])
    narrow = [Sampling(temperature=1.5, top_p=1e-6), Sampling(temperature=1.5, top_p=0.0)]
    nucleus = RowSampler(narrow, [3, 4], torch.device("cpu"))

    assert draws[0] == draws[1] and len(set(draws[0])) > 1
    assert nucleus(None, scores.repeat(2, 1)).argmax(-1).tolist() == [int(scores.argmax())] * 2


def test_local_chat_batches_concurrent_calls(chat):
    replies = gather(chat, [Sampling(max_tokens=6)] * 4)

    assert chat.batches == 1
    assert len(replies) == 4 and chat.usage.calls == 4
    assert chat.usage.prompt_tokens == sum(reply.prompt_tokens for reply in replies) > 0


def test_local_chat_splits_batches_at_max_batch(chat):
    chat.max_batch = 3

    gather(chat, [Sampling(max_tokens=4)] * 4)

    assert chat.batches == 2


def test_local_chat_greedy_rows_ignore_sampled_neighbours(chat):
    alone = gather(chat, [Sampling(max_tokens=8)], QUESTIONS[:1])[0]
    mixed = gather(chat, [Sampling(max_tokens=8)] + [Sampling(temperature=1.0, seed=3)] * 3)

    assert mixed[0] == alone


def test_local_chat_same_seed_same_text_in_one_batch(chat):
    sampled = [Sampling(temperature=1.0, max_tokens=10, seed=seed) for seed in (1, 2, 1)]

    replies = gather(chat, sampled, [QUESTIONS[1]] * 3)

    assert replies[0].text == replies[2].text
    assert replies[0].text != replies[1].text


def test_local_chat_cuts_each_row_at_its_own_budget(chat):
    budgets = [Sampling(max_tokens=2), Sampling(max_tokens=9)]

    short, long = gather(chat, budgets, QUESTIONS[:2])

    assert chat.batches == 1
    assert short.completion_tokens <= 2 and long.completion_tokens <= 9
    assert short.truncated or short.finish_reason == "stop"


def test_local_chat_refuses_tools(chat):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(ChatError) as raised:
        asyncio.run(chat.chat(ask("hi"), Sampling(), tools=tools))

    assert raised.value.reason == "client_error" and "tool" in str(raised.value)
    assert chat.usage.failures == {"client_error": 1}


def test_local_chat_is_unusable_after_close(chat):
    asyncio.run(chat.chat(ask("hi"), Sampling(max_tokens=2)))
    asyncio.run(chat.aclose())

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(chat.chat(ask("hi"), Sampling(max_tokens=2)))
