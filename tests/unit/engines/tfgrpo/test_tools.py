"""The agent's tool loop: the model calls the sandboxed Python tool, reads its output and
answers; a model that never stops calling tools is cut off after `max_turns`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.unit.engines.tfgrpo.fakes import ExactScorer

from mendel.engines.tfgrpo import Agent, Library
from mendel.llm.chat import ChatReply, Sampling, ToolCall, UsageMeter
from mendel.llm.tools import PythonTool


@dataclass
class ToolUser:
    """Calls the tool until `calls` are made, then answers with the tool's last output."""

    calls: int = 1
    name: str = "tool-user"
    supports_json_schema: bool = False
    usage: UsageMeter = field(default_factory=UsageMeter)
    seen_tools: list[Any] = field(default_factory=list)

    async def chat(self, messages: Sequence[Mapping[str, Any]], sampling: Sampling, *,
                   json_schema: Mapping[str, Any] | None = None,
                   tools: Sequence[Mapping[str, Any]] | None = None) -> ChatReply:
        self.seen_tools.append(tools)
        made = sum(1 for m in messages if m["role"] == "tool")
        if tools and made < self.calls:
            return ChatReply("", "tool_calls", tool_calls=(
                ToolCall(f"call-{made}", "python", '{"code": "print(6 * 7)"}'),))
        outputs = [str(m["content"]) for m in messages if m["role"] == "tool"]
        return ChatReply(outputs[-1].strip() if outputs else "no tool")

    async def aclose(self) -> None:
        return None


def test_agent_runs_python_in_the_sandbox_and_answers_with_it() -> None:
    backend = ToolUser(calls=1)
    agent = Agent(backend, ExactScorer(), Sampling(0.0), tool=PythonTool(timeout_seconds=10))
    result = asyncio.run(agent.rollout({"question": "6 times 7?", "answer": "42"}, Library(), 1))
    assert result["reward"] == 1.0, result
    assert result["response"] == "42"  # what is rewarded: the final answer
    assert "[python]" in result["transcript"] and "-> 42" in result["transcript"]
    assert backend.seen_tools[0][0]["function"]["name"] == "python"


def test_tool_calls_stop_after_max_turns() -> None:
    backend = ToolUser(calls=99)
    agent = Agent(backend, ExactScorer(), Sampling(0.0), tool=PythonTool(timeout_seconds=10),
                  max_turns=2)
    result = asyncio.run(agent.rollout({"question": "q", "answer": "42"}, Library(), 1))
    assert len(backend.seen_tools) == 3 and backend.seen_tools[-1] is None
    assert result["reward"] == 1.0  # the last turn had no tools, so it answered
