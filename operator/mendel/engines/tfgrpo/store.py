"""Where a run's work is kept so that a killed run resumes without asking twice.

Each phase of each step writes its output to `step-NNNNN/<phase>.json` once complete;
while it runs, every answered LLM call is appended to `step-NNNNN/<phase>.jsonl` (one JSON
line per call, flushed as it lands). On resume a complete phase is read back, and an
incomplete one replays its journal and calls the LLM only for what is missing. Epoch
orders and evaluations are kept the same way. Files are written atomically (temporary
file, then rename), so a kill mid-write leaves the previous state, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["Journal", "PhaseStore"]


class Journal:
    """Answers of one phase's calls, by key, appended as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the line a kill cut short
                    continue
                self.answers[entry["key"]] = entry["value"]

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def get(self, key: str) -> Any:
        return self.answers.get(key)

    def record(self, key: str, value: Any) -> None:
        """Keep one answer durably before anything else uses it."""
        self.answers[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


class PhaseStore:
    """Phase outputs and journals under one directory (the run's output location)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def step_dir(self, step: int) -> Path:
        return self.root / f"step-{step:05d}"

    def load(self, step: int, phase: str) -> Any | None:
        """A complete phase's output, or None."""
        path = self.step_dir(step) / f"{phase}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def save(self, step: int, phase: str, value: Any) -> Path:
        """Mark a phase complete with its output."""
        return write_json(self.step_dir(step) / f"{phase}.json", value)

    def journal(self, step: int, phase: str) -> Journal:
        return Journal(self.step_dir(step) / f"{phase}.jsonl")

    def epoch_order(self, epoch: int) -> list[int] | None:
        path = self.root / f"epoch-{epoch:03d}-order.json"
        return [int(i) for i in json.loads(path.read_text())] if path.exists() else None

    def save_epoch_order(self, epoch: int, order: list[int]) -> None:
        write_json(self.root / f"epoch-{epoch:03d}-order.json", order)

    def evaluation_journal(self, label: str) -> Journal:
        return Journal(self.root / "evaluations" / f"{label}.jsonl")

    def load_evaluation(self, label: str) -> Any | None:
        path = self.root / "evaluations" / f"{label}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def save_evaluation(self, label: str, value: Any) -> Path:
        return write_json(self.root / "evaluations" / f"{label}.json", value)

    def completed_steps(self) -> list[int]:
        """Steps whose library was saved, in order."""
        return sorted(int(path.parent.name.removeprefix("step-"))
                      for path in self.root.glob("step-*/library.json"))


def write_json(path: Path, value: Any) -> Path:
    """Write atomically: a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(temporary, path)
    return path
