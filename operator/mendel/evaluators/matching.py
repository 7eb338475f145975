"""How a generated text is compared with a reference answer: exact, numeric and regex.

Pure functions of strings, so the rules are testable without a model. Models tend to keep
talking after the answer, so exact matching reads the first line only and numeric
matching the first number.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["first_number", "match_exact", "match_numeric", "match_regex"]

_NUMBER = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"  # 1,234.5  12  3e8
    r"|[-+]?\.\d+"  # .5
)


def first_number(text: str) -> Decimal | None:
    """The first number written in the text, thousands separators allowed; None if none."""
    found = _NUMBER.search(text)
    if found is None:
        return None
    try:
        return Decimal(found.group(0).replace(",", ""))
    except InvalidOperation:
        return None


def match_exact(output: str, answer: object) -> bool:
    """The output's first non-empty line, trimmed, equals the trimmed answer."""
    lines = output.strip().splitlines()
    return (lines[0].strip() if lines else "") == str(answer).strip()


def match_numeric(output: str, answer: object) -> bool:
    """The first number in the output equals the answer as a number ('72.0' == 72).

    Raises:
        ValueError: the answer is not a number.
    """
    expected = first_number(str(answer))
    if expected is None:
        raise ValueError(f"answer {answer!r} is not a number")
    produced = first_number(output)
    return produced is not None and produced == expected


def match_regex(output: str, answer: object, pattern: re.Pattern[str]) -> bool:
    """The pattern's first group (the whole match if it has none), trimmed, equals the answer."""
    found = pattern.search(output)
    if found is None:
        return False
    value = found.group(1) if pattern.groups else found.group(0)
    return (value or "").strip() == str(answer).strip()
