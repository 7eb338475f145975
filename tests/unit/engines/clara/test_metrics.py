"""Answer metrics on hand-worked cases: normalisation, EM, token F1, Cover-EM and the mean."""

from __future__ import annotations

import pytest

from mendel.engines.clara.metrics import (
    QAScores,
    cover_em,
    exact_match,
    f1,
    normalize_answer,
    score_answers,
)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("The  Eiffel Tower!", "eiffel tower", id="article-punctuation-space"),
    pytest.param("An apple, a day", "apple day", id="both-articles"),
    pytest.param("theatre", "theatre", id="article-inside-word-kept"),
    pytest.param("  \n", "", id="blank"),
])
def test_normalize_answer_follows_squad(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    pytest.param("the Paris.", ["Paris"], 1.0, id="normalised-equal"),
    pytest.param("Paris, France", ["Paris"], 0.0, id="extra-words"),
    pytest.param("Lyon", ["Paris", "lyon"], 1.0, id="any-gold"),
])
def test_exact_match(prediction, answers, expected):
    assert exact_match(prediction, answers) == expected


@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    pytest.param("It is in Paris, France.", ["paris"], 1.0, id="contained"),
    pytest.param("It was 1984.", ["1"], 0.0, id="not-inside-a-word"),
    pytest.param("concatenate", ["cat"], 0.0, id="substring-of-word"),
    pytest.param("Ada Lovelace wrote it", ["Lovelace wrote"], 1.0, id="multi-word"),
    pytest.param("Lovelace Ada", ["Ada Lovelace"], 0.0, id="order-matters"),
    pytest.param("", ["the"], 1.0, id="empty-gold-empty-prediction"),
    pytest.param("something", ["a"], 0.0, id="empty-gold-nonempty-prediction"),
])
def test_cover_em(prediction, answers, expected):
    assert cover_em(prediction, answers) == expected


@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    pytest.param("Paris France", ["Paris"], 2 / 3, id="precision-half"),
    pytest.param("the cat sat", ["cat sat on mat"], 2 * (1.0 * 0.5) / 1.5, id="recall-half"),
    pytest.param("dog", ["cat"], 0.0, id="no-overlap"),
    pytest.param("red blue", ["green", "red blue green"], 0.8, id="best-gold"),
    pytest.param("b b", ["b"], 2 / 3, id="counts-repeats-once"),
    pytest.param("", ["the"], 1.0, id="both-empty"),
    pytest.param("", ["x"], 0.0, id="empty-prediction"),
])
def test_f1(prediction, answers, expected):
    assert f1(prediction, answers) == pytest.approx(expected)


@pytest.mark.parametrize("metric", [exact_match, f1, cover_em])
def test_metrics_refuse_no_answers_and_a_bare_string(metric):
    with pytest.raises(ValueError, match="at least one gold answer"):
        metric("x", [])
    with pytest.raises(TypeError, match="not one string"):
        metric("x", "x")


def test_score_answers_averages_each_metric():
    scores = score_answers([("Paris", ["Paris"]), ("in Paris France", ["Paris"]),
                            ("Lyon", ["Paris"])])
    assert scores == QAScores(cover_em=pytest.approx(2 / 3), exact_match=pytest.approx(1 / 3),
                              f1=pytest.approx((1 + 0.5) / 3), count=3)
    assert scores.to_json()["count"] == 3


def test_score_answers_refuses_no_records():
    with pytest.raises(ValueError, match="no records"):
        score_answers([])
