"""Reward verifiers: math, exact, regex, an LLM judge (scripted) and a command (real sandbox)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time

import pytest

from mendel.api.experience import Verifier
from mendel.evaluators.sandbox import Sandbox, probe_isolation
from mendel.evaluators.verifiers import (
    RewardCommandError,
    RewardVerifier,
    Verdict,
    VerifierError,
    VerifierSpecError,
    build_verifier,
)
from mendel.llm.chat import ChatError, ChatReply, Sampling, UsageMeter

RECORD = {"question": "What is 7 * 3?", "answer": "21"}
PYTHON = os.path.realpath(sys.executable)


def spec(**fields) -> Verifier:
    return Verifier.model_validate(fields)


def score(verifier: RewardVerifier, response: str, record=RECORD) -> Verdict:
    return asyncio.run(verifier.score(record, response))


class ScriptedJudge:
    """A ChatBackend that answers with the scripted replies in turn (or raises them)."""

    name = "scripted-judge"
    supports_json_schema = False

    def __init__(self, *replies: str | ChatReply | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list, Sampling]] = []
        self.usage = UsageMeter()

    async def chat(self, messages, sampling, *, json_schema=None, tools=None) -> ChatReply:
        self.calls.append((list(messages), sampling))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply if isinstance(reply, ChatReply) else ChatReply(reply)

    async def aclose(self) -> None:
        return None


# --- math -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "response", "reward"),
    [
        pytest.param("21", "7 * 3 = 21, so $\\boxed{21}$.", 1.0, id="boxed"),
        pytest.param("21", "Seven threes make 21, so the answer is 21", 1.0, id="plain-final"),
        pytest.param("21", "7 * 3 = 21", 1.0, id="last-number"),
        pytest.param("-4", "3 - 7 = -4", 1.0, id="negative"),
        pytest.param("\\frac{1}{2}", "The answer is 0.5", 1.0, id="fraction-as-decimal"),
        pytest.param("\\sqrt{2}/2", "$\\boxed{\\frac{1}{\\sqrt{2}}}$", 1.0, id="symbolic"),
        pytest.param("21", "7 * 3 = 24, so the answer is 24", 0.0, id="wrong"),
        pytest.param("21", "$\\boxed{-21}$", 0.0, id="wrong-sign"),
        pytest.param("21", "I do not know.", 0.0, id="no-number"),
        pytest.param("21", "%%% {{{ \\boxed{ ]]] \\frac{", 0.0, id="garbage"),
        pytest.param("21", "", 0.0, id="empty"),
        pytest.param("}{", "21", 0.0, id="garbage-gold"),
    ],
)
def test_math_verifier_rewards(answer, response, reward):
    verifier = build_verifier(spec(type="math"))

    assert score(verifier, response, {"question": "q", "answer": answer}) == Verdict(reward)


def test_math_verifier_accepts_numeric_answers_in_records():
    assert score(build_verifier(spec()), "so 21", {"question": "q", "answer": 21}).reward == 1.0


def test_math_verifier_gives_up_on_pathological_answers_within_its_time_limit():
    started = time.monotonic()

    verdict = score(build_verifier(spec()), "$\\boxed{21^{10^{9}} - 21^{10^{9}} + 1}$")

    assert verdict.reward == 0.0
    assert time.monotonic() - started < 10


def test_math_verifier_scores_many_rollouts_at_once():
    verifier = build_verifier(spec())
    responses = [f"the answer is {n}" for n in range(15, 27)]

    async def all_at_once():
        return await asyncio.gather(*(verifier.score(RECORD, r) for r in responses))

    verdicts = asyncio.run(all_at_once())

    assert [v.reward for v in verdicts] == [float(n == 21) for n in range(15, 27)]


def test_math_verifier_refuses_to_run_off_the_main_thread():
    errors: list[BaseException] = []

    def in_thread():
        try:
            score(build_verifier(spec()), "21")
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()

    assert len(errors) == 1 and isinstance(errors[0], VerifierError)
    assert "main thread" in str(errors[0])


def test_math_verifier_keeps_an_interval_timer_armed_by_someone_else():
    fired: list[int] = []
    previous_handler = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    previous_timer = signal.setitimer(signal.ITIMER_REAL, 60.0)
    try:
        score(build_verifier(spec()), "the answer is 21")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous_handler)

    assert 50.0 < remaining <= 60.0
    assert not fired


# --- exact and regex ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reward"),
    [
        pytest.param("21", 1.0, id="equal"),
        pytest.param("  21\n", 1.0, id="trimmed"),
        pytest.param("21.", 0.0, id="punctuation"),
        pytest.param("the answer is 21", 0.0, id="sentence"),
    ],
)
def test_exact_verifier_compares_trimmed_text(response, reward):
    assert score(build_verifier(spec(type="exact")), response).reward == reward


@pytest.mark.parametrize(
    ("response", "reward"),
    [
        pytest.param("work... Answer: 21", 1.0, id="match"),
        pytest.param("Answer:  21 \nAnswer: 3", 1.0, id="first-match-trimmed"),
        pytest.param("Answer: 22", 0.0, id="wrong"),
        pytest.param("21", 0.0, id="no-match"),
    ],
)
def test_regex_verifier_compares_the_first_group(response, reward):
    verifier = build_verifier(spec(type="regex", pattern=r"Answer:([^\n]*)"))

    assert score(verifier, response).reward == reward


def test_regex_verifier_with_an_optional_group_that_did_not_take_part():
    verifier = build_verifier(spec(type="regex", pattern=r"Answer(?:: (\d+))?"))

    assert score(verifier, "Answer").reward == 0.0


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param("(unclosed", "not a valid regular expression", id="does-not-compile"),
        pytest.param(r"\d+", "has no group", id="no-group"),
    ],
)
def test_regex_verifier_rejects_unusable_patterns_naming_the_field(pattern, message):
    with pytest.raises(VerifierSpecError, match=message) as caught:
        build_verifier(spec(type="regex", pattern=pattern))

    assert "verifier.pattern" in str(caught.value)


@pytest.mark.parametrize("kind", ["math", "exact", "regex"])
def test_verifiers_refuse_a_record_without_answer(kind):
    verifier = build_verifier(spec(type=kind, pattern="(x)"))

    with pytest.raises(VerifierError, match="no 'answer'"):
        score(verifier, "21", {"question": "What is 7 * 3?"})


# --- llmJudge -------------------------------------------------------------------------------


def judge_spec(**judge) -> Verifier:
    backend = {"endpoint": {"url": "http://judge:8000/v1", "model": "judge"}, **judge}
    return spec(type="llmJudge", judge=backend)


@pytest.mark.parametrize(
    ("reply", "reward", "reasoning"),
    [
        pytest.param("Both say 21.\nGRADE: CORRECT", 1.0, "Both say 21.", id="correct"),
        pytest.param("It says 24.\nGRADE: INCORRECT", 0.0, "It says 24.", id="incorrect"),
        pytest.param("Same value.\n\n**GRADE:** correct", 1.0, "Same value.", id="markdown-case"),
        pytest.param(
            "Unsure; GRADE: CORRECT would need 21.\nGRADE: INCORRECT\n",
            0.0,
            "Unsure; GRADE: CORRECT would need 21.",
            id="last-grade-line-counts",
        ),
        pytest.param("GRADE: CORRECT", 1.0, None, id="no-explanation"),
    ],
)
def test_judge_verifier_reads_the_grade_line(reply, reward, reasoning):
    judge = ScriptedJudge(reply)

    verdict = score(build_verifier(judge_spec(), judge=judge), "7 * 3 = 21")

    assert verdict == Verdict(reward, reasoning)


def test_judge_verifier_sends_question_answer_and_response_with_the_spec_sampling():
    judge = ScriptedJudge("fine\nGRADE: CORRECT")
    verifier = build_verifier(judge_spec(temperature=0.5, maxTokens=300), judge=judge)

    score(verifier, "my answer is {21}")

    [(messages, sampling)] = judge.calls
    prompt = "\n".join(message["content"] for message in messages)
    assert "What is 7 * 3?" in prompt and "\n21\n" in prompt and "my answer is {21}" in prompt
    assert "GRADE: CORRECT" in prompt and "GRADE: INCORRECT" in prompt
    assert (sampling.temperature, sampling.max_tokens) == (0.5, 300)


def test_judge_verifier_uses_the_sampling_it_is_given():
    judge = ScriptedJudge("GRADE: CORRECT")
    verifier = build_verifier(judge_spec(), judge=judge, judge_sampling=Sampling(seed=7))

    score(verifier, "21")

    assert judge.calls[0][1] == Sampling(seed=7)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        pytest.param(ChatReply("The response is right."), "no grade line", id="no-grade"),
        pytest.param(ChatReply("GRADE: MAYBE"), "no grade line", id="other-grade"),
        pytest.param(ChatReply("Let me think", finish_reason="length"), "cut", id="truncated"),
    ],
)
def test_judge_verifier_scores_zero_when_it_cannot_read_a_grade(reply, said):
    verdict = score(build_verifier(judge_spec(), judge=ScriptedJudge(reply)), "21")

    assert verdict.reward == 0.0
    assert said in (verdict.reasoning or "")


def test_judge_verifier_lets_a_failed_call_propagate():
    judge = ScriptedJudge(ChatError("timeout", "no reply in 600 s"))

    with pytest.raises(ChatError) as caught:
        score(build_verifier(judge_spec(), judge=judge), "21")

    assert caught.value.reason == "timeout"


def test_judge_verifier_needs_a_backend():
    with pytest.raises(VerifierSpecError, match="judge backend"):
        build_verifier(judge_spec())


# --- command, through the real sandbox -------------------------------------------------------

SCRIPT = """
import json, os, socket, sys, time
mode = sys.argv[1]
data = json.load(sys.stdin)
print("scoring", data["record"].get("id"), "...")
if mode == "grade":
    ok = data["response"].strip().endswith(data["answer"])
    print(json.dumps({"reward": 1.0 if ok else 0.0, "reasoning": "checked the last word"}))
