"""Publishing an ExperienceLibrary's final library to a ConfigMap, decided from data only.

The workload registers the final library in MLflow's Prompt Registry and tags the parent
run with its URI (`contract.TAG_LIBRARY_PROMPT_URI`). `publication` compares that tag with
the library ConfigMaps the index keeps and says whether a pass has something to publish, so
a steady resource costs no request at all. The reconciler then reads the ConfigMap by name
(the index does not see ConfigMaps that are not Mendel's), `ownership` says whether it may
be written, and `config_map` builds it from the prompt's text. A ConfigMap this resource
does not own is never overwritten: the resource gets a Warning Event instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mendel.api.envelope import SpecEnvelope
from mendel.api.experience import ExperienceLibrarySpec
from mendel.controller.runs import naming
from mendel.controller.runs.manifests import RunRef, owner_reference
from mendel.controller.runs.observed import Observed
from mendel.tracking import contract
from mendel.tracking.runs import RunSnapshot

__all__ = ["JSON_KEY", "MAX_DATA_BYTES", "TEXT_KEY", "Notice", "Ownership", "Publication",
           "config_map", "conflict", "library_version", "mark_published", "not_loaded",
           "ownership", "parse_prompt_uri", "publication", "published", "published_notice",
           "too_large"]

TEXT_KEY = "experiences.txt"
"""The library as the agent reads it (contract.render_experiences), for mounting as a file."""
JSON_KEY = "library.json"
"""The same entries as a JSON list of {"id", "text"}, for programs."""
MAX_DATA_BYTES = 1_000_000
"""The API server refuses objects over 1 MiB; this leaves room for the metadata."""

# Only a numbered version: an alias (`@production`) could move after the run, and a URI
# naming another server is never followed (the client's own registry is used).
_PROMPT_URI = re.compile(r"^prompts:/(?P<name>[^/@\s]+)/(?P<version>[0-9]+)$")

Ownership = Literal["absent", "ours", "current", "foreign"]


@dataclass(frozen=True)
class Publication:
    """One library version to publish, and where."""

    config_map: str
    prompt_uri: str
    prompt_name: str
    prompt_version: str
    version: int
    """The library version (the workload's step number), for the version label."""
    run_id: str


@dataclass(frozen=True)
class Notice:
    """An Event to post on the resource about publishing."""

    warning: bool
    reason: str
    message: str


def parse_prompt_uri(uri: str) -> tuple[str, str] | None:
    """(name, version) of `prompts:/<name>/<version>`; None for any other shape."""
    found = _PROMPT_URI.match(uri.strip())
    return (found["name"], found["version"]) if found else None


def library_version(run: RunSnapshot) -> int:
    """The published library's version: the tag the workload sets with the prompt URI,
    else the latest version metric, else 0."""
    tag = run.tags.get(contract.TAG_LIBRARY_VERSION, "")
    if tag.isdigit():
        return int(tag)
    return max(0, int(run.metrics.get(contract.METRIC_LIBRARY_VERSION, 0)))


def _target(run: RunRef, spec: SpecEnvelope | None) -> str | None:
    if run.kind != "ExperienceLibrary" or not isinstance(spec, ExperienceLibrarySpec):
        return None
    return naming.library_name(run.name, spec.library.config_map_name)


def publication(run: RunRef, spec: SpecEnvelope | None, mlflow: RunSnapshot,
                observed: Observed) -> Publication | None:
    """What this pass must publish: the tagged library, unless the ConfigMap holds it.

    Args:
        run: The resource.
        spec: Its parsed spec (None when invalid: nothing is published).
        mlflow: The parent run snapshot, whose tags name the registered library.
        observed: The children, with the library ConfigMaps the index keeps.

    Returns:
        The Publication, or None when there is no library yet or it is published already.
    """
    target = _target(run, spec)
    uri = mlflow.tags.get(contract.TAG_LIBRARY_PROMPT_URI, "")
    parsed = parse_prompt_uri(uri)
    if target is None or parsed is None or not mlflow.run_id:
        return None
    wanted = Publication(config_map=target, prompt_uri=uri.strip(), prompt_name=parsed[0],
                         prompt_version=parsed[1], version=library_version(mlflow),
                         run_id=mlflow.run_id)
    for view in observed.libraries:
        if view.owned and view.name == target and \
                (view.prompt_uri, view.version) == (wanted.prompt_uri, str(wanted.version)):
            return None
    return wanted


def published(run: RunRef, spec: SpecEnvelope | None, observed: Observed) -> str | None:
    """The name of the ConfigMap holding the resource's library, once the operator wrote it
    (seen through the index); None before, and while another object holds the name."""
    target = _target(run, spec)
    if target is None:
        return None
    return next((v.name for v in observed.libraries if v.owned and v.name == target), None)


def mark_published(status: dict[str, Any], name: str | None) -> None:
    """Set status.library.configMap to the ConfigMap the operator has written (seen by its
    index), or drop it: it never repeats what the workload or an older status claimed."""
    block = {k: v for k, v in (status.get("library") or {}).items() if k != "configMap"}
    if name:
        block["configMap"] = name
    status.pop("library", None)
    if block:
        status["library"] = block


def ownership(existing: Mapping[str, Any] | None, run: RunRef,
              wanted: Publication) -> Ownership:
    """Whether the ConfigMap read by name may be written, and whether it needs to be.

    Ours means a library ConfigMap owned by this resource; anything else of that name (a
    user's ConfigMap, another resource's library, our own spec snapshot) is foreign.
    """
    if existing is None:
        return "absent"
    meta = existing.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = meta.get("ownerReferences") or []
    if labels.get(naming.LABEL_ROLE) != naming.ROLE_LIBRARY or \
            not any(o.get("uid") == run.uid for o in owners):
        return "foreign"
    held = (meta.get("annotations") or {}).get(naming.ANNOTATION_PROMPT_URI)
    if held == wanted.prompt_uri and labels.get(naming.LABEL_LIBRARY_VERSION) == \
            str(wanted.version):
        return "current"
    return "ours"


def config_map(run: RunRef, wanted: Publication, text: str,
               resource_version: str | None = None) -> dict[str, Any]:
    """The library ConfigMap: the prompt's text and its entries as JSON.

    Args:
        run: The resource that owns it (a controller reference: it goes with the resource).
        wanted: The library version being published.
        text: The prompt version's template, in contract.render_experiences format.
        resource_version: The existing ConfigMap's, to replace it only if unchanged since
            it was read; None to create it.

    Returns:
        The ConfigMap, ready for the API server.
    """
    labels = naming.child_labels(run.kind, run.name, run.uid, naming.ROLE_LIBRARY)
    labels[naming.LABEL_LIBRARY_VERSION] = str(wanted.version)
    meta: dict[str, Any] = {
        "name": wanted.config_map,
        "namespace": run.namespace,
        "labels": labels,
        "annotations": {naming.ANNOTATION_PROMPT_URI: wanted.prompt_uri,
                        naming.ANNOTATION_MLFLOW_RUN_ID: wanted.run_id},
        "ownerReferences": [owner_reference(run)],
    }
    if resource_version:
        meta["resourceVersion"] = resource_version
    entries = [{"id": entry_id, "text": entry}
               for entry_id, entry in contract.parse_experiences(text)]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {TEXT_KEY: text,
                 JSON_KEY: json.dumps(entries, indent=2, ensure_ascii=False) + "\n"},
    }


