from __future__ import annotations

import re
from decimal import Decimal

import pytest

from mendel.evaluators.matching import first_number, match_exact, match_numeric, match_regex


@pytest.mark.parametrize(
    ("output", "answer", "expected"),
    [
        pytest.param("Paris", "Paris", True, id="equal"),
        pytest.param("  Paris \n", " Paris", True, id="trimmed"),
        pytest.param("\nParis\nThe capital of France.", "Paris", True, id="first-line"),
        pytest.param("Paris.", "Paris", False, id="punctuation-counts"),
        pytest.param("paris", "Paris", False, id="case-counts"),
        pytest.param("", "Paris", False, id="empty"),
        pytest.param("42", 42, True, id="numeric-answer-as-text"),
    ],
)
def test_match_exact(output, answer, expected):
    assert match_exact(output, answer) is expected


@pytest.mark.parametrize(
    ("output", "answer", "expected"),
    [
        pytest.param("The answer is 72.", "72", True, id="in-sentence"),
        pytest.param("72.0", 72, True, id="trailing-zero"),
        pytest.param("It costs $1,234,567 in total", "1234567", True, id="thousands"),
        pytest.param("1234567", "1,234,567", True, id="answer-with-commas"),
        pytest.param("-3 degrees", "-3", True, id="negative"),
        pytest.param("0.5", ".5", True, id="leading-dot"),
        pytest.param("3 apples and 5 pears", "5", False, id="first-number-only"),
        pytest.param("no digits here", "5", False, id="no-number"),
        pytest.param("72.5", "72", False, id="different"),
    ],
)
def test_match_numeric(output, answer, expected):
    assert match_numeric(output, answer) is expected


def test_match_numeric_rejects_non_numeric_answer():
    with pytest.raises(ValueError, match="not a number"):
        match_numeric("5", "five")


def test_first_number_parses_scientific_notation():
    assert first_number("about 3e8 m/s") == Decimal("3e8")


@pytest.mark.parametrize(
    ("output", "pattern", "answer", "expected"),
    [
        pytest.param("Reasoning... Answer: (B)", r"Answer: \((\w)\)", "B", True, id="group"),
        pytest.param("Answer: (C)", r"Answer: \((\w)\)", "B", False, id="wrong-group"),
        pytest.param("no answer", r"Answer: \((\w)\)", "B", False, id="no-match"),
        pytest.param("yes, indeed", r"yes|no", "yes", True, id="no-group-whole-match"),
        pytest.param("#### 18 ", r"####\s*(.*)", "18", True, id="group-trimmed"),
    ],
)
def test_match_regex(output, pattern, answer, expected):
    assert match_regex(output, answer, re.compile(pattern)) is expected