elif mode == "fraction":
    print('{"reward": 0.25}')
elif mode == "sandboxed":
    port = int(data["record"]["port"])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        online = True
    except OSError:
        online = False
    secret = "MENDEL_TEST_SECRET" in os.environ
    print(json.dumps({"reward": 0.0 if online or secret else 1.0}))
elif mode == "sleep":
    time.sleep(60)
elif mode == "crash":
    sys.exit("the checker broke")
elif mode == "silent":
    pass
elif mode == "out-of-range":
    print('{"reward": 1.5}')
elif mode == "not-a-number":
    print('{"reward": "yes"}')
elif mode == "no-reward":
    print('{"score": 1}')
"""


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(workers=2)


@pytest.fixture
def command(tmp_path, sandbox):
    script = tmp_path / "reward.py"
    script.write_text(SCRIPT)

    def build(mode: str, timeout: int = 10) -> RewardVerifier:
        return build_verifier(
            spec(type="command", command=[PYTHON, str(script), mode], timeoutSeconds=timeout),
            sandbox=sandbox,
        )

    return build


def test_command_verifier_reads_the_last_json_object(command):
    verifier = command("grade")
    record = {**RECORD, "id": 3}

    assert score(verifier, "so it is 21", record) == Verdict(1.0, "checked the last word")
    assert score(verifier, "so it is 24", record) == Verdict(0.0, "checked the last word")
    assert score(command("fraction"), "anything").reward == 0.25


def test_command_verifier_scores_many_rollouts_at_once(command):
    verifier = command("grade")

    async def all_at_once():
        return await asyncio.gather(*(verifier.score(RECORD, str(n)) for n in (20, 21, 22, 21)))

    assert [v.reward for v in asyncio.run(all_at_once())] == [0.0, 1.0, 0.0, 1.0]


def test_command_verifier_stops_a_program_at_its_time_limit(command):
    started = time.monotonic()

    with pytest.raises(RewardCommandError, match="ran past its 1 s"):
        score(command("sleep", timeout=1), "21")

    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        pytest.param("crash", "exited with 1: the checker broke", id="non-zero-exit"),
        pytest.param("silent", "no JSON object", id="no-output"),
        pytest.param("out-of-range", r"in \[0, 1\], not 1.5", id="out-of-range"),
        pytest.param("not-a-number", "must be a number, not 'yes'", id="not-a-number"),
        pytest.param("no-reward", "must be a number, not None", id="no-reward"),
    ],
)
def test_command_verifier_rejects_failures_and_bad_output(command, mode, message):
    with pytest.raises(RewardCommandError, match=message):
        score(command(mode), "21")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["no-such-reward-program"], id="not-on-path"),
        pytest.param(["/nonexistent/reward"], id="absolute"),
    ],
)
def test_command_verifier_refuses_a_missing_program_when_built(argv):
    with pytest.raises(VerifierSpecError, match="verifier.command: program .* not found"):
        build_verifier(spec(type="command", command=argv))


@pytest.mark.skipif(
    "namespaces" not in probe_isolation(PYTHON), reason="needs root or user namespaces"
)
def test_command_verifier_runs_without_network_or_credentials(command, monkeypatch):
    monkeypatch.setenv("MENDEL_TEST_SECRET", "hunter2")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        record = {**RECORD, "port": server.getsockname()[1]}

        verdict = score(command("sandboxed"), "21", record)

    assert verdict.reward == 1.0


def test_command_verifier_sends_the_whole_record(tmp_path, sandbox):
    script = tmp_path / "echo.py"
    script.write_text(
        "import json, sys\n"
        "data = json.load(sys.stdin)\n"
        "print(json.dumps({'reward': 1, 'reasoning': json.dumps(data, sort_keys=True)}))\n"
    )
    verifier = build_verifier(spec(type="command", command=[PYTHON, str(script)]), sandbox=sandbox)
    record = {"question": "Name it.", "answer": 7, "extra": ["é", 1]}

    verdict = score(verifier, "seven ✓", record)

    assert json.loads(verdict.reasoning or "") == {
        "question": "Name it.",
        "answer": "7",
        "response": "seven ✓",
        "record": {"question": "Name it.", "answer": 7, "extra": ["é", 1]},
    }
