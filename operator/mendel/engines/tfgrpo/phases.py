"""The learner's phases of a step: summaries, group advantages (or the direct ablation),
and consolidation; plus the step's call accounting.

Each phase returns a JSON-ready output {"value", "calls", "rejected"} that the loop keeps,
so a resumed step counts its calls and rejections as the first attempt did. Raw replies
go to the phase's journal before they are parsed: parsing is deterministic, so replaying a
journal gives the same operations without asking the LLM again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mendel.engines.tfgrpo.library import Library
from mendel.engines.tfgrpo.parsing import operations_schema, parse_operations
from mendel.engines.tfgrpo.prompts import (
    consolidation_messages,
    direct_messages,
    group_messages,
    summary_messages,
)
from mendel.engines.tfgrpo.rollouts import seed_for
from mendel.engines.tfgrpo.store import Journal
from mendel.llm.chat import ChatBackend, ChatError, Sampling

__all__ = ["Learner", "PhaseOutput", "StepCalls"]

PhaseOutput = dict[str, Any]
"""{"value": ..., "calls": {"total": n, "failed": {reason: n}}, "rejected": {reason: n}}"""

_GROUP_KINDS = ("ADD", "UPDATE", "DELETE", "NONE")
_PLAN_KINDS = ("ADD", "UPDATE", "DELETE", "MERGE", "NONE")


@dataclass
class StepCalls:
    """LLM calls of one step and what went wrong with them."""

    step: int
    total: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    proposed: int = 0

    @property
    def failed(self) -> int:
        return sum(self.reasons.values())

    def count_rollouts(self, results: Sequence[Mapping[str, Any]]) -> None:
        self.total += len(results)
        self.reasons.update(str(r["failed"]) for r in results if "failed" in r)

    def absorb(self, output: PhaseOutput) -> None:
        calls = output.get("calls", {})
        self.total += int(calls.get("total", 0))
        self.reasons.update({k: int(v) for k, v in calls.get("failed", {}).items()})
        self.rejected.update({k: int(v) for k, v in output.get("rejected", {}).items()})

    def metrics(self) -> dict[str, float]:
        out = {"calls/total": float(self.total), "calls/failed": float(self.failed),
               "ops/proposed": float(self.proposed),
               "ops/rejected": float(sum(self.rejected.values()))}
        out.update({f"calls/failed/{k}": float(v) for k, v in self.reasons.items()})
        out.update({f"ops/rejected/{k}": float(v) for k, v in self.rejected.items()})
        return out


@dataclass
class Learner:
    """The LLM that turns rollouts into library edits.

    Attributes:
        backend: The learner's backend (often the agent's own).
        sampling: Temperature 0 by default, as the maintained reference (YA-b) does.
        max_operations: Edits one group may propose.
        max_words: Longest experience accepted.
        max_experiences: The library's bound (told to the consolidation prompt).
        seed: The run's seed.
    """

    backend: ChatBackend
    sampling: Sampling
    max_operations: int = 2
    max_words: int = 32
    max_experiences: int = 64
    seed: int = 0

    async def summaries(self, journal: Journal, groups: Mapping[int, Sequence[Mapping[str, Any]]],
                        records: Sequence[Mapping[str, Any]]) -> PhaseOutput:
        """A summary per rollout of each kept group: {index: [[reward, summary], ...]}.

        A failed summary drops its rollout; the group is not filtered again (the reference
        filtered twice, so failed summaries could silently drop a mixed group).
        """
        jobs = [(index, k, rollout) for index, group in groups.items()
                for k, rollout in enumerate(group)]

        async def one(index: int, k: int, rollout: Mapping[str, Any]) -> Any:
            record = records[index]
            attempt = str(rollout.get("transcript") or rollout.get("response", ""))
            if rollout.get("critique"):
                attempt += f"\n\nGrader's note: {rollout['critique']}"
            messages = summary_messages(str(record["question"]), str(record["answer"]),
                                        attempt, float(rollout["reward"]))
            return await self._ask(journal, f"{index}/{k}", messages, ("summary", index, k))

        replies = await asyncio.gather(*(one(*job) for job in jobs))
        value: dict[str, list[list[Any]]] = {str(index): [] for index in groups}
        failed: Counter[str] = Counter()
        for (index, _k, rollout), reply in zip(jobs, replies, strict=True):
            if "failed" in reply:
                failed[reply["failed"]] += 1
            else:
                value[str(index)].append([float(rollout["reward"]), reply["text"].strip()])
        return _output(value, len(jobs), failed)

    async def advantages(self, journal: Journal, summaries: Mapping[str, Sequence[Sequence[Any]]],
                         records: Sequence[Mapping[str, Any]], library: Library) -> PhaseOutput:
        """Each group's proposed edits, compared across its summaries."""
        groups = [(int(index), items) for index, items in summaries.items() if items]

        async def one(index: int, items: Sequence[Sequence[Any]]) -> Any:
            record = records[index]
            messages = group_messages(
                str(record["question"]), str(record["answer"]),
                [(float(reward), str(text)) for reward, text in items], library,
                max_operations=self.max_operations, max_words=self.max_words)
            return await self._ask(journal, str(index), messages, ("group", index),
                                   self._schema(library, _GROUP_KINDS, self.max_operations))

        replies = await asyncio.gather(*(one(index, items) for index, items in groups))
        return self._proposals([index for index, _ in groups], replies, library)

    async def direct(self, journal: Journal, batch: Sequence[int],
                     records: Sequence[Mapping[str, Any]], library: Library) -> PhaseOutput:
        """The ablation: experiences written from each question and answer alone."""
        async def one(index: int) -> Any:
            record = records[index]
            messages = direct_messages(str(record["question"]), str(record["answer"]), library,
                                       max_operations=self.max_operations,
                                       max_words=self.max_words)
            return await self._ask(journal, str(index), messages, ("direct", index),
                                   self._schema(library, ("ADD",), self.max_operations))

        replies = await asyncio.gather(*(one(index) for index in batch))
        return self._proposals(list(batch), replies, library, kinds=("ADD",))

    async def consolidate(self, journal: Journal, library: Library,
                          proposals: Sequence[Mapping[str, Any]]) -> PhaseOutput:
        """One plan for the step. Without proposals no call is made. If the reply yields
        no valid edit (a failed call, malformed or truncated JSON, only invalid edits), the
        group proposals are applied as they are ("consolidation_fallback"), since they were
        validated against the same library; the reference code left the library unchanged
        instead. A reply with an explicitly empty list of edits is respected."""
        if not proposals:
            return _output([], 0, Counter())
        plain = [{k: v for k, v in p.items() if k != "group"} for p in proposals]
        messages = consolidation_messages(library, plain, capacity=self.max_experiences,
                                          max_words=self.max_words)
        reply = await self._ask(journal, "plan", messages, ("plan",),
                                self._schema(library, _PLAN_KINDS, len(plain)))
        failed: Counter[str] = Counter()
        if "failed" in reply:
            failed[reply["failed"]] += 1
            parsed_ops, rejected = None, Counter({"consolidation_fallback": 1})
        else:
            parsed = parse_operations(reply["text"], library, allowed=_PLAN_KINDS,
                                      max_operations=len(plain), max_words=self.max_words,
                                      truncated=reply["truncated"])
            rejected = parsed.rejected
            # An explicit empty plan is a decision; a plan whose every edit was invalid is not.
            parsed_ops = None if not parsed.operations and parsed.rejected else parsed.operations
            if parsed_ops is None:
                rejected["consolidation_fallback"] += 1
        plan = plain if parsed_ops is None else [op.to_json() for op in parsed_ops]
        return _output(plan, 1, failed, rejected)

    def _proposals(self, indices: Sequence[int], replies: Sequence[Any], library: Library,
                   kinds: Sequence[str] = _GROUP_KINDS) -> PhaseOutput:
        value: list[dict[str, Any]] = []
        failed: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        for index, reply in zip(indices, replies, strict=True):
            if "failed" in reply:
                failed[reply["failed"]] += 1
                continue
            parsed = parse_operations(reply["text"], library, allowed=kinds,
                                      max_operations=self.max_operations,
                                      max_words=self.max_words, truncated=reply["truncated"])
            rejected.update(parsed.rejected)
            value.extend({"group": index, **op.to_json()} for op in parsed.operations
                         if op.kind != "NONE")
        return _output(value, len(indices), failed, rejected)

    def _schema(self, library: Library, kinds: Sequence[str],
                max_operations: int) -> dict[str, Any] | None:
        if not self.backend.supports_json_schema:
            return None
        return operations_schema(library, allowed=kinds, max_operations=max(1, max_operations),
                                 max_words=self.max_words)

    async def _ask(self, journal: Journal, key: str, messages: list[dict[str, Any]],
                   identity: tuple[Any, ...],
                   schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One learner call: {"text", "truncated"} (journalled) or {"failed": reason}."""
        if key in journal:
            return dict(journal.get(key))
        sampling = replace(self.sampling, seed=seed_for(self.seed, *identity))
        try:
            reply = await self.backend.chat(messages, sampling, json_schema=schema)
        except ChatError as error:  # not journalled: a resumed run asks again
            return {"failed": error.reason}
        answer = {"text": reply.text, "truncated": reply.truncated}
        journal.record(key, answer)
        return answer


def _output(value: Any, total: int, failed: Counter[str],
            rejected: Counter[str] | None = None) -> PhaseOutput:
    return {"value": value, "calls": {"total": total, "failed": dict(failed)},
            "rejected": dict(rejected or {})}
