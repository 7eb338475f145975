"""The agent's Python tool, run through the real sandbox."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from mendel.api.experience import Tools
from mendel.evaluators.sandbox import Sandbox
from mendel.llm.tools import PythonTool


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(workers=2)


@pytest.fixture
def tool(sandbox):
    return PythonTool(timeout_seconds=2, memory_mb=256, sandbox=sandbox)


def call(tool: PythonTool, code: str) -> str:
    return asyncio.run(tool.run(json.dumps({"code": code})))


def test_python_tool_definition_is_an_openai_function_with_one_code_argument(tool):
    definition = json.loads(json.dumps(tool.definition))

    assert definition["type"] == "function"
    function = definition["function"]
    assert function["name"] == "python"
    assert function["parameters"]["properties"] == {
        "code": {"type": "string", "description": "The complete program."}
    }
    assert function["parameters"]["required"] == ["code"]
    assert "2 seconds" in function["description"]


def test_python_tool_from_spec_takes_the_time_limit():
    tool = PythonTool.from_spec(Tools(python=True, timeout_seconds=7))

    assert tool.limits.timeout_seconds == 7
    assert "7 seconds" in tool.definition["function"]["description"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param("print(6 * 7)", "42", id="print"),
        pytest.param("import math\nprint(math.comb(10, 3))\nprint('ok')", "120\nok", id="lines"),
        pytest.param("x = 1", "(the program printed nothing)", id="no-output"),
        pytest.param("import sys; print('oops', file=sys.stderr)", "oops", id="stderr"),
    ],
)
def test_python_tool_returns_what_the_program_prints(tool, code, expected):
    assert call(tool, code) == expected


def test_python_tool_shows_output_then_the_traceback_of_the_program_only(tool):
    output = call(tool, "print('before')\n1 / 0")

    lines = output.splitlines()
    assert lines[:3] == [
        "before",
        "Traceback (most recent call last):",
        '  File "program.py", line 2, in <module>',
    ]
    assert lines[-1] == "ZeroDivisionError: division by zero"


def test_python_tool_keeps_nothing_between_calls(tool):
    call(tool, "x = 41")

    assert "NameError" in call(tool, "print(x + 1)")


def test_python_tool_stops_a_program_at_its_time_limit(tool):
    started = time.monotonic()

    output = call(tool, "print('so far')\nwhile True:\n    pass")

    assert output == "so far\n[stopped: the program ran past its time limit of 2 seconds]"
    assert time.monotonic() - started < 6


def test_python_tool_enforces_the_memory_limit(tool):
    assert "MemoryError" in call(tool, "x = bytearray(1 << 30)")


def test_python_tool_has_no_network(tool):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        output = call(tool, f"import socket\nsocket.create_connection(('127.0.0.1', {port}))")

    assert "not allowed" in output


def test_python_tool_truncates_long_output_with_a_note(sandbox):
    tool = PythonTool(max_output_chars=500, sandbox=sandbox)

    output = call(tool, "for i in range(5000):\n    print(i)")

    note, _, shown = output.partition("\n")
    assert note == "[output truncated: only its last 500 characters are shown]"
    assert len(shown) == 500
    assert shown.endswith("4998\n4999")


def test_python_tool_reports_an_exit_status_without_message(tool):
    assert call(tool, "import os\nos._exit(3)") == "[the program ended with status 3]"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param("print(1)", "not valid JSON", id="not-json"),
        pytest.param('{"code": "print(1)"', "not valid JSON", id="cut-json"),
        pytest.param('{"program": "print(1)"}', 'no string field "code"', id="no-code"),
        pytest.param('{"code": 5}', 'no string field "code"', id="code-not-text"),
        pytest.param('["print(1)"]', 'no string field "code"', id="not-an-object"),
        pytest.param('{"code": "  "}', "the code is empty", id="empty"),
    ],
)
def test_python_tool_explains_unusable_arguments(tool, arguments, message):
    output = asyncio.run(tool.run(arguments))

    assert output.startswith("Error: ") and message in output
    assert '{"code": "print(6 * 7)"}' in output


def test_python_tool_runs_calls_concurrently_without_blocking_the_loop(tool):
    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        counter = asyncio.create_task(ticker())
        outputs = await asyncio.gather(
            *(tool.run(json.dumps({"code": f"import time; time.sleep(0.5); print({n})"}))
              for n in range(4))
        )
        counter.cancel()
        return outputs, ticks

    outputs, ticks = asyncio.run(scenario())

    assert outputs == ["0", "1", "2", "3"]
    assert ticks >= 10