def too_large(body: Mapping[str, Any]) -> bool:
    """Whether the ConfigMap's data is over what the API server stores."""
    data = body.get("data") or {}
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in data.items()) > MAX_DATA_BYTES


def published_notice(body: Mapping[str, Any], wanted: Publication) -> Notice:
    """The Normal Event once a library version is written."""
    size = len(json.loads((body.get("data") or {}).get(JSON_KEY) or "[]"))
    return Notice(False, "LibraryPublished",
                  f"published {wanted.prompt_uri} ({size} experiences, version "
                  f"{wanted.version}) to ConfigMap {wanted.config_map}")


def conflict(run: RunRef, wanted: Publication) -> Notice:
    """The Warning when the ConfigMap's name is taken by an object this resource does not
    own."""
    return Notice(True, "LibraryConfigMapConflict",
                  f"ConfigMap {wanted.config_map} exists and is not this {run.kind}'s "
                  f"library; it was left untouched and {wanted.prompt_uri} is not published. "
                  "Set spec.library.configMapName to a free name, or delete that ConfigMap.")


def not_loaded(wanted: Publication, reason: str) -> Notice:
    """The Warning when the library cannot be published yet (retried on the next pass)."""
    return Notice(True, "LibraryNotPublished",
                  f"{wanted.prompt_uri} is not published to ConfigMap {wanted.config_map} "
                  f"yet: {reason}; retrying")
