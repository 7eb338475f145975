"""QDEvolution: CycleQD, quality-diversity evolution over merged LLMs (Kuroki et al., ICLR 2025).

K tasks each own a MAP-Elites archive whose quality is that task's score and whose cells
are the binned scores of the other tasks. Each generation the quality task cycles, two
elites are drawn from its archive, merged in task-vector space, mutated along an expert's
singular directions, and the child is scored on every task and offered to every archive.
Defaults follow the paper; where its public code differs, the paper wins.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mendel.api.base import (
    ApiModel,
    FieldValueError,
    cel,
    immutable,
    increase_only,
    require_unique,
)
from mendel.api.envelope import RoleResources, SpecEnvelope
from mendel.api.evaluator import Evaluator
from mendel.api.references import ModelRef

__all__ = [
    "Aggregation",
    "Algorithm",
    "Budget",
    "Checkpointing",
    "Crossover",
    "Descriptor",
    "ExpertModel",
    "Mutation",
    "QDEvolutionResources",
    "QDEvolutionSpec",
    "Sampling",
    "Task",
]

_NAME = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"
MAX_ARCHIVE_CELLS = 1_000_000
PAPER = "https://arxiv.org/abs/2410.14735"


class ExpertModel(ModelRef):
    """A model fine-tuned from the base model on one skill."""

    name: str = Field(
        description="Short name of the expert, used by tasks[].expert and in lineage.",
        min_length=1,
        max_length=32,
        pattern=_NAME,
    )


class Descriptor(ApiModel):
    """How a task's score is binned when it serves as a behaviour descriptor."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("has(self.min) == has(self.max)", "set both min and max, or neither"),
                cel("!has(self.min) || self.min < self.max", "min must be below max"),
            ]
        }
    }

    bins: int = Field(default=15, description="Number of equal-width bins.", ge=2, le=100)
    min: float | None = Field(
        default=None,
        description="Lower edge of the first bin. Default (with max unset): 85% of the "
        "weakest expert's score on this task.",
        ge=0.0,
        le=1.0,
    )
    max: float | None = Field(
        default=None,
        description="Upper edge of the last bin. Default: 115% of the strongest expert's "
        "score on this task (capped at 1).",
        ge=0.0,
        le=1.0,
    )

    @model_validator(mode="after")
    def _range(self) -> Descriptor:
        if (self.min is None) != (self.max is None):
            raise ValueError("set both min and max, or neither (then the experts' scores decide)")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Task(ApiModel):
    """One skill: its evaluator, the expert that holds it, and its descriptor bins."""

    name: str = Field(
        description="Task name, unique within the resource.",
        min_length=1,
        max_length=32,
        pattern=_NAME,
    )
    expert: str = Field(
        description="Name of the expert trained for this task; its task vector's singular "
        "directions drive mutation while this task is the quality.",
        max_length=32,
    )
    evaluator: Evaluator = Field(description="How a model is scored on this task.")
    descriptor: Descriptor = Field(
        default_factory=Descriptor, description="Binning of this task's score as a descriptor."
    )


class Crossover(ApiModel):
    """How two parents are merged (in task-vector space)."""

    method: Literal["linear", "ties", "dareLinear", "dareTies"] = Field(
        default="linear",
        description="linear: the paper's normalised linear merge of the parents' task "
        "vectors; ties / dareLinear / dareTies: sparsified merges (TIES-Merging, DARE).",
    )
    coefficient_mean: float = Field(
        default=1.0,
        description="Mean of each parent's merge coefficient w ~ N(mean, std^2); the child "
        "is base + sum_i w_i/sum(w) * tau_i.",
        ge=-10.0,
        le=10.0,
    )
    coefficient_std: float = Field(
        default=0.3,
        description="Standard deviation of the merge coefficients; larger explores more.",
        ge=0.0,
        le=10.0,
    )
    density: float = Field(
        default=0.5,
        description="ties / dare only: fraction of each task vector's entries kept.",
        gt=0.0,
        le=1.0,
    )


class Mutation(ApiModel):
    """How a child is pushed beyond its parents."""

    method: Literal["svd", "gaussian", "none"] = Field(
        default="svd",
        description="svd: add U diag(w*S) V^T along the singular directions of the quality "
        "task's expert task vector, w ~ U[0, rate] (paper); gaussian: add N(0, std^2) noise.",
    )
    rate: float = Field(
        default=0.1, description="svd: upper bound of the per-direction weight w.", ge=0.0, le=1.0
    )
    rank: int | None = Field(
        default=None,
        description="svd: keep only the top-r singular directions per matrix (saves memory); "
        "unset keeps full rank as in the paper.",
        ge=1,
        le=65536,
    )
    std: float = Field(
        default=0.0003, description="gaussian: noise standard deviation.", ge=0.0, le=1.0
    )


class Sampling(ApiModel):
    """How parents are chosen from the quality task's archive."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.alphaLow < self.alphaHigh", "alphaLow must be below alphaHigh")
            ]
        }
    }

    method: Literal["elite", "random"] = Field(
        default="elite",
        description="elite: weight each elite by prod_i(alphaLow + norm(x_i)*(alphaHigh - "
        "alphaLow)) over its quality and descriptors (paper); random: uniform.",
    )
    alpha_low: float = Field(default=0.5, description="Elite weight floor.", ge=0.0, le=10.0)
    alpha_high: float = Field(default=0.8, description="Elite weight ceiling.", ge=0.0, le=10.0)

    @model_validator(mode="after")
    def _ordered(self) -> Sampling:
        if self.alpha_low >= self.alpha_high:
            raise ValueError(f"alphaLow ({self.alpha_low}) must be below alphaHigh "
                             f"({self.alpha_high})")
        return self


class Aggregation(ApiModel):
    """How the final model is made from the archives' elites (paper section 3.4)."""

    temperature: float = Field(
        default=1.0,
        description="The final model is base + sum_k softmax(f/temperature)_k * tau_k over "
        "the best elite of each task's archive.",
        gt=0.0,
        le=100.0,
    )


