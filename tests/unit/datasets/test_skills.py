"""The procedural skills: exact answers, disjoint deterministic splits, loader shape."""

from __future__ import annotations

import pytest

from mendel.api.references import DatasetRef
from mendel.datasets import builtin_names, load_records
from mendel.datasets.skills import DEFAULT_SIZES, SKILLS, generate, solve, split_of

SPLITS = ("train", "validation", "test")


def _independent_answer(task: str, prompt: str) -> str:
    # Recomputed here without the module's solvers, so a bug there cannot hide.
    body = prompt.removesuffix("=")
    if task == "add":
        left, right = body.split("+")
        return str(int(left) + int(right))
    operand = body.split(" ", 1)[1]
    return {"sort": "".join(sorted(operand)), "reverse": operand[::-1], "copy": operand}[task]


@pytest.mark.parametrize("task", SKILLS)
@pytest.mark.parametrize("split", SPLITS)
def test_generate_answers_are_correct(task: str, split: str) -> None:
    for record in generate(task, split, 300):
        assert record["answer"] == _independent_answer(task, record["prompt"])


@pytest.mark.parametrize("task", SKILLS)
def test_generate_splits_are_disjoint_and_hash_assigned(task: str) -> None:
    prompts = {split: {r["prompt"] for r in generate(task, split, 700)} for split in SPLITS}
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    for split, members in prompts.items():
        assert all(split_of(task, p) == split for p in members)


@pytest.mark.parametrize("task", SKILLS)
def test_generate_is_deterministic(task: str) -> None:
    assert generate(task, "test", 100) == generate(task, "test", 100)
    assert generate(task, "train", 50) == generate(task, "train", 100)[:50]
    assert generate(task, "train", 100) != generate(task, "validation", 100)


@pytest.mark.parametrize("task", SKILLS)
def test_generate_held_out_prompts_are_distinct(task: str) -> None:
    for split in ("validation", "test"):
        records = generate(task, split)
        assert len({r["prompt"] for r in records}) == len(records) == DEFAULT_SIZES[split]


@pytest.mark.parametrize(
    ("task", "prompt", "answer"),
    [
        pytest.param("add", "12+34=", "46", id="add"),
        pytest.param("add", "99+99=", "198", id="add-carry"),
        pytest.param("sort", "sort 3141=", "1134", id="sort"),
        pytest.param("reverse", "rev abcd=", "dcba", id="reverse"),
        pytest.param("copy", "copy a1b2=", "a1b2", id="copy"),
    ],
)
def test_solve_examples(task: str, prompt: str, answer: str) -> None:
    assert solve(task, prompt) == answer


def test_prompts_share_one_format() -> None:
    for task in SKILLS:
        for record in generate(task, "test", 50):
            assert record["prompt"].endswith("=")
            assert 4 <= len(record["prompt"]) <= 14
            assert 1 <= len(record["answer"]) <= 6


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: generate("mul", "train", 1), "unknown skill", id="task"),
        pytest.param(lambda: generate("add", "dev", 1), "unknown split", id="split"),
        pytest.param(lambda: generate("add", "train", -1), "size", id="size"),
        pytest.param(lambda: generate("add", "test", 5000), "distinct", id="too-many"),
        pytest.param(lambda: solve("sort", "rev ab="), "not of the form", id="prompt"),
        pytest.param(lambda: solve("add", "1+x="), "not of the form", id="operand"),
    ],
)
def test_skills_reject_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("task", ["add", "sort", "reverse"])
def test_builtin_loader_returns_records(task: str) -> None:
    assert f"skills-{task}" in builtin_names()
    ref = DatasetRef(uri=f"builtin:skills-{task}", split="validation", limit=8)
    records = load_records(ref)
    assert len(records) == 8
    assert all(set(r) == {"prompt", "answer"} for r in records)
    assert all(isinstance(r["prompt"], str) and isinstance(r["answer"], str) for r in records)
