from __future__ import annotations

import pytest
from tests.unit.evaluators.fakes import ScriptedGenerator, spec

from mendel.evaluators import TaskDataError, build_evaluator

RECORDS = [
    {"question": "Sky colour?", "choices": ["green", "blue", "red"], "answer": 1},
    {"question": "2+2?", "choices": ["4", "5"], "answer": 0},
    {"question": "Largest?", "choices": ["ant", "whale"], "answer": 1},
]
LIKED = {" blue", " 4", " ant"}


def _score(context: str, continuation: str) -> float:
    return -1.0 if continuation in LIKED else -5.0


def test_multiple_choice_scores_argmax_accuracy():
    evaluator = build_evaluator(spec(type="multipleChoice"), "trivia", records=RECORDS)

    assert evaluator.evaluate(ScriptedGenerator(score=_score)) == pytest.approx(2 / 3)


def test_multiple_choice_queries_space_prefixed_choices_after_templated_question():
    evaluator = build_evaluator(
        spec(type="multipleChoice", promptTemplate="Q: {prompt}\nA:", batchSize=4),
        "trivia",
        records=RECORDS,
    )
    model = ScriptedGenerator(score=_score)

    evaluator.evaluate(model)

    pairs = [pair for call in model.loglikelihood_calls for pair in call]
    assert pairs[:3] == [
        ("Q: Sky colour?\nA:", " green"),
        ("Q: Sky colour?\nA:", " blue"),
        ("Q: Sky colour?\nA:", " red"),
    ]
    assert [len(call) for call in model.loglikelihood_calls] == [4, 3]


def test_multiple_choice_breaks_ties_with_the_first_choice():
    records = [{"question": "q", "choices": ["a", "b"], "answer": 0}]
    evaluator = build_evaluator(spec(type="multipleChoice"), "ties", records=records)

    assert evaluator.evaluate(ScriptedGenerator(score=lambda c, x: -2.0)) == 1.0


@pytest.mark.parametrize(
    ("record", "message"),
    [
        pytest.param(
            {"question": "q", "choices": ["a", "b"], "answer": 2}, "not in 0..1", id="out-of-range"
        ),
        pytest.param(
            {"question": "q", "choices": ["a", "b"], "answer": "a"},
            "choice index",
            id="not-an-index",
        ),
        pytest.param(
            {"question": "q", "choices": ["a", "b"], "answer": True}, "choice index", id="bool"
        ),
        pytest.param(
            {"question": "q", "choices": ["a"], "answer": 0}, "2 or more", id="one-choice"
        ),
        pytest.param({"question": "q", "answer": 0}, "lacks field.*choices", id="no-choices"),
    ],
)
def test_multiple_choice_rejects_bad_records(record, message):
    with pytest.raises(TaskDataError, match=message):
        build_evaluator(spec(type="multipleChoice"), "trivia", records=[record])
