"""Status of a Mendel resource: a bounded summary that only the operator writes.

Everything here is a count, a latest value or a pointer (MLflow ids, checkpoint URI);
histories, archives and libraries live in MLflow. Every list has a small bound, so the
status stays far below the object-size limit however long a run goes on. Scores are
strings, as Kubernetes API conventions ask for non-integer numbers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mendel.api.base import ApiModel

__all__ = [
    "ArchiveSummary",
    "Checkpoint",
    "Children",
    "Condition",
    "ConditionType",
    "LibrarySummary",
    "Metric",
    "MlflowStatus",
    "Phase",
    "Progress",
    "QDEvolutionStatus",
    "ExperienceLibraryStatus",
    "CompressorTrainingStatus",
    "RegisteredVersion",
    "RunRecord",
    "RunStatus",
    "SchedulingStatus",
    "TaskBest",
    "TrainingSummary",
]

Phase = Literal["Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
ConditionType = Literal["Admitted", "Running", "Suspended", "Complete", "Failed", "TrackingReady",
                        "Ready", "Stalled"]


class Condition(ApiModel):
    """One condition, shaped as metav1.Condition."""

    type: ConditionType = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str = Field(
        description="CamelCase reason, e.g. BudgetExhausted or MLflowUnavailable.", max_length=128
    )
    message: str = Field(default="", description="Human-readable detail.", max_length=1024)
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).", max_length=64
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


class Progress(ApiModel):
    """How far the run is."""

    step: int = Field(default=0, description="Completed generations, steps or batches.", ge=0)
    total: int = Field(default=0, description="Steps the budget allows.", ge=0)
    percent: int = Field(default=0, description="step / total, in percent.", ge=0, le=100)
    estimated_remaining_seconds: int | None = Field(
        default=None, description="Estimate from the recent step rate.", ge=0
    )
    last_update_time: str | None = Field(
        default=None, description="When the workload last reported progress.", max_length=64
    )


class Metric(ApiModel):
    """A latest metric value."""

    name: str = Field(description="Metric name.", max_length=128)
    value: str = Field(description="Latest value.", max_length=32)


class Checkpoint(ApiModel):
    """The newest checkpoint a retry or resume starts from."""

    uri: str = Field(description="Where the checkpoint lives.", max_length=1024)
    step: int = Field(description="Step (generation, batch) it was taken at.", ge=0)
    time: str | None = Field(default=None, description="When it was written.", max_length=64)


class Children(ApiModel):
    """Counts of the run's child objects (never lists)."""

    driver_job: str | None = Field(
        default=None, description="Name of the current driver Job.", max_length=63
    )
    active_jobs: int = Field(default=0, description="Child Jobs still running.", ge=0)
    restarts: int = Field(default=0, description="Driver Pod retries so far.", ge=0)


class SchedulingStatus(ApiModel):
    """Queueing state of the run's Pods."""

    queue_name: str | None = Field(default=None, description="Kueue LocalQueue.", max_length=63)
    admitted: bool = Field(default=False, description="Quota reserved and Pods allowed to run.")
    gpus: int = Field(default=0, description="GPUs the run asks for in all.", ge=0)


class RegisteredVersion(ApiModel):
    """A model version the run registered."""

    name: str = Field(description="Registered model name.", max_length=256)
    version: str = Field(description="Model version.", max_length=32)
    alias: str | None = Field(default=None, description="Alias set on it.", max_length=63)


class MlflowStatus(ApiModel):
    """Where the run is tracked."""

    experiment_id: str | None = Field(default=None, description="Experiment id.", max_length=64)
    run_id: str | None = Field(default=None, description="Parent run id.", max_length=64)
    run_url: str | None = Field(default=None, description="Link to the run.", max_length=1024)
    registered_model: RegisteredVersion | None = Field(
        default=None, description="Version registered at the end."
    )


