"""Operator-wide settings: defaults a resource may leave out, scope, and cluster features.

One frozen value object, built once by `mendel operator` (or a test) and kept in the Kopf
memo; nothing here reads the environment on import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Capabilities", "OperatorConfig", "normalize_uri"]

DEFAULT_IMAGE = "ghcr.io/mendel-dev/mendel-worker:0.1.0"


@dataclass(frozen=True)
class Capabilities:
    """What the API server's Job controller supports, decided from its version."""

    minor: int = 20
    pod_failure_policy: bool = False
    indexed_jobs: bool = False
    immutable_config_maps: bool = True

    @classmethod
    def from_version(cls, major: str, minor: str) -> Capabilities:
        """Capabilities of a server that reports `major`.`minor` ("1", "27+")."""
        digits = "".join(ch for ch in minor if ch.isdigit())
        number = int(digits) if major == "1" and digits else 99
        return cls(
            minor=number,
            pod_failure_policy=number >= 26,  # beta and on by default from 1.26
            indexed_jobs=number >= 22,  # beta and on by default from 1.22 (GA 1.24)
            immutable_config_maps=number >= 19,
        )


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of one operator process."""

    image: str = DEFAULT_IMAGE
    tracking_uri: str | None = None
    tracking_url: str | None = None
    """Base URL people open for run links, when it differs from tracking_uri."""
    namespaces: tuple[str, ...] = ("default",)
    clusterwide: bool = False
    reconcile_interval: float = 30.0
    metrics_port: int | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    request_timeout: float = 30.0
    watch_timeout: int = 300
    allowed_tracking_uris: tuple[str, ...] | None = None
    """The only MLflow servers the operator connects to (its credentials go there).

    None means just `tracking_uri`. A resource's spec.tracking.mlflow.trackingUri outside
    this list is refused, so a user cannot aim the operator's token or file writes (a
    `sqlite:///` path) anywhere the platform team did not choose."""
    worker_service_account: str | None = None
    """ServiceAccount of worker Pods whose resource names none (a token-less account)."""

    @property
    def allowed_uris(self) -> tuple[str, ...]:
        """The tracking servers the operator may talk to (default: its own URI only)."""
        if self.allowed_tracking_uris is not None:
            return self.allowed_tracking_uris
        return (self.tracking_uri,) if self.tracking_uri else ()

    def tracking_allowed(self, uri: str) -> bool:
        """Whether the operator may talk to this tracking server."""
        return normalize_uri(uri) in {normalize_uri(a) for a in self.allowed_uris}


def normalize_uri(uri: str) -> str:
    """A tracking URI compared without surrounding blanks or a trailing slash."""
    return uri.strip().rstrip("/")
