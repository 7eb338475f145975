"""The plain progress lines a worker Pod writes for `kubectl logs`."""

from __future__ import annotations

from types import SimpleNamespace

from mendel.workloads.progress import progress_lines


def _summary(generation: int, total: int = 100) -> SimpleNamespace:
    return SimpleNamespace(generation=generation, total=total, coverage=0.25,
                           best={"add": 0.5, "sort": 0.125})


def test_a_line_per_tenth_of_the_budget_and_the_last_generation() -> None:
    lines: list[str] = []
    clock = iter(range(1000)).__next__  # one second per generation: never the time rule
    log = progress_lines(lines.append, every_seconds=3600, clock=lambda: float(clock()))
    for generation in range(1, 101):
        log(_summary(generation))
    assert len(lines) == 11  # generation 1, then 10, 20, ..., 100
    assert lines[0] == "generation 1/100 (1%): coverage 25.0%, best add=0.500 sort=0.125"
    assert lines[-1].startswith("generation 100/100 (100%)")


def test_a_slow_run_still_logs_every_interval() -> None:
    lines: list[str] = []
    now = [0.0]
    log = progress_lines(lines.append, every_seconds=15, clock=lambda: now[0])
    for generation in range(1, 5):
        now[0] += 20  # each generation takes 20 s: within the same tenth of 1000
        log(_summary(generation, total=1000))
    assert len(lines) == 4


def test_experience_library_steps_describe_themselves() -> None:
    from mendel.workloads.experience import LibraryProgress

    lines: list[str] = []
    log = progress_lines(lines.append, every_seconds=3600, clock=lambda: 0.0)
    log(LibraryProgress(generation=1, total=4, library=3, reward=0.5))
    log(LibraryProgress(generation=4, total=4, library=5, reward=0.625, score=0.5125))
    assert lines == ["step 1/4 (25%): library 3, practice reward 0.50",
                     "step 4/4 (100%): library 5, practice reward 0.62, "
                     "held-out score 0.512"]
