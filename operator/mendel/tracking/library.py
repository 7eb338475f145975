"""An experience library in MLflow's Prompt Registry, once per (run, step).

The final library is the product of an ExperienceLibrary run. As a prompt version it can
be loaded by any agent with `mlflow.genai.load_prompt("prompts:/<name>@<alias>")`, shown
and compared in MLflow's UI, and linked to the run that learned it. A resumed run that
already registered its library finds that version again by its tags instead of adding a
duplicate.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

__all__ = ["RegisteredLibrary", "register_library"]

TAG_RUN = "mendel.run_id"
TAG_STEP = "mendel.step"
TAG_SIZE = "mendel.library_size"


@dataclass(frozen=True)
class RegisteredLibrary:
    """Where a library was registered."""

    name: str
    version: int
    alias: str

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


def register_library(client: Any, *, name: str, alias: str, text: str, run_id: str, step: int,
                     size: int, extra_tags: dict[str, str] | None = None) -> RegisteredLibrary:
    """Register `text` as a version of prompt `name` (or find the one this run and step
    already registered), point `alias` at it and link it to the run."""
    version = _existing(client, name, run_id, step)
    if version is None:
        tags = {TAG_RUN: run_id, TAG_STEP: str(step), TAG_SIZE: str(size), **(extra_tags or {})}
        created = client.register_prompt(
            name=name, template=text or "None",
            commit_message=f"Experience library after step {step} ({size} experiences)",
            tags=tags)
        version = int(created.version)
    client.set_prompt_alias(name, alias, version)
    registered = RegisteredLibrary(name, version, alias)
    # An older server without prompt-run links still has the tags that link them.
    with contextlib.suppress(Exception):
        client.link_prompt_version_to_run(run_id, client.get_prompt_version(name, version))
    return registered


def _existing(client: Any, name: str, run_id: str, step: int) -> int | None:
    try:
        found = client.search_prompt_versions(name)
    except Exception:  # no prompt of that name yet
        return None
    versions = getattr(found, "prompt_versions", found) or []
    for version in versions:
        tags = getattr(version, "tags", {}) or {}
        if tags.get(TAG_RUN) == run_id and tags.get(TAG_STEP) == str(step):
            return int(version.version)
    return None
