"""Lineage of evolved models in MLflow: every accepted child is a LoggedModel that names
its parents, so the ancestry of any model can be walked back to the experts.

Each genome that enters an archive becomes an MLflow LoggedModel (no weights: a recipe
artifact, parameters and per-task scores), tagged with its parents' model ids, the
operator that made it and its seed. Elites and the final model additionally get real
weights. The parent edge lives in tags because MLflow's model-input edges are still a
preview feature; `walk_lineage` reads them back.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlflow import MlflowClient
from mlflow.entities import LoggedModel

__all__ = [
    "LineageNode",
    "LineageRecord",
    "ModelLineage",
    "resolve_model_id",
    "walk_lineage",
]

TAG_GENOME = "mendel.genome_id"
TAG_RUN = "mendel.run_id"
TAG_OPERATOR = "mendel.operator"
TAG_GENERATION = "mendel.generation"
TAG_PARENTS = "mendel.parents"
TAG_PARENT_MODELS = "mendel.parent_models"
TAG_PARENT_WEIGHTS = "mendel.parent_weights"
TAG_SEED = "mendel.seed"
TAG_QUALITY_TASK = "mendel.quality_task"
TAG_CELLS = "mendel.cells"
TAG_HAS_WEIGHTS = "mendel.has_weights"
SCORE_PREFIX = "score/"


class LineageRecord(Protocol):
    """What lineage needs of a genome (the CycleQD engine's frozen Genome satisfies it)."""

    @property
    def id(self) -> str: ...
    @property
    def operator(self) -> str: ...
    @property
    def generation(self) -> int: ...
    @property
    def parents(self) -> tuple[str, ...]: ...
    @property
    def parent_weights(self) -> tuple[float, ...]: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def quality_task(self) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class ModelLineage:
    """Records genomes of one run as LoggedModels and remembers their model ids.

    Args:
        client: An explicitly constructed MLflow client.
        run_id: The run the models come from (their source run).
        experiment_id: That run's experiment.
    """

    client: MlflowClient
    run_id: str
    experiment_id: str
    model_ids: dict[str, str] = field(default_factory=dict)

    def reload(self) -> None:
        """Rebuild genome id -> model id from MLflow (after a restart or a resume)."""
        for model in self._search(f"tags.`{TAG_RUN}` = '{self.run_id}'"):
            genome = model.tags.get(TAG_GENOME)
            if genome:
                self.model_ids[genome] = model.model_id

    def record(self, genome: LineageRecord, scores: Mapping[str, float],
               cells: Mapping[str, Any] | None = None) -> str:
        """Create (once) the LoggedModel of a genome; returns its model id."""
        if genome.id in self.model_ids:
            return self.model_ids[genome.id]
        parents = [self.model_ids[p] for p in genome.parents if p in self.model_ids]
        tags = {
            TAG_GENOME: genome.id,
            TAG_RUN: self.run_id,
            TAG_OPERATOR: genome.operator,
            TAG_GENERATION: str(genome.generation),
            TAG_PARENTS: ",".join(genome.parents),
            TAG_PARENT_MODELS: ",".join(parents),
            TAG_PARENT_WEIGHTS: ",".join(f"{w:.6g}" for w in genome.parent_weights),
            TAG_SEED: "" if genome.seed is None else str(genome.seed),
            TAG_QUALITY_TASK: genome.quality_task or "",
            TAG_CELLS: json.dumps({k: list(v) if isinstance(v, tuple) else v
                                   for k, v in (cells or {}).items()}),
        }
        model = self.client.create_logged_model(
            self.experiment_id, name=_model_name(genome.id), source_run_id=self.run_id,
            tags=tags, model_type="merge-recipe",
        )
        for task, score in scores.items():
            self.client.log_metric(self.run_id, f"{SCORE_PREFIX}{task}", float(score),
                                   step=max(genome.generation, 0), model_id=model.model_id)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "recipe.json").write_text(json.dumps(genome.to_dict(), indent=1))
            self.client.log_model_artifacts(model.model_id, folder)
        self.client.finalize_logged_model(model.model_id, "READY")
        self.model_ids[genome.id] = model.model_id
        return model.model_id

    def attach_weights(self, genome_id: str, model_dir: Path) -> str:
        """Upload a materialised model's files to the genome's LoggedModel."""
        model_id = self.model_ids[genome_id]
        self.client.log_model_artifacts(model_id, str(model_dir))
        self.client.set_logged_model_tags(model_id, {TAG_HAS_WEIGHTS: "true"})
        return model_id

    def _search(self, filter_string: str) -> Iterator[LoggedModel]:
        token = None
        while True:
            page = self.client.search_logged_models(
                [self.experiment_id], filter_string=filter_string, max_results=1000,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return


def _model_name(genome_id: str) -> str:
    return f"genome-{genome_id}"


@dataclass(frozen=True)
class LineageNode:
    """One model in an ancestry tree."""

    model_id: str
    genome_id: str
    operator: str
    generation: int
    scores: dict[str, float]
    has_weights: bool
    parents: tuple[LineageNode, ...]


def resolve_model_id(client: MlflowClient, reference: str) -> str:
    """A LoggedModel id from a model id or a registry URI (models:/name/3, models:/name@a)."""
    if not reference.startswith("models:/"):
        return reference
    name, _, rest = reference.removeprefix("models:/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        version = client.get_model_version(name, rest)
    # Some registry stores keep the LoggedModel id only in the source URI (models:/m-...).
    source = str(version.source or "")
    model_id = version.model_id or (source.removeprefix("models:/")
                                    if source.startswith("models:/m-") else None)
    if not model_id:
        raise ValueError(f"{reference} was not registered from a LoggedModel; no lineage")
    return str(model_id)


def walk_lineage(client: MlflowClient, model_id: str, *, max_depth: int = 64) -> LineageNode:
    """The ancestry tree of a model, following parent tags back to the experts."""
    cache: dict[str, LineageNode] = {}
    return _node(client, model_id, cache, max_depth)


def _node(client: MlflowClient, model_id: str, cache: dict[str, LineageNode],
          depth: int) -> LineageNode:
    if model_id in cache:
        return cache[model_id]
    model = client.get_logged_model(model_id)
    tags = model.tags
    parent_ids = [p for p in tags.get(TAG_PARENT_MODELS, "").split(",") if p]
    parents = tuple(_node(client, p, cache, depth - 1) for p in parent_ids) if depth > 0 else ()
    scores = {m.key.removeprefix(SCORE_PREFIX): m.value for m in (model.metrics or [])
              if m.key.startswith(SCORE_PREFIX)}
    node = LineageNode(
        model_id=model_id,
        genome_id=tags.get(TAG_GENOME, model.name),
        operator=tags.get(TAG_OPERATOR, "?"),
        generation=int(tags.get(TAG_GENERATION, "-1")),
        scores=scores,
        has_weights=tags.get(TAG_HAS_WEIGHTS) == "true",
        parents=parents,
    )
    cache[model_id] = node
    return node
