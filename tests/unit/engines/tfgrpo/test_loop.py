"""The practice loop against scripted LLMs: filtering, robustness, bounds and resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.unit.engines.tfgrpo.fakes import (
    RECORDS,
    ExactScorer,
    FakeChat,
    RecordingObserver,
    add_reply,
    default_script,
)

from mendel.engines.tfgrpo import (
    Agent,
    EngineError,
    Learner,
    PhaseStore,
    PracticeConfig,
    TrainingFreeGRPO,
)
from mendel.llm.chat import Sampling


def engine(tmp_path: Path, chat: FakeChat, *, observer: RecordingObserver | None = None,
           **overrides: Any) -> TrainingFreeGRPO:
    settings = {"epochs": 2, "batch_size": 3, "group_size": 8, "max_experiences": 64,
                "max_words": 32, "seed": 7, **overrides}
    config = PracticeConfig(**settings)
    agent = Agent(chat, ExactScorer(), Sampling(0.7, 1.0, 64))
    learner = Learner(chat, Sampling(0.0, 1.0, 256), max_operations=2,
                      max_words=config.max_words, max_experiences=config.max_experiences,
                      seed=config.seed)
    return TrainingFreeGRPO(config, agent, learner, RECORDS, PhaseStore(tmp_path / "store"),
                            observer or RecordingObserver())


def run(eng: TrainingFreeGRPO, **kwargs: Any) -> Any:
    return asyncio.run(eng.run(**kwargs))


def test_groups_with_equal_rewards_are_skipped_and_counted(tmp_path: Path) -> None:
    chat = FakeChat()
    observer = RecordingObserver()
    # Mixed questions are answered right on odd seeds: with 8 rollouts each, all three groups
    # are mixed for these seeds.
    library = run(engine(tmp_path, chat, observer=observer, epochs=1, batch_size=6))
    (report,) = observer.steps
    assert report.metrics["groups/total"] == 6
    assert report.metrics["groups/skipped_uniform"] == 3  # two always right, one always wrong
    assert report.metrics["groups/used"] == 3
    assert chat.calls["summary"] == 3 * 8  # only the mixed groups' rollouts are summarised
    assert chat.calls["group"] == 3
    assert len(library) == 3
    assert all("mixed" in entry.text for entry in library.entries)


def test_without_the_filter_every_group_would_teach(tmp_path: Path) -> None:
    """group size 1 (the paper's ablation) keeps every group: the filter is what skipped."""
    chat = FakeChat()
    observer = RecordingObserver()
    run(engine(tmp_path, chat, observer=observer, epochs=1, batch_size=6, group_size=1))
    assert observer.steps[0].metrics["groups/used"] == 6
    assert chat.calls["group"] == 6


@pytest.mark.parametrize("reply", [
    "I think we should add something",
    '{"operations": [{"operation": "ADD", "id": null, "content": "When', 
    json.dumps({"operations": [{"operation": "EXPAND", "id": "G0", "content": "x"}]}),
    json.dumps({"operations": [{"operation": "UPDATE", "id": "G42", "content": "When a, b."}]}),
    json.dumps({"operations": [{"operation": "ADD", "id": None, "content": "word " * 40}]}),
])
def test_malformed_learner_output_never_crashes_or_corrupts(tmp_path: Path, reply: str) -> None:
    def script(kind: str, messages: Sequence[Mapping[str, Any]], sampling: Sampling) -> str:
        return reply if kind in ("group", "plan") else default_script(kind, messages, sampling)

    observer = RecordingObserver()
    library = run(engine(tmp_path, FakeChat(script), observer=observer))
    assert len(library) == 0
    rejected = {k: v for step in observer.steps for k, v in step.metrics.items()
                if k.startswith("ops/rejected/")}
    assert sum(rejected.values()) >= 1, rejected


def test_library_bound_holds_over_many_steps(tmp_path: Path) -> None:
    counter = iter(range(10_000))

    def script(kind: str, messages: Sequence[Mapping[str, Any]], sampling: Sampling) -> str:
        if kind == "group":
            return add_reply(f"When case {next(counter)} comes, do it.")
        return default_script(kind, messages, sampling)

    observer = RecordingObserver()
    library = run(engine(tmp_path, FakeChat(script), observer=observer, epochs=4,
                         batch_size=2, max_experiences=3))
    assert len(library) == 3
    assert max(step.metrics["library/size"] for step in observer.steps) == 3
    assert sum(step.metrics.get("ops/rejected/library_full", 0) for step in observer.steps) > 0


def test_consolidation_garbage_falls_back_to_validated_proposals(tmp_path: Path) -> None:
    def script(kind: str, messages: Sequence[Mapping[str, Any]], sampling: Sampling) -> str:
        return "{{{" if kind == "plan" else default_script(kind, messages, sampling)

    observer = RecordingObserver()
    library = run(engine(tmp_path, FakeChat(script), observer=observer, epochs=1, batch_size=6))
    assert len(library) == 3
    assert observer.steps[0].metrics["ops/rejected/consolidation_fallback"] == 1


def test_failed_calls_below_the_fraction_drop_rollouts(tmp_path: Path) -> None:
    chat = FakeChat(fail=lambda kind, n: "timeout" if kind == "agent" and n % 4 == 0 else None)
    observer = RecordingObserver()
    run(engine(tmp_path, chat, observer=observer, epochs=1, batch_size=6))
    metrics = observer.steps[0].metrics
    assert metrics["calls/failed/timeout"] == 12
    assert metrics["practice/rollouts"] == 36


def test_too_many_failed_calls_fail_the_step_with_a_message(tmp_path: Path) -> None:
    chat = FakeChat(fail=lambda kind, n: "server_error" if kind == "agent" and n % 4 else None)
    with pytest.raises(EngineError, match=r"step 1 lost 36 of 48 LLM calls \(75%: "
                                          r"server_error 36\).*maxFailedCallFraction 0.5"):
        run(engine(tmp_path, chat, epochs=1, batch_size=6))


@pytest.mark.parametrize("crash_after", [13, 20, 41, 60])
def test_resume_repeats_no_answered_call(tmp_path: Path, crash_after: int) -> None:
    reference = FakeChat()
    expected = run(engine(tmp_path / "whole", reference), evaluation=RECORDS[:3], samples=2)

    first = FakeChat(crash_after=crash_after)
    with pytest.raises(KeyboardInterrupt):
        run(engine(tmp_path / "split", first), evaluation=RECORDS[:3], samples=2)
    # Answers that arrived but were not yet journalled when the process died are lost, as
    # they would be in a killed Pod; every journalled answer must never be asked again.
    journalled = sum(len(path.read_text().splitlines())
                     for path in (tmp_path / "split").rglob("*.jsonl"))
    assert 0 < journalled <= crash_after
    second = FakeChat()
    resumed = run(engine(tmp_path / "split", second), evaluation=RECORDS[:3], samples=2)
    assert resumed == expected
    assert sum(second.calls.values()) == sum(reference.calls.values()) - journalled


def test_evaluation_before_and_after_uses_the_same_seeds(tmp_path: Path) -> None:
    observer = RecordingObserver()
    run(engine(tmp_path, FakeChat(), observer=observer, epochs=1), evaluation=RECORDS, samples=4)
    (before_label, before), (after_label, after) = observer.evaluations
    assert (before_label, after_label) == ("step-00000", "step-00002")
    # The fake agent ignores the library, so identical seeds must give identical scores.
    assert before["mean"] == after["mean"] and before["pass"] == after["pass"]
    assert before["judged"] == 24 and after["librarySize"] > 0


def test_direct_ablation_makes_no_rollouts(tmp_path: Path) -> None:
    chat = FakeChat()
    library = run(engine(tmp_path, chat, epochs=1, batch_size=6, mode="direct"))
    assert chat.calls["agent"] == 0 and chat.calls["direct"] == 6
    assert len(library) == 6


def test_epoch_order_is_seeded_and_kept(tmp_path: Path) -> None:
    eng = engine(tmp_path, FakeChat(), epochs=2)
    run(eng)
    first = eng.store.epoch_order(0)
    assert sorted(first or []) == list(range(len(RECORDS)))
    other = engine(tmp_path / "again", FakeChat(), epochs=2)
    run(other)
    assert other.store.epoch_order(0) == first
    assert eng.store.epoch_order(1) != first


def test_an_explicitly_empty_plan_is_respected(tmp_path: Path) -> None:
    def script(kind: str, messages: Sequence[Mapping[str, Any]], sampling: Sampling) -> str:
        if kind == "plan":
            return json.dumps({"reasoning": "nothing generalises", "operations": []})
        return default_script(kind, messages, sampling)

    observer = RecordingObserver()
    library = run(engine(tmp_path, FakeChat(script), observer=observer, epochs=1, batch_size=6))
    assert len(library) == 0
    assert "ops/rejected/consolidation_fallback" not in observer.steps[0].metrics


def test_a_plan_of_only_invalid_edits_falls_back_to_the_proposals(tmp_path: Path) -> None:
    def script(kind: str, messages: Sequence[Mapping[str, Any]], sampling: Sampling) -> str:
        if kind == "plan":
            return json.dumps({"operations": [{"operation": "UPDATE", "id": None,
                                               "content": "When x, y."}]})
        return default_script(kind, messages, sampling)

    observer = RecordingObserver()
    library = run(engine(tmp_path, FakeChat(script), observer=observer, epochs=1, batch_size=6))
    assert len(library) == 3
    metrics = observer.steps[0].metrics
    assert metrics["ops/rejected/missing_id"] == 1
    assert metrics["ops/rejected/consolidation_fallback"] == 1
