"""One rollout: the agent answers a question (calling tools if it has any), and the
verifier rewards the answer. Also the held-out evaluation built from rollouts.

A rollout either produces a scored attempt or fails with a counted reason (the LLM call
failed after its retries, the rollout ran past its time limit, the verifier failed);
failures never raise out of here, so one bad call costs one rollout, not the step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from mendel.engines.tfgrpo.library import Library
from mendel.engines.tfgrpo.prompts import agent_messages
from mendel.engines.tfgrpo.store import Journal
from mendel.llm.chat import ChatBackend, ChatError, Sampling

__all__ = ["Agent", "Scorer", "Tool", "evaluate", "mean_and_pass", "seed_for"]


class Scorer(Protocol):
    """Rewards a response to a record ({"question", "answer", ...}) in [0, 1]."""

    async def score(self, record: Mapping[str, Any], response: str) -> Any:
        """An object with `reward` (float) and `reasoning` (str or None)."""
        ...


class Tool(Protocol):
    """A function the agent may call (OpenAI tool calling)."""

    definition: Mapping[str, Any]

    async def run(self, arguments: str) -> str: ...


def seed_for(base: int, *parts: object) -> int:
    """A 31-bit seed derived from the run's seed and a call's identity, so each rollout
    samples the same way when it is asked again."""
    digest = hashlib.sha256(json.dumps([base, *parts], default=str).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class Agent:
    """The frozen agent, its verifier, and how long a rollout may take."""

    backend: ChatBackend
    scorer: Scorer
    sampling: Sampling
    timeout_seconds: float = 1800.0
    tool: Tool | None = None
    max_turns: int = 4

    async def rollout(self, record: Mapping[str, Any], library: Library,
                      seed: int) -> dict[str, Any]:
        """{"response", "reward", "critique", "tokens"} (plus "transcript" when tools were
        called) or {"failed": reason}."""
        try:
            response, transcript, tokens = await asyncio.wait_for(
                self._answer(str(record["question"]), library, seed), self.timeout_seconds)
        except ChatError as error:
            return {"failed": error.reason}
        except TimeoutError:
            return {"failed": "task_timeout"}
        except Exception as error:  # a tool that could not run (a broken sandbox)
            return {"failed": "tool_error", "error": _describe(error)}
        try:
            verdict = await self.scorer.score(record, response)
        except ChatError as error:  # the judge's call failed after its retries
            return {"failed": f"judge_{error.reason}"}
        except Exception as error:  # a verifier that cannot score: counted, not fatal
            return {"failed": "verifier_error", "error": _describe(error)}
        result = {"response": response, "reward": float(verdict.reward),
                  "critique": getattr(verdict, "reasoning", None), "tokens": tokens}
        if transcript != response:
            result["transcript"] = transcript
        return result

    async def _answer(self, question: str, library: Library,
                      seed: int) -> tuple[str, str, int]:
        """The final answer (what is rewarded), the whole attempt with tool calls (what the
        learner summarises), and the completion tokens spent."""
        messages: list[Any] = agent_messages(question, library)
        sampling = replace(self.sampling, seed=seed)
        tokens = 0
        transcript: list[str] = []
        for turn in range(self.max_turns + 1):
            tools = [self.tool.definition] if self.tool and turn < self.max_turns else None
            reply = await self.backend.chat(messages, sampling, tools=tools)
            tokens += reply.completion_tokens
            if not reply.tool_calls or self.tool is None:
                transcript.append(reply.text)
                return reply.text, "\n".join(part for part in transcript if part), tokens
            messages.append({"role": "assistant", "content": reply.text or None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
                for call in reply.tool_calls]})
            for call in reply.tool_calls:
                output = await self.tool.run(call.arguments)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
                transcript.append(f"[{call.name}] {call.arguments}\n-> {output}")
        return "", "\n".join(transcript), tokens


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def mean_and_pass(rewards_by_question: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Mean@k (mean over every judged rollout) and Pass@k (share of questions with a
    reward above 0), over the questions with at least one judged rollout."""
    judged = [rewards for rewards in rewards_by_question if rewards]
    flat = [reward for rewards in judged for reward in rewards]
    if not flat:
        return 0.0, 0.0
    return sum(flat) / len(flat), sum(max(r) > 0 for r in judged) / len(judged)


async def evaluate(agent: Agent, records: Sequence[Mapping[str, Any]], library: Library, *,
                   samples: int, seed: int, journal: Journal) -> dict[str, Any]:
    """Score the agent with a library on held-out records: Mean@k and Pass@k.

    The same seeds are used for every library, so before and after differ only by the
    library. Answers already in `journal` are not asked again.
    """
    async def one(index: int, sample: int) -> dict[str, Any]:
        key = f"{index}/{sample}"
        if key in journal:
            return dict(journal.get(key))
        result = await agent.rollout(records[index], library, seed_for(seed, "eval", key))
        compact = {k: v for k, v in result.items() if k in ("reward", "failed", "tokens")}
        if "failed" not in compact:  # failures are asked again by a resumed run
            journal.record(key, compact)
        return compact

    results = await asyncio.gather(*(one(i, s) for i in range(len(records))
                                      for s in range(samples)))
    rewards: list[list[float]] = [[] for _ in records]
    failed: Counter[str] = Counter()
    for position, result in enumerate(results):
        if "failed" in result:
            failed[result["failed"]] += 1
        else:
            rewards[position // samples].append(float(result["reward"]))
    mean, passed = mean_and_pass(rewards)
    return {"mean": mean, "pass": passed, "questions": len(records), "samples": samples,
            "judged": sum(len(r) for r in rewards), "failed": dict(failed)}
