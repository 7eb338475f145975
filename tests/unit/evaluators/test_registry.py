from __future__ import annotations

import typing

import pytest
from tests.unit.evaluators.fakes import spec

import mendel.evaluators
from mendel.api.evaluator import EvaluatorType
from mendel.api.references import DatasetRef
from mendel.datasets import DatasetError, load_records
from mendel.evaluators import EVALUATORS, build_evaluator


def test_registry_covers_every_evaluator_type():
    assert set(EVALUATORS) == set(typing.get_args(EvaluatorType))
    assert all(cls.type_name == name for name, cls in EVALUATORS.items())


@pytest.mark.parametrize(
    ("fields", "needs_model_dir"),
    [
        pytest.param({"type": "generation"}, False, id="generation"),
        pytest.param({"type": "code"}, False, id="code"),
        pytest.param({"type": "multipleChoice"}, False, id="multipleChoice"),
        pytest.param({"type": "command", "command": ["true"]}, True, id="command"),
    ],
)
def test_build_evaluator_picks_class_by_type(fields, needs_model_dir):
    evaluator = build_evaluator(spec(**fields), "task")

    assert type(evaluator) is EVALUATORS[fields["type"]]
    assert evaluator.needs_model_dir is needs_model_dir
    assert evaluator.task_name == "task"


def test_evaluators_exports():
    assert mendel.evaluators.__all__ == sorted(mendel.evaluators.__all__)
    assert all(hasattr(mendel.evaluators, name) for name in mendel.evaluators.__all__)


@pytest.mark.parametrize(
    ("split", "size", "first", "last"),
    [
        pytest.param("test", 164, "HumanEval/0", "HumanEval/163", id="test"),
        pytest.param("validation", 82, "HumanEval/0", "HumanEval/162", id="validation"),
        pytest.param("train", 82, "HumanEval/1", "HumanEval/163", id="train"),
    ],
)
def test_humaneval_builtin_splits(split, size, first, last):
    records = load_records(DatasetRef(uri="builtin:humaneval", split=split))

    assert (len(records), records[0]["task_id"], records[-1]["task_id"]) == (size, first, last)
    assert {"prompt", "test", "entry_point", "canonical_solution"} <= set(records[0])


def test_humaneval_train_and_validation_partition_test():
    def ids(split):
        return {
            r["task_id"] for r in load_records(DatasetRef(uri="builtin:humaneval", split=split))
        }

    assert ids("train") | ids("validation") == ids("test")
    assert not ids("train") & ids("validation")


def test_humaneval_rejects_unknown_split():
    from mendel.datasets.humaneval import humaneval

    with pytest.raises(DatasetError, match="no split 'dev'"):
        humaneval("dev")
