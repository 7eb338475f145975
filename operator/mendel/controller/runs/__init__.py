"""Reconciling a run resource: naming, manifests, observed state, status and the plan.

`manifests`, `multinode`, `library`, `status`, `summary`, `immutable` and `plan` are pure
(no I/O, no clock); `apply` talks to the API server through an injected client; `handlers`
is the thin Kopf layer.
"""

__all__: list[str] = []
