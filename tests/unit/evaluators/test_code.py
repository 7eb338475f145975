"""pass@1 on real HumanEval problems, with scripted completions run in the real sandbox."""

from __future__ import annotations

import pytest
from tests.unit.evaluators.fakes import ScriptedGenerator, spec

from mendel.api.references import DatasetRef
from mendel.datasets import load_records
from mendel.evaluators import CodeEvaluator, SandboxUnavailable, build_evaluator
from mendel.evaluators.code import CODE_STOP, humaneval_program
from mendel.evaluators.sandbox import Sandbox, SandboxError

HUMANEVAL = load_records(DatasetRef(uri="builtin:humaneval", split="test"))[:5]


def _evaluator(records=HUMANEVAL, **fields) -> CodeEvaluator:
    fields.setdefault("timeoutSeconds", 5)
    evaluator = build_evaluator(
        spec(type="code", dataset={"uri": "builtin:humaneval", "split": "validation"}, **fields),
        "humaneval",
        records=records,
    )
    assert isinstance(evaluator, CodeEvaluator)
    return evaluator


def test_code_canonical_solutions_pass():
    model = ScriptedGenerator({r["prompt"]: r["canonical_solution"] for r in HUMANEVAL})

    assert _evaluator().evaluate(model) == 1.0
    [(prompts, _, stop)] = model.generate_calls
    assert sorted(prompts) == sorted(r["prompt"] for r in HUMANEVAL)
    assert stop == CODE_STOP


def test_code_wrong_and_missing_completions_fail():
    first, second = HUMANEVAL[:2]
    model = ScriptedGenerator(
        {first["prompt"]: first["canonical_solution"], second["prompt"]: "    return None\n"}
    )

    assert _evaluator(HUMANEVAL[:3]).evaluate(model) == pytest.approx(1 / 3)


def test_code_completion_is_cut_where_the_function_ends():
    record = HUMANEVAL[0]
    tail = "\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n"
    completion = record["canonical_solution"] + "\ndef unrelated():\n    pass\n" + tail

    program = humaneval_program(record, completion)

    assert "unrelated" not in program and "__main__" not in program
    assert _evaluator([record]).evaluate(ScriptedGenerator({record["prompt"]: completion})) == 1.0


def test_code_prompt_template_wraps_the_prompt_but_not_the_program():
    record = HUMANEVAL[1]
    model = ScriptedGenerator({f"# Python\n{record['prompt']}": record["canonical_solution"]})

    score = _evaluator([record], promptTemplate="# Python\n{prompt}").evaluate(model)

    assert score == 1.0


def test_code_infinite_loop_counts_as_failure():
    record = HUMANEVAL[2]
    model = ScriptedGenerator({record["prompt"]: "    while True:\n        pass\n"})

    assert _evaluator([record], timeoutSeconds=1).evaluate(model) == 0.0


def test_code_sandbox_failure_is_not_a_zero_score():
    class BrokenSandbox(Sandbox):
        def run_many(self, sources, limits):
            raise SandboxError("no process slots")

    evaluator = build_evaluator(
        spec(type="code"), "humaneval", records=HUMANEVAL[:1], sandbox=BrokenSandbox()
    )

    with pytest.raises(SandboxUnavailable, match="'humaneval'.*no process slots"):
        evaluator.evaluate(ScriptedGenerator())


def test_code_limits_follow_the_spec():
    evaluator = _evaluator(timeoutSeconds=3, memoryMb=512)

    assert (evaluator.limits.timeout_seconds, evaluator.limits.memory_mb) == (3.0, 512)
    assert evaluator.split == "validation"
    assert evaluator.needs_model_dir is False
