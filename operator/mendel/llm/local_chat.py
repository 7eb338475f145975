"""`LocalChat`: a `ChatBackend` over a transformers causal LM resident in this process.

For a laptop or a single-GPU driver Pod there is no server to call: the agent is a model in
memory. Training-Free GRPO fires many chat calls at once (a group of rollouts per
question), and one batched generate() costs little more than one row, so concurrent
`chat()` calls are queued and a single worker task drains the queue into one batch, runs
it in a thread (the event loop keeps serving), and hands each caller its row.

Sampling is done per row by a logits processor with its own seeded `torch.Generator`, on
top of `LocalCausalLM.generate_ids` (greedy over the processed scores). So one batch can mix
temperatures, top_p values and budgets, and what is reproducible is:

* temperature 0 is greedy: the same prompt gives the same text;
* a call with `Sampling.seed` draws from a generator seeded with it, so the same seed,
  prompt and sampling give the same text whatever else shares the batch, up to
  floating-point differences that padding a row in a larger batch can introduce (rare,
  but a near-tie can then flip one token);
* a call without a seed draws a fresh seed and is not reproducible.

The tokenizer's chat template renders the messages. JSON schemas are not enforced
(`supports_json_schema` is False) and tools are refused with a `ChatError`.

On a small, shared CPU machine give torch one intra-op thread (`torch.set_num_threads(1)`
or OMP_NUM_THREADS=1): with two threads on two busy cores, every parallel region waits for a
descheduled thread and a 3 s batch was measured taking 30-100 s.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mendel.llm.chat import ChatError, ChatReply, Message, Sampling, UsageMeter
from mendel.llm.local import LocalCausalLM, load_causal_lm

__all__ = ["LocalChat", "load_local_chat"]


@dataclass
class _Call:
    prompt: list[int]
    sampling: Sampling
    seed: int
    reply: asyncio.Future[ChatReply] = field(repr=False)


class RowSampler:
    """A logits processor that samples each row's next token with that row's own settings.

    Rows with temperature 0 keep their scores (greedy picks the maximum); the others get
    temperature, then nucleus (top_p) filtering, then one draw from their own generator,
    and come back as scores with only the drawn token finite, which greedy then takes.
    """

    def __init__(self, settings: Sequence[Sampling], seeds: Sequence[int],
                 device: torch.device) -> None:
        self.settings = list(settings)
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        chosen = scores.clone()
        for row, (setting, generator) in enumerate(zip(self.settings, self.generators,
                                                       strict=True)):
            if setting.temperature <= 0:
                continue
            token = _draw(scores[row], setting.temperature, setting.top_p, generator)
            chosen[row].fill_(float("-inf"))
            chosen[row, token] = 0.0
        return chosen


def _draw(scores: torch.Tensor, temperature: float, top_p: float,
          generator: torch.Generator) -> int:
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        before = torch.cumsum(ordered, dim=-1) - ordered
        keep = before < top_p
        keep[0] = True  # top_p <= 0 still leaves the most likely token
        ordered = torch.where(keep, ordered, torch.zeros_like(ordered))
        pick = torch.multinomial(ordered, 1, generator=generator)
        return int(order[pick].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


class LocalChat:
    """Chat over a model and tokenizer already in memory, with concurrent calls batched.

    Use it from one event loop at a time (it starts its worker task on the first call).

    Args:
        model: A transformers causal LM; it is put in eval mode and never copied.
        tokenizer: Its tokenizer, with a chat template.
        max_batch: Most rows in one generate() call; more queued calls wait for the next.
        name: For logs and metrics.

    Attributes:
        batches: How many generate() calls ran (tests compare it to the number of calls).
    """

    supports_json_schema = False

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 16,
                 name: str = "local") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template")
        self.lm = LocalCausalLM(model, tokenizer)
        self.name = name
        self.max_batch = max_batch
        self.usage = UsageMeter()
        self.batches = 0
        self._pending: list[_Call] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._random = random.Random()
        self._closed = False

    def __repr__(self) -> str:
        return f"LocalChat(name={self.name!r}, max_batch={self.max_batch})"

    async def chat(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        *,
        json_schema: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ChatReply:
        """One completion (see `ChatBackend.chat`); `json_schema` is ignored.

        Raises:
            ChatError: 'client_error' when tools are passed or `max_tokens` is below 1.
            RuntimeError: the backend was closed.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if tools:
            self.usage.failures["client_error"] += 1
            raise ChatError("client_error", f"{self.name}: tool calling is not supported by "
                            "LocalChat; use an OpenAIChat endpoint that serves tools")
        if sampling.max_tokens < 1:
            self.usage.failures["client_error"] += 1
            raise ChatError("client_error", f"max_tokens must be at least 1, "
                            f"not {sampling.max_tokens}")
        seed = sampling.seed if sampling.seed is not None else self._random.getrandbits(63)
        call = _Call(self._encode(messages), sampling, seed,
                     asyncio.get_running_loop().create_future())
        self._pending.append(call)
        self._ensure_worker().set()
        reply = await call.reply
        self.usage.add_reply(reply)
        return reply

    async def aclose(self) -> None:
        """Stop the worker, fail queued calls and drop the model reference."""
        self._closed = True
        worker, self._worker = self._worker, None
        # A worker of an earlier, finished event loop was cancelled with that loop.
        if worker is not None and self._loop is asyncio.get_running_loop():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        for call in self._pending:
            if not call.reply.done():
                call.reply.set_exception(RuntimeError(f"{self!r} was closed"))
        self._pending.clear()
        del self.lm

    def _encode(self, messages: Sequence[Message]) -> list[int]:
        tokenizer = self.lm.tokenizer
        text = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                             add_generation_prompt=True)
        # The template writes the special tokens itself; adding them again would double BOS.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _ensure_worker(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._wake is None or self._worker is None or self._loop is not loop \
                or self._worker.done():
            self._loop, self._wake = loop, asyncio.Event()
            self._worker = loop.create_task(self._drain(self._wake), name=f"{self.name}-batcher")
        return self._wake

    async def _drain(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            await asyncio.sleep(0)  # callers scheduled in the same tick join this batch
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            if not self._pending:
                wake.clear()
            if not batch:
                continue
            self.batches += 1
            try:
                replies = await asyncio.to_thread(self._generate, batch)
            except Exception as error:  # a local crash is a bug, not a retryable failure
                for call in batch:
                    if not call.reply.done():
                        call.reply.set_exception(error)
                continue
            for call, reply in zip(batch, replies, strict=True):
                if not call.reply.done():  # the caller may have been cancelled
                    call.reply.set_result(reply)

    def _generate(self, batch: Sequence[_Call]) -> list[ChatReply]:
        from transformers import LogitsProcessorList

        sampler = RowSampler([call.sampling for call in batch], [call.seed for call in batch],
                             self.lm.device)
        budget = max(call.sampling.max_tokens for call in batch)
        rows = self.lm.generate_ids([call.prompt for call in batch], budget,
                                    logits_processor=LogitsProcessorList([sampler]))
        return [self._reply(call, row) for call, row in zip(batch, rows, strict=True)]

    def _reply(self, call: _Call, row: list[int]) -> ChatReply:
        row = row[: call.sampling.max_tokens]
        ends = [index for index, token in enumerate(row) if token in self.lm.eos_ids]
        if ends:
            kept, finish, spent = row[: ends[0]], "stop", ends[0] + 1
        else:
            kept, finish, spent = row, "length", len(row)
        text = self.lm.tokenizer.decode(kept, skip_special_tokens=True)
        return ChatReply(text=str(text), finish_reason=finish,
                         prompt_tokens=len(call.prompt), completion_tokens=spent)


def load_local_chat(
    path: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    *,
    max_batch: int = 16,
    name: str | None = None,
) -> LocalChat:
    """Load a Hugging Face directory once and serve it as a `LocalChat`.

    Args:
        path: Directory with config, weights, tokenizer and chat template; nothing is
            downloaded.
        dtype: 'float32', 'float16' or 'bfloat16'. On CPU float32 is the safe default;
            bfloat16 is faster only on CPUs with native bf16 (AVX512-BF16, AMX).
        device: Where the weights live, e.g. 'cpu' or 'cuda'.
        max_batch: See `LocalChat`.
        name: For logs and metrics; defaults to the directory's name.

    Raises:
        ValueError: the directory does not exist, the dtype is unknown, or the tokenizer
            has no chat template.
    """
    lm = load_causal_lm(path, dtype, device)
    return LocalChat(lm.model, lm.tokenizer, max_batch=max_batch, name=name or Path(path).name)
