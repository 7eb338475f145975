from __future__ import annotations

import sys
import time

import pytest
from tests.unit.evaluators.fakes import ScriptedGenerator, spec

from mendel.evaluators import CommandError, CommandEvaluator, build_evaluator
from mendel.evaluators.command import last_json_object


def _evaluator(script: str, timeout: int = 10) -> CommandEvaluator:
    command = [sys.executable, "-c", script, "{model}", "--task={task}"]
    evaluator = build_evaluator(
        spec(type="command", command=command, timeoutSeconds=timeout), "math"
    )
    assert isinstance(evaluator, CommandEvaluator)
    return evaluator


def test_command_substitutes_model_and_task_and_reads_last_object(tmp_path):
    script = (
        "import json, sys\n"
        "print('loading', sys.argv[1])\n"
        "print(json.dumps({'score': 0.1}))\n"
        f"ok = sys.argv[1:] == [{str(tmp_path)!r}, '--task=math']\n"
        "print(json.dumps({'score': 0.75 if ok else 0.0, 'detail': {'n': 4}}))\n"
    )
    evaluator = _evaluator(script)

    assert evaluator.needs_model_dir is True
    assert evaluator.split is None
    assert evaluator.evaluate(ScriptedGenerator(), model_dir=tmp_path) == 0.75


@pytest.mark.parametrize(
    ("script", "message"),
    [
        pytest.param("print('no json')", "no JSON object", id="no-json"),
        pytest.param("print('{\"score\": 1.5}')", r"in \[0, 1\]", id="out-of-range"),
        pytest.param("print('{\"score\": true}')", "must be a number", id="bool"),
        pytest.param("print('{\"accuracy\": 0.5}')", "must be a number, not None", id="no-score"),
        pytest.param(
            "import sys; print('boom', file=sys.stderr); sys.exit(3)",
            "exited with 3: boom",
            id="exit-code",
        ),
    ],
)
def test_command_reports_bad_results_with_task_name(tmp_path, script, message):
    with pytest.raises(CommandError, match=message) as caught:
        _evaluator(script).evaluate(ScriptedGenerator(), model_dir=tmp_path)
    assert caught.value.task == "math"


def test_command_needs_model_dir():
    with pytest.raises(CommandError, match="saved on disk"):
        _evaluator("print('{}')").evaluate(ScriptedGenerator())


def test_command_missing_program_is_a_command_error(tmp_path):
    evaluator = build_evaluator(spec(type="command", command=["/nonexistent/harness"]), "math")

    with pytest.raises(CommandError, match="cannot run"):
        evaluator.evaluate(ScriptedGenerator(), model_dir=tmp_path)


def test_command_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "grandchild-survived"
    grandchild = f"import time; time.sleep(2); open({str(marker)!r}, 'w')"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()

    with pytest.raises(CommandError, match="ran past 1 s"):
        _evaluator(script, timeout=1).evaluate(ScriptedGenerator(), model_dir=tmp_path)

    assert time.monotonic() - started < 10
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('log\n{"score": 0.5}\n', {"score": 0.5}, id="single"),
        pytest.param(
            '{"score": 0.1}\n{"score": 0.2, "x": {"y": 1}}\ndone',
            {"score": 0.2, "x": {"y": 1}},
            id="last-top-level",
        ),
        pytest.param('{"score":\n  0.3\n}', {"score": 0.3}, id="multi-line"),
        pytest.param("[1, 2] {broken", None, id="none"),
    ],
)
def test_last_json_object(text, expected):
    assert last_json_object(text) == expected
