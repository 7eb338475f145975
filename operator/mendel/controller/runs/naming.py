"""Deterministic names, labels and annotations of a run's children.

Every child name is a function of the resource's name, uid and attempt, so a retried or
restarted reconcile always asks for the same objects (get-or-create, never generateName).
Labels are an explicit allow-list: the resource's own labels are never copied, so GitOps
tracking labels (Argo CD's app.kubernetes.io/instance) do not leak onto children.
"""

from __future__ import annotations

import hashlib

from mendel.api.kinds import GROUP

__all__ = [
    "ANNOTATION_ATTEMPT",
    "ANNOTATION_BUDGET",
    "ANNOTATION_GENERATION",
    "ANNOTATION_MLFLOW_RUN_ID",
    "ANNOTATION_PROMPT_URI",
    "ANNOTATION_RUN",
    "ANNOTATION_SPEC_HASH",
    "LABEL_KIND",
    "LABEL_LIBRARY_VERSION",
    "LABEL_NAME",
    "LABEL_ROLE",
    "LABEL_UID",
    "MANAGED_BY",
    "MAX_NAME",
    "ROLE_DRIVER",
    "ROLE_LEADER",
    "ROLE_LIBRARY",
    "ROLE_RENDEZVOUS",
    "ROLE_SPEC",
    "ROLE_WORKER",
    "child_labels",
    "child_name",
    "is_allowed_label",
    "library_name",
    "short_hash",
]

MAX_NAME = 63
MANAGED_BY = "mendel-operator"

LABEL_KIND = f"{GROUP}/kind"
LABEL_NAME = f"{GROUP}/name"
LABEL_UID = f"{GROUP}/uid"
LABEL_ROLE = f"{GROUP}/role"
LABEL_LIBRARY_VERSION = f"{GROUP}/library-version"

ANNOTATION_ATTEMPT = f"{GROUP}/attempt"
ANNOTATION_BUDGET = f"{GROUP}/budget"
ANNOTATION_GENERATION = f"{GROUP}/generation"
ANNOTATION_RUN = f"{GROUP}/run"
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
ANNOTATION_PROMPT_URI = f"{GROUP}/prompt-uri"
ANNOTATION_MLFLOW_RUN_ID = f"{GROUP}/mlflow-run-id"

ROLE_DRIVER = "driver"
ROLE_LEADER = "leader"
ROLE_WORKER = "worker"
ROLE_RENDEZVOUS = "rdzv"
ROLE_SPEC = "spec"
ROLE_LIBRARY = "library"

_ALLOWED_LABEL_PREFIXES = (f"{GROUP}/", "app.kubernetes.io/", "kueue.x-k8s.io/")


def short_hash(*parts: object, length: int = 8) -> str:
    """A stable lower-case hex digest of the parts (for names, never for security)."""
    text = "/".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(name: str, role: str, uid: str, attempt: int) -> str:
    """`<name>-<role>-<hash of uid and attempt>`, at most 63 characters.

    The hash changes with the attempt, so a new attempt (a budget increase on a finished
    run) gets fresh children while a retried reconcile gets the same ones. Names longer than
    the API allows (never with names up to MAX_NAME_LENGTH) are cut before the suffix.
    """
    suffix = f"-{role}-{short_hash(uid, attempt)}"
    return f"{name[: MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def library_name(name: str, configured: str | None) -> str:
    """The ConfigMap an ExperienceLibrary publishes to: spec.library.configMapName, else
    `<name>-library`. Not hashed: people and agents outside Mendel mount it by name."""
    return configured or f"{name}-library"


def child_labels(kind: str, name: str, uid: str, role: str) -> dict[str, str]:
    """The allow-listed labels every child carries (and nothing else of the resource's)."""
    return {
        LABEL_KIND: kind,
        LABEL_NAME: name,
        LABEL_UID: uid,
        LABEL_ROLE: role,
        "app.kubernetes.io/name": "mendel",
        "app.kubernetes.io/component": role,
        "app.kubernetes.io/part-of": kind.lower(),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def is_allowed_label(key: str) -> bool:
    """Whether a label key belongs to the allow-list (used by tests and the Pod patch)."""
    return key.startswith(_ALLOWED_LABEL_PREFIXES)
