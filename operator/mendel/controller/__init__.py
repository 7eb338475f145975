"""The Kubernetes operator: Kopf handlers over pure planning and manifest code.

`mendel.controller.runs` reconciles the three run kinds (QDEvolution, ExperienceLibrary,
CompressorTraining) into Jobs; `mendel.controller.runtime` holds operator-wide wiring
(settings, probes, metrics, the handler registry). Nothing here imports the GPU stack.
"""

__all__: list[str] = []
