"""What the data-synthesis LLM is asked, and how its replies are read (internal to
`mendel.engines.clara.synthesis`).

Every structured reply comes with a JSON schema, which a grammar-constrained server
enforces; every string in it is bounded, since small models fill unbounded strings until
max_tokens. Servers that ignore schemas get the same format in words, and the readers
accept what such models tend to write instead: a fenced block, trailing commas, the paper's
{"Question1": ...} keys, a plain-text answer, or a verdict in prose. A reply that cannot be
read raises `Unreadable` with the reason the engine counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mendel.engines.tfgrpo.parsing import extract_json

__all__: list[str] = []

NOT_IN_DOCUMENT = "not in the document"
"""The answer that says the document does not hold one; its pair is dropped."""
MAX_TEXT = 300
"""Longest question or answer a schema allows."""

SYSTEM = ("You turn one document into study material. Use only what the document says, "
          "never outside knowledge.")
_TASKS = {
    "simple": (
        "Write short questions about the document. Each asks for one or two facts it states, "
        "makes sense to a reader who has not seen it, and differs from every other question. "
        "Together they should ask about every important fact."),
    "complex": (
        "Write questions that can only be answered by combining two or more facts from "
        "different parts of the document: following one fact to another, comparing, counting "
        "or adding up, or ordering events in time or by cause. No yes/no questions, no two "
        "alike, each clear to a reader who has not seen the document."),
}


class Unreadable(ValueError):
    """A reply without the expected content; `reason` is what the engine counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def questions_prompt(document: str, kind: str, limit: int) -> str:
    """Simple (one or two facts each) or complex (multi-hop) questions."""
    return (f"Document:\n{document}\n\n{_TASKS[kind]}\n"
            f'Reply with JSON: {{"questions": ["...", ...]}}, at most {limit} questions.')


def answer_prompt(document: str, question: str) -> str:
    return (f"Document:\n{document}\n\nQuestion: {question}\n\nAnswer from the document alone, "
            "in as few words as possible. If the document does not give the answer, answer "
            f'exactly "{NOT_IN_DOCUMENT}". Reply with JSON: {{"answer": "..."}}')


def judge_prompt(document: str, question: str, answer: str) -> str:
    return (f"Document:\n{document}\n\nQuestion: {question}\nProposed answer: {answer}\n\n"
            "Is the proposed answer correct, complete and supported by the document? "
            'Reply with JSON: {"judgment": "correct"} or {"judgment": "incorrect"}')


def coverage_prompt(document: str, pairs: Sequence[tuple[str, str]], limit: int) -> str:
    listed = "\n".join(f"{n}. {q} -> {a}" for n, (q, a) in enumerate(pairs, 1))
    return (f"Document:\n{document}\n\nQuestions already asked, with their answers:\n"
            f"{listed or '(none)'}\n\nCount the facts of the document that none of these asks "
            "about, and write a question for each (one or two facts per question). Reply with "
            'JSON: {"missing": <that count>, "questions": ["...", ...]}, at most '
            f'{limit} questions; {{"missing": 0, "questions": []}} when every fact is asked '
            "about.")


def paraphrase_prompt(document: str) -> str:
    return ("Rewrite the document below in your own words. Change the sentence structure and "
            "order freely, but keep every fact, number and name, add nothing, and keep its "
            f"point of view. Reply with the rewritten text only.\n\nDocument:\n{document}")


def paraphrase_check_prompt(document: str, paraphrase: str) -> str:
    return (f"Original:\n{document}\n\nRewrite:\n{paraphrase}\n\nDoes the rewrite state every "
            "fact of the original, and nothing the original does not say? "
            'Reply with JSON: {"verdict": "yes"} or {"verdict": "no"}')


def questions_schema(limit: int, *, with_count: bool = False) -> dict[str, Any]:
    """{"questions": [...]}, led by {"missing": n} for a coverage check."""
    items = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
    properties: dict[str, Any] = {}
    if with_count:
        properties["missing"] = {"type": "integer", "minimum": 0}
    properties["questions"] = {"type": "array", "items": items, "maxItems": limit}
    return {"type": "object", "additionalProperties": False, "required": list(properties),
            "properties": properties}


def object_schema(key: str, choices: Sequence[str] | None = None) -> dict[str, Any]:
    """{key: one of `choices`}, or {key: a bounded string}."""
    value: dict[str, Any] = ({"enum": list(choices)} if choices
                             else {"type": "string", "maxLength": MAX_TEXT})
    return {"type": "object", "additionalProperties": False, "required": [key],
            "properties": {key: value}}


def read_json(text: str) -> Any:
    try:
        return extract_json(text)
    except ValueError:
        raise Unreadable("malformed_json") from None


def read_questions(value: Any, limit: int) -> list[str]:
    """The questions of {"questions": [...]}, a bare list, or {"Question1": ..., ...}."""
    if isinstance(value, dict):
        listed = value.get("questions")
        value = listed if isinstance(listed, list) else [
            item for key, item in value.items() if key.lower().startswith("question")]
    if not isinstance(value, list):
        raise Unreadable("wrong_shape")
    return [" ".join(q.split()) for q in value if isinstance(q, str) and q.strip()][:limit]


def read_missing_count(value: Any) -> int | None:
    """The count of unasked facts a coverage reply states ('missing', or the paper's
    'Number of Supplementary Questions'), if it states one."""
    if isinstance(value, dict):
        for key, item in value.items():
            named = key.lower() == "missing" or "number" in key.lower()
            if named and isinstance(item, int) and not isinstance(item, bool):
                return item
    return None


def read_answer(text: str) -> str:
    """{"answer": ...}, or a plain-text answer (an 'Answer:' prefix removed)."""
    if text.lstrip().startswith(("{", "```")):
        value = read_json(text)
        if not isinstance(value, dict) or not isinstance(value.get("answer"), str):
            raise Unreadable("wrong_shape")
        text = value["answer"]
    return " ".join(re.sub(r"^\s*answer\s*:", "", text, flags=re.I).split())


def read_choice(text: str, key: str, choices: Sequence[str]) -> str:
    """A one-word verdict, lower case: the JSON value of `key`, or else the first of
    `choices` named in the reply's prose."""
    try:
        value = extract_json(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and str(value.get(key, "")).strip().lower() in choices:
        return str(value[key]).strip().lower()
    match = re.search(rf"\b({'|'.join(choices)})\b", text, re.I)
    if match is None:
        raise Unreadable("no_verdict")
    return match.group(1).lower()
