"""Data synthesis when calls fail or the process dies: failures are counted and never raise
below the threshold, a run above it stops with the counts, and the journal lets a rerun ask
nothing again for the documents it finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.engines.clara.test_synthesis import OTHER, THREE, ScriptedLLM, run

from mendel.engines.clara import SynthesisError

CALLS_PER_DOCUMENT = 14
"""simple, complex, 4 answers, 3 judgments, 3 coverage checks, paraphrase and its check."""


class Killed(BaseException):
    """The process dies mid-call (not an error the engine may swallow)."""


def test_a_rerun_asks_nothing_again_for_finished_documents(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    first = run([THREE, OTHER], ScriptedLLM(), journal)
    backend = ScriptedLLM()
    again = run([THREE, OTHER], backend, journal)

    assert backend.total == 0
    assert again.records == first.records and again.resumed == 2
    assert (again.calls, again.dropped, again.kept) == (first.calls, first.dropped, first.kept)
    assert len(journal.read_text().splitlines()) == 2  # one line per finished document


def test_a_killed_run_resumes_after_its_last_finished_document(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    calls = 0

    def die_in_the_second_document(kind: str, number: int) -> None:
        nonlocal calls
        calls += 1
        if calls > CALLS_PER_DOCUMENT + 3:
            raise Killed

    with pytest.raises(Killed):
        run([THREE, OTHER], ScriptedLLM(fail=die_in_the_second_document), journal,
            concurrency=1)
    backend = ScriptedLLM()
    result = run([THREE, OTHER], backend, journal, concurrency=1)

    assert backend.total == CALLS_PER_DOCUMENT and result.resumed == 1
    assert result.records == run([THREE, OTHER], ScriptedLLM(), tmp_path / "fresh.jsonl").records


def test_a_changed_document_is_asked_again(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    run([THREE, OTHER], ScriptedLLM(), journal)
    backend = ScriptedLLM()
    result = run([THREE, "Odalric argues with the frozen kite."], backend, journal)

    assert result.resumed == 1 and backend.calls["simple"] == 1


def test_a_failed_call_costs_its_document_only_until_a_rerun(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    flaky = ScriptedLLM(fail=lambda kind, number: "timeout" if (kind, number) == ("answer", 1)
                        else None)
    result = run([THREE, OTHER], flaky, journal, concurrency=1)

    assert [r["docs"] for r in result.records] == [[OTHER], [OTHER]]
    assert result.failed == {"timeout": 1} and result.incomplete == 1
    assert flaky.calls["paraphrase"] == 1  # the failed document stopped asking
    backend = ScriptedLLM()
    rerun = run([THREE, OTHER], backend, journal, concurrency=1)
    assert backend.total == CALLS_PER_DOCUMENT and len(rerun.records) == 4


def test_unreadable_replies_are_counted_and_kept_in_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    backend = ScriptedLLM(replies={"simple": lambda p: "I would rather not."},
                          truncate={"check"})
    result = run([THREE], backend, journal)

    assert result.failed == {"malformed_json": 1, "truncated": 1}
    assert [r["data_type"] for r in result.records] == ["qa"]  # covered by the checks alone
    assert result.records[0]["answers"] == ["Velora", "Brisa", "Kestrel"]
    again = run([THREE], ScriptedLLM(), journal)
    assert (again.failed, again.calls, again.records) == (result.failed, result.calls,
                                                          result.records)


def test_too_many_unreadable_replies_fail_the_run_with_their_counts(tmp_path: Path) -> None:
    backend = ScriptedLLM(replies={"judge": lambda p: "Hard to say."})
    with pytest.raises(SynthesisError, match="no_verdict") as raised:
        run([THREE], backend, tmp_path / "journal.jsonl", max_failed_call_fraction=0.1)

    assert raised.value.counts["failed/no_verdict"] == backend.calls["judge"]
    assert raised.value.counts["calls"] == backend.total


def test_an_endpoint_that_is_down_stops_the_run_early(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    backend = ScriptedLLM(fail=lambda kind, number: "server_error")
    documents = [f"Person{n} paints the door number {n}." for n in range(100)]
    with pytest.raises(SynthesisError, match="server_error") as raised:
        run(documents, backend, journal)

    assert raised.value.counts == {"calls": backend.total, "failed/server_error": backend.total}
    assert backend.total < 60  # stopped after about 40 calls, not 200
    assert not journal.exists() or not journal.read_text()


def test_failures_up_to_the_threshold_do_not_raise(tmp_path: Path) -> None:
    backend = ScriptedLLM(fail=lambda kind, number: "rate_limited" if kind == "complex"
                          else None)
    result = run([THREE, OTHER], backend, tmp_path / "journal.jsonl")

    assert result.records == [] and result.incomplete == 2
    assert result.failed == {"rate_limited": 2}
    assert json.loads(json.dumps(result.metrics()))["synthesis/failed/rate_limited"] == 2.0