class Algorithm(ApiModel):
    """The evolutionary operators."""

    crossover: Crossover = Field(default_factory=Crossover, description="Merging two parents.")
    mutation: Mutation = Field(default_factory=Mutation, description="Mutating the child.")
    sampling: Sampling = Field(default_factory=Sampling, description="Choosing parents.")
    cycle_interval: int = Field(
        default=1,
        description="Generations before the quality task moves to the next task.",
        ge=1,
        le=1000,
    )
    aggregation: Aggregation = Field(
        default_factory=Aggregation, description="Building the final model."
    )
    children_per_generation: int = Field(
        default=1,
        description="Children bred per generation from the same archives, evaluated at "
        "once (one per GPU of the driver Pod) and then offered to the archives in order. 1 "
        "is the paper's one child per generation; set it to resources.driver.gpus to keep "
        "every GPU busy. The result of a seed depends on this value, never on the number "
        "of GPUs.",
        ge=1,
        le=256,
    )


class Budget(ApiModel):
    """How much evolution to run."""

    generations: int = Field(
        default=1200,
        description="Generations to run, each breeding algorithm.childrenPerGeneration "
        "children (the paper runs 1200 one-child generations for 3 tasks). May be raised on "
        "a finished run to resume it.",
        ge=1,
        le=1_000_000,
        json_schema_extra=increase_only("budget.generations"),
    )
    max_failed_evaluations: int = Field(
        default=10,
        description="Children whose evaluation may crash before the run fails.",
        ge=0,
        le=100_000,
    )


class Checkpointing(ApiModel):
    """How often the run saves what it needs to resume."""

    every_generations: int = Field(
        default=10,
        description="Save archives, genomes, RNG state and the generation counter this often.",
        ge=1,
        le=100_000,
    )


class QDEvolutionResources(ApiModel):
    """Compute per role."""

    driver: RoleResources = Field(
        default_factory=RoleResources,
        description="The driver Pod: one evolution process with its resident model per GPU "
        "(as many as algorithm.childrenPerGeneration can keep busy), one on CPU.",
    )


class QDEvolutionSpec(SpecEnvelope):
    """A CycleQD run: experts in, an archive of merged models and a final model out."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.tasks.all(t, self.experts.exists(e, e.name == t.expert))",
                    "every tasks[].expert must name an entry of experts",
                )
            ]
        }
    }

    base_model: ModelRef = Field(
        description="The model the experts were fine-tuned from; task vectors are taken "
        "against it.",
        json_schema_extra=immutable("baseModel"),
    )
    experts: list[ExpertModel] = Field(
        description="Two or more experts, each fine-tuned from baseModel on one skill, with "
        "the same architecture.",
        min_length=2,
        max_length=8,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **immutable("experts"),
        },
    )
    tasks: list[Task] = Field(
        description="Two or more tasks; each has its own archive, and the others' scores are "
        "its descriptors.",
        min_length=2,
        max_length=8,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **immutable("tasks"),
        },
    )
    algorithm: Algorithm = Field(
        default_factory=Algorithm,
        description="Crossover, mutation, sampling and aggregation settings.",
        json_schema_extra=immutable("algorithm"),
    )
    budget: Budget = Field(default_factory=Budget, description="How many generations to run.")
    checkpoint: Checkpointing = Field(
        default_factory=Checkpointing, description="Checkpoint interval."
    )
    precision: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Dtype of the resident model used for evaluation."
    )
    resources: QDEvolutionResources = Field(
        default_factory=QDEvolutionResources,
        description="Compute for the driver Pod.",
        json_schema_extra=immutable("resources"),
    )

    @property
    def processes(self) -> int:
        """Evolution processes in the driver Pod: one per GPU, but no more than there are
        children per generation to evaluate at once; one on CPU (gpus 0)."""
        gpus = self.resources.driver.gpus
        return max(1, min(gpus, self.algorithm.children_per_generation))

    @model_validator(mode="after")
    def _consistent(self) -> QDEvolutionSpec:
        require_unique("experts", [e.name for e in self.experts])
        require_unique("tasks", [t.name for t in self.tasks])
        experts = {e.name for e in self.experts}
        for index, task in enumerate(self.tasks):
            if task.expert not in experts:
                raise FieldValueError(
                    f"tasks[{index}].expert",
                    f"'{task.expert}' names no expert; known experts: {', '.join(sorted(experts))}",
                )
        for index, task in enumerate(self.tasks):
            others = [t.descriptor.bins for j, t in enumerate(self.tasks) if j != index]
            cells = 1
            for bins in others:
                cells *= bins
            if cells > MAX_ARCHIVE_CELLS:
                raise FieldValueError(
                    f"tasks[{index}].descriptor.bins",
                    f"the archive of task '{task.name}' would have {cells} cells (bins of the "
                    f"other tasks multiplied); lower descriptor.bins to stay within "
                    f"{MAX_ARCHIVE_CELLS}"
                )
            dataset = task.evaluator.dataset
            if dataset is not None and dataset.split == "test" and not self.allow_test_split:
                raise FieldValueError(
                    f"tasks[{index}].evaluator.dataset.split",
                    "the 'test' split would contaminate reported scores; use a validation "
                    "split or set "
                    "allowTestSplit: true"
                )
        return self

