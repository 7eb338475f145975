"""builtin:arithmetic: every one-digit instance once, disjoint stable splits, exact answers."""

from __future__ import annotations

import re

import pytest

from mendel.api.references import DatasetRef
from mendel.datasets import DatasetError, builtin_names, load_records
from mendel.datasets.arithmetic import SPLITS, arithmetic, split_of

QUESTION = re.compile(r"What is (\d) ([-+*]) (\d)\?")


def _independent_answer(question: str) -> str:
    # Recomputed here without the module's table, so a bug there cannot hide.
    match = QUESTION.fullmatch(question)
    assert match, question
    left, symbol, right = int(match[1]), match[2], int(match[3])
    value = {"+": left + right, "-": left - right, "*": left * right}[symbol]
    return str(value)


@pytest.fixture(scope="module")
def splits():
    return {split: arithmetic(split) for split in SPLITS}


def test_arithmetic_holds_all_300_instances_once(splits):
    questions = [r["question"] for records in splits.values() for r in records]

    assert len(questions) == len(set(questions)) == 300
    assert {QUESTION.fullmatch(q).groups() for q in questions} == {
        (str(a), op, str(b)) for a in range(10) for op in "+-*" for b in range(10)
    }


def test_arithmetic_splits_are_disjoint_and_decided_by_the_question(splits):
    for split, records in splits.items():
        assert all(split_of(r["question"]) == split for r in records)
    train, validation, test = ({r["question"] for r in splits[s]} for s in SPLITS)
    assert not train & validation and not train & test and not validation & test


def test_arithmetic_split_sizes_are_about_half_a_quarter_and_a_quarter(splits):
    sizes = {split: len(records) for split, records in splits.items()}

    assert sizes == {"train": 138, "validation": 79, "test": 83}


@pytest.mark.parametrize("split", SPLITS)
def test_arithmetic_answers_are_correct_integers(splits, split):
    for record in splits[split]:
        assert set(record) == {"question", "answer"}
        assert record["answer"] == _independent_answer(record["question"])


def test_arithmetic_is_deterministic_and_shuffled(splits):
    for split in SPLITS:
        again = arithmetic(split)
        assert again == splits[split]
        assert [r["question"] for r in again] != sorted(r["question"] for r in again)
    assert split_of("What is 7 * 3?") == split_of("What is 7 * 3?")


def test_arithmetic_first_records_are_pinned(splits):
    # Pins the order across machines and Python versions of the hash and the shuffle.
    assert [r["question"] for r in splits["test"][:3]] == [
        "What is 2 + 3?",
        "What is 6 + 7?",
        "What is 8 * 0?",
    ]


def test_arithmetic_loads_as_a_builtin_with_a_limit():
    assert "arithmetic" in builtin_names()

    records = load_records(DatasetRef(uri="builtin:arithmetic", split="validation", limit=8))

    assert records == arithmetic("validation")[:8]


def test_arithmetic_rejects_an_unknown_split():
    with pytest.raises(DatasetError, match="no split 'dev'"):
        arithmetic("dev")
