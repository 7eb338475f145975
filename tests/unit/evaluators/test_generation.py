from __future__ import annotations

import json

import pytest
from tests.unit.evaluators.fakes import ScriptedGenerator, spec

from mendel.evaluators import GenerationEvaluator, TaskDataError, build_evaluator

RECORDS = [
    {"prompt": "2+2=", "answer": "4"},
    {"prompt": "3+3=", "answer": "6"},
    {"prompt": "10*10=", "answer": "100"},
    {"prompt": "capital of France?", "answer": "Paris"},
]


def test_generation_exact_scores_fraction_matched():
    evaluator = build_evaluator(spec(type="generation"), "arith", records=RECORDS)
    model = ScriptedGenerator({"2+2=": "4\nand more", "3+3=": " 6 ", "10*10=": "1000"})

    assert evaluator.evaluate(model) == pytest.approx(0.5)


def test_generation_numeric_reads_first_number():
    evaluator = build_evaluator(
        spec(type="generation", match="numeric"), "arith", records=RECORDS[:3]
    )
    model = ScriptedGenerator({"2+2=": "It is 4.0", "3+3=": "6, I think", "10*10=": "1,00"})

    assert evaluator.evaluate(model) == pytest.approx(2 / 3)


def test_generation_regex_compares_first_group():
    evaluator = build_evaluator(
        spec(type="generation", match="regex", pattern=r"ANSWER=(\S+)"), "arith", records=RECORDS
    )
    model = ScriptedGenerator(
        {"2+2=": "so ANSWER=4", "3+3=": "ANSWER=7", "capital of France?": "ANSWER=Paris"}
    )

    assert evaluator.evaluate(model) == pytest.approx(0.5)


def test_generation_applies_prompt_template_verbatim():
    template = "Q: {prompt}\nA: {not a placeholder}"
    evaluator = build_evaluator(
        spec(type="generation", promptTemplate=template), "arith", records=RECORDS[:1]
    )
    model = ScriptedGenerator({"Q: 2+2=\nA: {not a placeholder}": "4"})

    assert evaluator.evaluate(model) == 1.0


def test_generation_batches_by_batch_size_longest_first_and_keeps_order():
    records = [{"prompt": "x" * n, "answer": str(n)} for n in (1, 5, 3, 4, 2)]
    evaluator = build_evaluator(
        spec(type="generation", batchSize=2, maxNewTokens=7), "len", records=records
    )
    model = ScriptedGenerator({"x" * n: str(n) for n in range(1, 6)})

    assert evaluator.evaluate(model) == 1.0
    assert [len(call[0]) for call in model.generate_calls] == [2, 2, 1]
    assert [len(p) for p in model.generate_calls[0][0]] == [5, 4]
    assert {call[1] for call in model.generate_calls} == {7}


def test_generation_reads_records_from_a_volume(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS[:2]))
    evaluator = build_evaluator(
        spec(type="generation", dataset={"uri": str(path), "split": "validation"}), "arith"
    )

    assert evaluator.split == "validation"
    assert evaluator.evaluate(ScriptedGenerator({"2+2=": "4"})) == 0.5


@pytest.mark.parametrize(
    ("fields", "records", "message"),
    [
        pytest.param({}, [{"prompt": "p"}], "record 0 lacks field.*answer", id="missing-answer"),
        pytest.param({}, [], "no records", id="empty"),
        pytest.param(
            {"match": "numeric"},
            [{"prompt": "p", "answer": "five"}],
            "not a number",
            id="non-numeric-answer",
        ),
        pytest.param(
            {"match": "regex", "pattern": "("}, RECORDS, "does not compile", id="bad-pattern"
        ),
    ],
)
def test_generation_rejects_unusable_tasks(fields, records, message):
    with pytest.raises(TaskDataError, match=message) as caught:
        build_evaluator(spec(type="generation", **fields), "arith", records=records)
    assert caught.value.task == "arith"
    assert "'arith'" in str(caught.value)


def test_generation_missing_dataset_file_names_the_task(tmp_path):
    evaluator = GenerationEvaluator(
        spec(type="generation", dataset={"uri": str(tmp_path / "absent.jsonl")}), "arith"
    )

    with pytest.raises(TaskDataError, match="'arith'.*does not exist"):
        evaluator.evaluate(ScriptedGenerator())
