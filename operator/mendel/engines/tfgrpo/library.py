"""The experience library and the deterministic application of edits to it.

The learner LLM only proposes edits; this module decides. Every proposed operation is
checked against the library as it stands (ids that exist, entries within the word limit,
room left), applied in a fixed order, and the library is renumbered G0, G1, ... after each
step as the reference code does. Ids are therefore not stable across steps: provenance
follows each entry's `added_step` and `updated_step`, not its id.

Bound: the library never holds more than `max_experiences` entries. The step's
consolidation prompt tells the learner how much room is left and asks it to merge or
delete before adding when full; an ADD that would still overflow is rejected
("library_full") rather than silently evicting an entry, since nothing in a rollout says
which old experience is the least useful. Deletes and merges are applied before adds, so
a plan that frees room and then adds fits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mendel.tracking.contract import render_experiences

__all__ = [
    "OPERATION_KINDS",
    "ApplyOutcome",
    "Experience",
    "Library",
    "Operation",
    "apply_operations",
    "normalise_text",
]

OperationKind = Literal["ADD", "UPDATE", "DELETE", "MERGE", "NONE"]
OPERATION_KINDS: tuple[OperationKind, ...] = ("ADD", "UPDATE", "DELETE", "MERGE", "NONE")
_ORDER = {"DELETE": 0, "MERGE": 1, "UPDATE": 2, "ADD": 3, "NONE": 4}
"""Application order within a step: what frees room first, then edits, then additions."""


def normalise_text(text: str) -> str:
    """One line, single spaces: the form stored and injected (and rendered reversibly)."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Experience:
    """One entry: its id in the current numbering, its text, and where it came from."""

    id: str
    text: str
    added_step: int = 0
    updated_step: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "addedStep": self.added_step,
                "updatedStep": self.updated_step}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experience:
        return cls(id=str(data["id"]), text=str(data["text"]),
                   added_step=int(data.get("addedStep", 0)),
                   updated_step=int(data.get("updatedStep", 0)))


@dataclass(frozen=True)
class Library:
    """An ordered, immutable set of experiences."""

    entries: tuple[Experience, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [entry.id for entry in self.entries]

    def get(self, entry_id: str) -> Experience | None:
        return next((entry for entry in self.entries if entry.id == entry_id), None)

    def render(self) -> str:
        """The text injected into the agent's prompt ('' when empty)."""
        return render_experiences([(entry.id, entry.text) for entry in self.entries])

    def renumbered(self) -> Library:
        """The same entries with ids G0, G1, ... in order."""
        return Library(tuple(replace(entry, id=f"G{index}")
                             for index, entry in enumerate(self.entries)))

    def to_json(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.entries]

    @classmethod
    def from_json(cls, data: Iterable[dict[str, Any]]) -> Library:
        return cls(tuple(Experience.from_json(item) for item in data))


@dataclass(frozen=True)
class Operation:
    """One validated edit. `target` names an existing id (UPDATE, DELETE); `merged` the
    ids a MERGE replaces by `text`."""

    kind: OperationKind
    text: str = ""
    target: str | None = None
    merged: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operation": self.kind}
        if self.target is not None:
            out["id"] = self.target
        if self.merged:
            out["mergedIds"] = list(self.merged)
        if self.text:
            out["content"] = self.text
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        kind = str(data["operation"])
        if kind not in OPERATION_KINDS:
            raise ValueError(f"unknown operation {kind!r}")
        return cls(kind=kind, text=str(data.get("content", "")), target=data.get("id"),
                   merged=tuple(data.get("mergedIds", ())))


@dataclass
class ApplyOutcome:
    """The library after a step's operations, and what happened to each operation."""

    library: Library
    applied: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)


def apply_operations(library: Library, operations: Sequence[Operation], *, step: int,
                     max_experiences: int) -> ApplyOutcome:
    """Apply a step's operations deterministically and renumber.

    Operations were validated against `library` when parsed; conflicts between them are
    settled here: an entry deleted or merged away cannot be updated afterwards
    ("target_gone"), the first UPDATE of an entry wins ("duplicate_update"), an ADD whose
    text already exists is dropped ("duplicate"), and an ADD beyond `max_experiences` is
    rejected ("library_full").

    Returns:
        The new library (renumbered) and counts of applied operations by kind and of
        rejected ones by reason.
    """
    outcome = ApplyOutcome(library=library)
    entries: dict[str, Experience] = {entry.id: entry for entry in library.entries}
    order: list[str] = list(entries)
    updated: set[str] = set()
    fresh = 0
    for operation in sorted(operations, key=lambda op: _ORDER[op.kind]):  # stable sort
        kind = operation.kind
        if kind == "NONE":
            outcome.applied["NONE"] += 1
        elif kind == "DELETE":
            if operation.target not in entries:
                outcome.rejected["target_gone"] += 1
                continue
            del entries[operation.target]
            outcome.applied["DELETE"] += 1
        elif kind == "MERGE":
            alive = [entry_id for entry_id in operation.merged if entry_id in entries]
            if len(alive) < 2:
                outcome.rejected["target_gone"] += 1
                continue
            first = entries[alive[0]]
            for entry_id in alive:
                del entries[entry_id]
            merged_id = f"merge-{fresh}"
            fresh += 1
            entries[merged_id] = Experience(merged_id, operation.text, first.added_step, step)
            order.insert(order.index(alive[0]), merged_id)
            outcome.applied["MERGE"] += 1
        elif kind == "UPDATE":
            target = operation.target
            if target not in entries:
                outcome.rejected["target_gone"] += 1
            elif target in updated:
                outcome.rejected["duplicate_update"] += 1
            else:
                entries[target] = replace(entries[target], text=operation.text,
                                          updated_step=step)
                updated.add(target)
                outcome.applied["UPDATE"] += 1
        elif kind == "ADD":
            if any(entry.text.casefold() == operation.text.casefold()
                   for entry in entries.values()):
                outcome.rejected["duplicate"] += 1
            elif len(entries) >= max_experiences:
                outcome.rejected["library_full"] += 1
            else:
                new_id = f"new-{fresh}"
                fresh += 1
                entries[new_id] = Experience(new_id, operation.text, step, step)
                order.append(new_id)
                outcome.applied["ADD"] += 1
    kept = tuple(entries[entry_id] for entry_id in order if entry_id in entries)
    outcome.library = Library(kept).renumbered()
    return outcome
