"""Reading the learner's library edits: a schema for servers that enforce one, tolerant
parsing for those that do not, and deterministic rejection of everything invalid.

The reference code crashed on malformed JSON (issue #181) and on invented ids (PR #209),
and silently dropped a step when parsing failed. Here every reply is reduced to a list of
valid `Operation`s plus a count of rejections by reason, so a bad reply costs at most its
own operations: it never raises and never touches the library.

Rejection reasons: truncated (the reply hit max_tokens), malformed_json, not_a_list,
not_an_object, unknown_operation, missing_id, unknown_id, empty_content, too_long,
too_many_operations, not_allowed (an operation the phase does not accept).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mendel.engines.tfgrpo.library import OPERATION_KINDS, Library, Operation, normalise_text

__all__ = ["ParsedOperations", "extract_json", "operations_schema", "parse_operations"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_LINE_COMMENT = re.compile(r"(?m)(^|[^:\"'])//[^\n]*")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_CHARS_PER_WORD = 12
"""Used to bound string lengths in the schema: small models fill unbounded strings until
max_tokens (engines-offline.md 1.3), so every string gets a maxLength."""


@dataclass
class ParsedOperations:
    """The valid operations of one reply and the rejected ones by reason."""

    operations: list[Operation] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    reasoning: str = ""


def operations_schema(library: Library, *, allowed: Collection[str], max_operations: int,
                      max_words: int) -> dict[str, Any]:
    """The JSON schema of a reply: {"reasoning": str, "operations": [...]}.

    Ids are an enum of the library's real ids (or null), so a grammar-constrained server
    cannot invent one; strings are bounded.
    """
    ids: list[Any] = [*library.ids, None]
    operation: dict[str, Any] = {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": [k for k in OPERATION_KINDS if k in allowed]},
            "id": {"enum": ids},
            "content": {"type": "string", "maxLength": max_words * _CHARS_PER_WORD},
        },
        "required": ["operation", "id", "content"],
        "additionalProperties": False,
    }
    if "MERGE" in allowed:
        known: list[Any] = library.ids or [None]
        operation["properties"]["mergedIds"] = {
            "type": "array", "items": {"enum": known}, "maxItems": 8}
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": 400},
            "operations": {"type": "array", "items": operation, "maxItems": max_operations},
        },
        "required": ["reasoning", "operations"],
        "additionalProperties": False,
    }


def extract_json(text: str) -> Any:
    """The first JSON value in a reply: inside a ```json fence if any, tolerating // comments
    and trailing commas (both seen in the reference prompts' own examples).

    Raises:
        ValueError: no JSON object or array could be read.
    """
    candidates = [match.group(1) for match in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder(strict=False)
    for candidate in candidates:
        cleaned = _TRAILING_COMMA.sub(r"\1", _LINE_COMMENT.sub(r"\1", candidate))
        for index, char in enumerate(cleaned):
            if char not in "[{":
                continue
            try:
                value, _ = decoder.raw_decode(cleaned, index)
            except json.JSONDecodeError:
                continue
            return value
    raise ValueError("no JSON object or array in the reply")


def parse_operations(text: str, library: Library, *, allowed: Collection[str],
                     max_operations: int, max_words: int,
                     truncated: bool = False) -> ParsedOperations:
    """Valid operations from a learner reply, checked against `library`.

    Args:
        text: The reply.
        library: What ids may be referenced.
        allowed: Operation kinds this phase accepts (e.g. no MERGE per group).
        max_operations: Operations beyond this many are rejected (too_many_operations).
        max_words: Longest content accepted.
        truncated: The reply hit max_tokens; it is rejected whole, never half-parsed.
    """
    parsed = ParsedOperations()
    if truncated:
        parsed.rejected["truncated"] += 1
        return parsed
    try:
        payload = extract_json(text)
    except ValueError:
        parsed.rejected["malformed_json"] += 1
        return parsed
    items: Any = payload
    if isinstance(payload, dict):
        parsed.reasoning = normalise_text(str(payload.get("reasoning", "")))[:2000]
        items = payload.get("operations", payload.get("experiences"))
        if items is None and "operation" in payload:
            items = [payload]
    if not isinstance(items, list):
        parsed.rejected["not_a_list"] += 1
        return parsed
    for item in items:
        if len(parsed.operations) >= max_operations:
            parsed.rejected["too_many_operations"] += 1
            continue
        operation, reason = _operation(item, library, allowed, max_words)
        if operation is None:
            parsed.rejected[reason] += 1
        else:
            parsed.operations.append(operation)
    return parsed


def _operation(item: Any, library: Library, allowed: Collection[str],
               max_words: int) -> tuple[Operation | None, str]:
    if not isinstance(item, dict):
        return None, "not_an_object"
    kind = str(item.get("operation", item.get("option", ""))).strip().upper()
    kind = {"MODIFY": "UPDATE", "KEEP": "NONE"}.get(kind, kind)
    if kind not in OPERATION_KINDS:
        return None, "unknown_operation"
    if kind not in allowed:
        return None, "not_allowed"
    if kind == "NONE":
        return Operation("NONE"), ""
    target = item.get("id", item.get("modified_from"))
    text = normalise_text(item.get("content", item.get("experience", "")) or "")
    if kind in ("UPDATE", "DELETE"):
        if target in (None, ""):
            return None, "missing_id"
        if library.get(str(target)) is None:
            return None, "unknown_id"
        target = str(target)
    merged: tuple[str, ...] = ()
    if kind == "MERGE":
        listed = item.get("mergedIds", item.get("merged_from"))
        merged = tuple(dict.fromkeys(map(str, listed))) if isinstance(listed, list) else ()
        if len(merged) < 2:
            return None, "missing_id"
        if any(library.get(entry_id) is None for entry_id in merged):
            return None, "unknown_id"
    if kind != "DELETE":
        if not text:
            return None, "empty_content"
        if len(text.split()) > max_words:
            return None, "too_long"
    if kind == "DELETE":
        return Operation("DELETE", target=target), ""
    if kind == "MERGE":
        return Operation("MERGE", text=text, merged=merged), ""
    if kind == "UPDATE":
        return Operation("UPDATE", text=text, target=target), ""
    return Operation("ADD", text=text), ""

