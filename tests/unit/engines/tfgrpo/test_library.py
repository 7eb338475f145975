"""Applying edits to the library: deterministic, bounded, renumbered."""

from __future__ import annotations

from mendel.engines.tfgrpo.library import Library, Operation, apply_operations
from mendel.tracking.contract import parse_experiences


def library(*texts: str) -> Library:
    return Library.from_json([{"id": f"G{i}", "text": t} for i, t in enumerate(texts)])


def test_each_kind_applied_and_renumbered() -> None:
    start = library("a", "b", "c", "d")
    ops = [Operation("ADD", text="e"), Operation("UPDATE", text="B2", target="G1"),
           Operation("DELETE", target="G0"), Operation("MERGE", text="CD", merged=("G2", "G3")),
           Operation("NONE")]
    outcome = apply_operations(start, ops, step=3, max_experiences=10)
    assert [(e.id, e.text) for e in outcome.library.entries] == [
        ("G0", "B2"), ("G1", "CD"), ("G2", "e")]
    assert dict(outcome.applied) == {"ADD": 1, "UPDATE": 1, "DELETE": 1, "MERGE": 1, "NONE": 1}
    assert not outcome.rejected
    added = outcome.library.entries[2]
    assert (added.added_step, added.updated_step) == (3, 3)


def test_the_same_operations_in_another_order_give_the_same_library() -> None:
    start = library("a", "b", "c")
    ops = [Operation("ADD", text="x"), Operation("DELETE", target="G2"),
           Operation("UPDATE", text="A", target="G0")]
    first = apply_operations(start, ops, step=1, max_experiences=3).library
    second = apply_operations(start, list(reversed(ops)), step=1, max_experiences=3).library
    assert first == second
    assert [e.text for e in first.entries] == ["A", "b", "x"]


def test_library_never_exceeds_its_bound_but_deletes_make_room_first() -> None:
    full = library("a", "b")
    outcome = apply_operations(full, [Operation("ADD", text="c"), Operation("ADD", text="d")],
                               step=1, max_experiences=2)
    assert len(outcome.library) == 2
    assert outcome.rejected["library_full"] == 2
    freed = apply_operations(full, [Operation("ADD", text="c"), Operation("DELETE", target="G0")],
                             step=1, max_experiences=2)
    assert [e.text for e in freed.library.entries] == ["b", "c"]


def test_conflicts_are_settled_without_raising() -> None:
    start = library("a", "b", "c")
    ops = [Operation("DELETE", target="G0"), Operation("UPDATE", text="A", target="G0"),
           Operation("UPDATE", text="B1", target="G1"), Operation("UPDATE", text="B2", target="G1"),
           Operation("ADD", text="C"), Operation("MERGE", text="m", merged=("G0", "G2"))]
    outcome = apply_operations(start, ops, step=2, max_experiences=10)
    assert outcome.rejected == {"target_gone": 2, "duplicate_update": 1, "duplicate": 1}
    assert [e.text for e in outcome.library.entries] == ["B1", "c"]


def test_rendered_library_round_trips_through_the_shared_format() -> None:
    lib = library("When adding, carry the tens.", "When  unsure,\ncheck again.")
    assert parse_experiences(lib.render()) == [
        ("G0", "When adding, carry the tens."), ("G1", "When unsure, check again.")]
    assert Library.from_json(lib.to_json()) == lib
