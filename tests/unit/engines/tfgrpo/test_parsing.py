"""Every way a learner reply can be wrong is rejected, counted, and never raises."""

from __future__ import annotations

import json

import jsonschema
import pytest

from mendel.engines.tfgrpo.library import Library
from mendel.engines.tfgrpo.parsing import extract_json, operations_schema, parse_operations

LIB = Library.from_json([{"id": "G0", "text": "When adding, carry."},
                         {"id": "G1", "text": "When multiplying, check signs."}])
GROUP = ("ADD", "UPDATE", "DELETE", "NONE")


def parse(text: str, *, allowed: tuple[str, ...] = GROUP, max_operations: int = 3,
          max_words: int = 8, truncated: bool = False):  # type: ignore[no-untyped-def]
    return parse_operations(text, LIB, allowed=allowed, max_operations=max_operations,
                            max_words=max_words, truncated=truncated)


def ops(*items: dict) -> str:  # type: ignore[type-arg]
    return json.dumps({"reasoning": "r", "operations": list(items)})


def test_valid_reply_gives_operations() -> None:
    parsed = parse(ops({"operation": "ADD", "id": None, "content": "When stuck, restate it."},
                       {"operation": "UPDATE", "id": "G1", "content": "When multiplying, recheck."},
                       {"operation": "DELETE", "id": "G0", "content": ""}))
    assert [op.kind for op in parsed.operations] == ["ADD", "UPDATE", "DELETE"]
    assert not parsed.rejected


@pytest.mark.parametrize(("reply", "reason"), [
    ("not json at all", "malformed_json"),
    ('{"operations": [{"operation": "ADD", "id": null, "content": "x"', "malformed_json"),
    ('{"operations": "ADD something"}', "not_a_list"),
    (ops({"operation": "REWRITE", "id": "G0", "content": "x"}), "unknown_operation"),
    (ops({"operation": "UPDATE", "id": "G7", "content": "When x, y."}), "unknown_id"),
    (ops({"operation": "DELETE", "id": None}), "missing_id"),
    (ops({"operation": "ADD", "id": None, "content": "   "}), "empty_content"),
    (ops({"operation": "ADD", "id": None, "content": " ".join(["word"] * 9)}), "too_long"),
    (ops({"operation": "MERGE", "mergedIds": ["G0", "G1"], "content": "m"}), "not_allowed"),
    (ops("just a string"), "not_an_object"),
])
def test_each_malformed_output_is_rejected_by_reason(reply: str, reason: str) -> None:
    parsed = parse(reply)
    assert parsed.operations == []
    assert parsed.rejected == {reason: 1}


def test_truncated_reply_is_rejected_whole_even_if_it_parses() -> None:
    parsed = parse(ops({"operation": "ADD", "id": None, "content": "When a, b."}), truncated=True)
    assert parsed.operations == [] and parsed.rejected == {"truncated": 1}


def test_operations_beyond_the_limit_are_rejected() -> None:
    item = {"operation": "ADD", "id": None, "content": "When a, b."}
    parsed = parse(ops(item, item, item, item), max_operations=2)
    assert len(parsed.operations) == 2 and parsed.rejected == {"too_many_operations": 2}


def test_merge_with_an_invented_id_is_rejected_and_a_valid_one_kept() -> None:
    allowed = ("ADD", "UPDATE", "DELETE", "MERGE", "NONE")
    bad = parse(ops({"operation": "MERGE", "mergedIds": ["G0", "G9"], "content": "m"}),
                allowed=allowed)
    assert bad.rejected == {"unknown_id": 1}
    good = parse(ops({"operation": "MERGE", "mergedIds": ["G0", "G1", "G0"], "content": "m"}),
                 allowed=allowed)
    assert good.operations[0].merged == ("G0", "G1")


def test_tolerant_extraction_of_fenced_commented_json() -> None:
    reply = """Here is my plan:
```json
[
  // keep the first one
  {"option": "modify", "experience": "When adding, carry tens.", "modified_from": "G0"},
]
```"""
    assert extract_json(reply)[0]["option"] == "modify"
    parsed = parse(reply)
    assert parsed.operations[0].kind == "UPDATE" and parsed.operations[0].target == "G0"


def test_schema_lists_real_ids_only_and_bounds_strings() -> None:
    schema = operations_schema(LIB, allowed=GROUP, max_operations=2, max_words=8)
    good = {"reasoning": "r", "operations": [{"operation": "UPDATE", "id": "G1", "content": "x"}]}
    jsonschema.validate(good, schema)
    invented = {"reasoning": "r",
                "operations": [{"operation": "UPDATE", "id": "G5", "content": "x"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(invented, schema)
    item = schema["properties"]["operations"]["items"]
    assert item["properties"]["content"]["maxLength"] > 0
