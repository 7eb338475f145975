"""Operator-wide wiring: settings, the shared context in the Kopf memo, probes, metrics
and the registry that ties every handler together."""

__all__: list[str] = []
