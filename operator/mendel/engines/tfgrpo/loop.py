"""The Training-Free GRPO loop: epochs of steps, each step four phases over a batch.

For a step's batch of questions:

1. rollouts: G answers per question from the agent with the current library, rewarded;
2. groups whose rewards are all equal teach nothing and are skipped (counted), once;
3. summaries: the learner summarises each rollout of the remaining groups;
4. advantages: per group, the learner compares the summaries and proposes edits;
5. consolidation: one learner call turns all proposals into one plan, which is applied
   deterministically (library.py) and the library renumbered.

Each phase's output is kept by (step, phase) and each answered call journalled
(store.py), so a resumed run starts at the first missing phase without repeating calls.
A call that fails after its backend's retries drops its rollout or group with a counted
reason; the step fails only when more than `max_failed_call_fraction` of its calls fail.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mendel.engines.tfgrpo.library import Library, Operation, apply_operations
from mendel.engines.tfgrpo.phases import Learner, PhaseOutput, StepCalls
from mendel.engines.tfgrpo.rollouts import Agent, evaluate, seed_for
from mendel.engines.tfgrpo.store import Journal, PhaseStore

__all__ = ["EngineError", "Observer", "PracticeConfig", "StepReport", "TrainingFreeGRPO"]


class EngineError(RuntimeError):
    """The run cannot go on (too many failed calls in a step)."""


@dataclass(frozen=True)
class PracticeConfig:
    """What the loop needs from a spec, plus the ablations a benchmark may ask for.

    Attributes:
        mode: 'grpo' (the method), or 'direct': the learner writes experiences from each
            question and its answer alone, with no rollouts and no group comparison (the
            paper's "directly generated experiences" ablation).
        group_size: G; 1 is allowed here for the paper's ablation (every group is used).
    """

    epochs: int = 3
    batch_size: int = 100
    group_size: int = 5
    max_operations_per_group: int = 2
    max_failed_call_fraction: float = 0.5
    max_experiences: int = 64
    max_words: int = 32
    seed: int = 0
    mode: Literal["grpo", "direct"] = "grpo"


@dataclass
class StepReport:
    """What one step did: the library after it and its metrics."""

    step: int
    total_steps: int
    epoch: int
    library: Library
    metrics: dict[str, float] = field(default_factory=dict)
    resumed: bool = False


class Observer(Protocol):
    """Where progress goes (MLflow, a progress bar, logs); the engine knows none of them."""

    def on_step(self, report: StepReport) -> None: ...

    def on_phase_saved(self, step: int, phase: str) -> None: ...

    def on_evaluation(self, label: str, step: int, result: Mapping[str, Any]) -> None: ...


class TrainingFreeGRPO:
    """Runs (or resumes) practice over a dataset and returns the final library.

    Args:
        config: The loop's settings.
        agent: The frozen agent and its verifier.
        learner: The LLM that summarises and edits (usually the agent's model at T=0).
        records: Practice records {"question", "answer"}.
        store: Where phases and journals are kept.
        observer: Receives each step's report.
    """

    def __init__(self, config: PracticeConfig, agent: Agent, learner: Learner,
                 records: Sequence[Mapping[str, Any]], store: PhaseStore,
                 observer: Observer) -> None:
        if not records:
            raise EngineError("the practice dataset has no records")
        self.config = config
        self.agent = agent
        self.learner = learner
        self.records = list(records)
        self.store = store
        self.observer = observer

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.records) / self.config.batch_size)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def library_at(self, step: int) -> Library:
        """The library after `step` (step 0: empty)."""
        saved = self.store.load(step, "library") if step > 0 else None
        return Library.from_json(saved) if saved is not None else Library()

    async def run(self, evaluation: Sequence[Mapping[str, Any]] = (), *, samples: int = 4,
                  every_epochs: int = 1) -> Library:
        """Practise every step not yet done, scoring on `evaluation` before the first step,
        every `every_epochs` epochs and after the last."""
        library = Library()
        if evaluation:
            await self.evaluate(evaluation, 0, library, samples=samples)
        for epoch in range(self.config.epochs):
            order = self._epoch_order(epoch)
            for batch_index in range(self.steps_per_epoch):
                step = epoch * self.steps_per_epoch + batch_index + 1
                batch = order[batch_index * self.config.batch_size:
                              (batch_index + 1) * self.config.batch_size]
                library = await self._step(step, epoch, batch, library)
            last = epoch == self.config.epochs - 1
            if evaluation and (last or (epoch + 1) % every_epochs == 0):
                await self.evaluate(evaluation, (epoch + 1) * self.steps_per_epoch, library,
                                    samples=samples)
        return library

    async def evaluate(self, records: Sequence[Mapping[str, Any]], step: int,
                       library: Library, *, samples: int) -> dict[str, Any]:
        """Mean@k and Pass@k of the agent with the library of `step` (kept once done)."""
        label = f"step-{step:05d}"
        result = self.store.load_evaluation(label)
        if result is None:
            result = await evaluate(self.agent, records, library, samples=samples,
                                    seed=self.config.seed,
                                    journal=self.store.evaluation_journal(label))
            failed, total = sum(result["failed"].values()), len(records) * samples
            if failed / total > self.config.max_failed_call_fraction:
                raise EngineError(
                    f"scoring the library of step {step} lost {failed} of {total} rollouts "
                    f"({result['failed']}), more than practice.maxFailedCallFraction "
                    f"{self.config.max_failed_call_fraction:g}; the score is not kept")
            result["librarySize"] = len(library)
            self.store.save_evaluation(label, result)
        self.observer.on_evaluation(label, step, result)
        return dict(result)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = self.store.epoch_order(epoch)
        if order is None:  # seeded, then persisted: a resume sees the same batches
            order = list(range(len(self.records)))
            random.Random(seed_for(self.config.seed, "epoch", epoch)).shuffle(order)
            self.store.save_epoch_order(epoch, order)
        return order

    async def _step(self, step: int, epoch: int, batch: list[int], library: Library) -> Library:
        saved = self.store.load(step, "library")
        if saved is not None:
            report = self.store.load(step, "report") or {}
            done = Library.from_json(saved)
            self.observer.on_step(StepReport(step, self.total_steps, epoch, done,
                                             report.get("metrics", {}), resumed=True))
            return done
        calls = StepCalls(step)
        metrics: dict[str, float] = {}
        learner = self.learner
        if self.config.mode == "direct":
            proposals = await self._phase(step, "direct", calls, lambda journal: learner.direct(
                journal, batch, self.records, library))
        else:
            groups = await self._rollouts(step, batch, library, calls, metrics)
            kept = self._filter(groups, metrics)
            summaries = await self._phase(step, "summaries", calls, lambda journal:
                                          learner.summaries(journal, kept, self.records))
            proposals = await self._phase(step, "advantages", calls, lambda journal:
                                          learner.advantages(journal, summaries, self.records,
                                                             library))
        calls.proposed = len(proposals)
        plan = await self._phase(step, "consolidation", calls, lambda journal:
                                 learner.consolidate(journal, library, proposals))
        outcome = apply_operations(library, [Operation.from_json(op) for op in plan],
                                   step=step, max_experiences=self.config.max_experiences)
        calls.rejected.update(outcome.rejected)
        metrics.update(calls.metrics())
        metrics["ops/applied"] = float(sum(outcome.applied.values()))
        metrics.update({f"ops/applied/{kind}": float(n) for kind, n in outcome.applied.items()})
        metrics["library/size"] = float(len(outcome.library))
        self.store.save(step, "report", {"metrics": metrics})
        self._save(step, "library", outcome.library.to_json())
        self.observer.on_step(StepReport(step, self.total_steps, epoch, outcome.library, metrics))
        return outcome.library

    async def _phase(self, step: int, phase: str, calls: StepCalls,
                     compute: Callable[[Journal], Awaitable[PhaseOutput]]) -> Any:
        """A phase's value: kept from an earlier attempt, or computed and kept now."""
        output = self.store.load(step, phase)
        fresh = output is None
        if output is None:
            output = await compute(self.store.journal(step, phase))
        calls.absorb(output)
        self._check(calls)  # before saving: a phase that failed the step is asked again
        if fresh:
            self._save(step, phase, output)
        return output["value"]

    async def _rollouts(self, step: int, batch: list[int], library: Library, calls: StepCalls,
                        metrics: dict[str, float]) -> dict[int, list[dict[str, Any]]]:
        saved = self.store.load(step, "rollouts")
        if saved is None:
            journal = self.store.journal(step, "rollouts")
            size = self.config.group_size

            async def one(index: int, sample: int) -> dict[str, Any]:
                key = f"{index}/{sample}"
                if key in journal:
                    return dict(journal.get(key))
                seed = seed_for(self.config.seed, "rollout", step, key)
                result = await self.agent.rollout(self.records[index], library, seed)
                if "failed" not in result:  # failures are asked again by a resumed run
                    journal.record(key, result)
                return result

            results = await asyncio.gather(*(one(i, s) for i in batch for s in range(size)))
            groups = {i: results[n * size:(n + 1) * size] for n, i in enumerate(batch)}
            calls.count_rollouts(results)
            self._check(calls)  # before saving: failed rollouts are then asked again
            self._save(step, "rollouts", {str(i): group for i, group in groups.items()})
        else:
            groups = {int(index): rollouts for index, rollouts in saved.items()}
            calls.count_rollouts([r for group in groups.values() for r in group])
            self._check(calls)
        judged = [[r["reward"] for r in group if "failed" not in r] for group in groups.values()]
        flat = [reward for rewards in judged for reward in rewards]
        metrics["practice/reward_mean"] = sum(flat) / len(flat) if flat else 0.0
        metrics["practice/pass_at_g"] = (sum(bool(r) and max(r) > 0 for r in judged)
                                         / len(judged) if judged else 0.0)
        metrics["practice/rollouts"] = float(len(flat))
        return groups

    def _filter(self, groups: dict[int, list[dict[str, Any]]],
                metrics: dict[str, float]) -> dict[int, list[dict[str, Any]]]:
        """Groups with a learning signal: rewards that differ (any group when G = 1)."""
        kept: dict[int, list[dict[str, Any]]] = {}
        skipped: Counter[str] = Counter()
        for index, group in groups.items():
            judged = [r for r in group if "failed" not in r]
            if not judged:
                skipped["failed"] += 1
            elif self.config.group_size > 1 and len({r["reward"] for r in judged}) == 1:
                skipped["uniform"] += 1
            else:
                kept[index] = judged
        metrics["groups/total"] = float(len(groups))
        metrics["groups/used"] = float(len(kept))
        metrics["groups/skipped_uniform"] = float(skipped["uniform"])
        metrics["groups/skipped_failed"] = float(skipped["failed"])
        return kept

    def _check(self, calls: StepCalls) -> None:
        if calls.total and calls.failed / calls.total > self.config.max_failed_call_fraction:
            reasons = ", ".join(f"{reason} {count}" for reason, count in calls.reasons.items())
            raise EngineError(
                f"step {calls.step} lost {calls.failed} of {calls.total} LLM calls "
                f"({calls.failed / calls.total:.0%}: {reasons}), more than "
                f"practice.maxFailedCallFraction {self.config.max_failed_call_fraction:g}; "
                "check the endpoint, or raise the fraction to tolerate it")

    def _save(self, step: int, phase: str, value: Any) -> None:
        self.store.save(step, phase, value)
        self.observer.on_phase_saved(step, phase)