class RunRecord(ApiModel):
    """One run of the resource: each restart after an experiment-defining change is one."""

    run: int = Field(description="Run number: 0, then one more per restart.", ge=0)
    generation: int = Field(description="metadata.generation the run started from.", ge=0)
    phase: str = Field(description="How the run ended (Succeeded, Failed, Superseded) or "
                       "its current phase.", max_length=32)
    run_id: str | None = Field(default=None, description="Its MLflow run id.", max_length=64)
    start_time: str | None = Field(default=None, description="When it started.", max_length=64)
    completion_time: str | None = Field(default=None, description="When it ended.",
                                        max_length=64)


class RunStatus(ApiModel):
    """Status fields every kind shares."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status was computed from."
    )
    phase: Phase = Field(default="Pending", description="Summary for people and printer columns.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Admitted, Running, Suspended, Complete, Failed, TrackingReady, and the "
        "summaries Ready and Stalled.",
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    start_time: str | None = Field(default=None, description="When the run started.",
                                   max_length=64)
    completion_time: str | None = Field(default=None, description="When the run finished.",
                                        max_length=64)
    progress: Progress = Field(default_factory=Progress, description="How far the run is.")
    metrics: list[Metric] = Field(
        default_factory=list, description="Latest metric values.", max_length=32
    )
    checkpoint: Checkpoint | None = Field(default=None, description="Newest checkpoint.")
    children: Children = Field(default_factory=Children, description="Child object counts.")
    scheduling: SchedulingStatus = Field(
        default_factory=SchedulingStatus, description="Queueing state."
    )
    mlflow: MlflowStatus = Field(default_factory=MlflowStatus, description="MLflow ids.")
    run: int = Field(default=0, description="Which run of the resource this status describes "
                     "(one more after each restart under runPolicy.onSpecChange: Restart).",
                     ge=0)
    history: list[RunRecord] = Field(
        default_factory=list, description="The latest runs, oldest first (at most 10).",
        max_length=10)


class TaskBest(ApiModel):
    """The best model found so far for one task."""

    task: str = Field(description="Task name.", max_length=32)
    score: str = Field(description="Its score on the task.", max_length=32)
    model_id: str | None = Field(default=None, description="Genome or MLflow model id.",
                                 max_length=128)
    generation: int | None = Field(default=None, description="Generation it was born in.", ge=0)


class ArchiveSummary(ApiModel):
    """Summary of the MAP-Elites archives (never the archives themselves)."""

    cells: int = Field(default=0, description="Cells over all archives.", ge=0)
    filled: int = Field(default=0, description="Occupied cells over all archives.", ge=0)
    coverage: str = Field(default="0", description="filled / cells.", max_length=32)
    qd_score: str = Field(default="0", description="Sum of elite qualities over all archives.",
                          max_length=32)
    best: list[TaskBest] = Field(default_factory=list, description="Best elite per task.",
                                 max_length=8)


class QDEvolutionStatus(RunStatus):
    """Status of a QDEvolution."""

    archive: ArchiveSummary = Field(default_factory=ArchiveSummary, description="Archive summary.")


class LibrarySummary(ApiModel):
    """Summary of the experience library."""

    size: int = Field(default=0, description="Experiences in the library.", ge=0)
    version: int = Field(default=0, description="Library version (one per update step).", ge=0)
    score_before: str | None = Field(default=None, description="Agent score without it.",
                                     max_length=32)
    score_after: str | None = Field(default=None, description="Agent score with it.", max_length=32)
    config_map: str | None = Field(default=None, description="ConfigMap holding it.",
                                   max_length=253)


class ExperienceLibraryStatus(RunStatus):
    """Status of an ExperienceLibrary."""

    library: LibrarySummary = Field(default_factory=LibrarySummary, description="Library summary.")


class TrainingSummary(ApiModel):
    """Summary of compressor training."""

    loss: str | None = Field(default=None, description="Latest training loss.", max_length=32)
    eval_score: str | None = Field(
        default=None, description="Latest evaluation score.", max_length=32
    )
    stage: str | None = Field(default=None, description="Stage in progress.", max_length=32)


class CompressorTrainingStatus(RunStatus):
    """Status of a CompressorTraining."""

    training: TrainingSummary = Field(default_factory=TrainingSummary,
                                      description="Training summary.")
