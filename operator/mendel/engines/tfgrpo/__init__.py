"""Training-Free GRPO (Tencent Youtu-Agent, arXiv 2510.08191) as a library.

A frozen agent answers practice questions in groups; a learner LLM compares each group's
better and worse attempts and edits a library of natural-language experiences that the
agent reads from then on. No weights change. This package knows nothing of Kubernetes or
MLflow: it talks to LLMs through `mendel.llm.chat.ChatBackend`, to rewards through a
`Scorer`, and reports through an `Observer`.
"""

from mendel.engines.tfgrpo.library import (
    ApplyOutcome,
    Experience,
    Library,
    Operation,
    apply_operations,
)
from mendel.engines.tfgrpo.loop import (
    EngineError,
    Observer,
    PracticeConfig,
    StepReport,
    TrainingFreeGRPO,
)
from mendel.engines.tfgrpo.parsing import (
    ParsedOperations,
    extract_json,
    operations_schema,
    parse_operations,
)
from mendel.engines.tfgrpo.phases import Learner
from mendel.engines.tfgrpo.rollouts import Agent, evaluate, mean_and_pass, seed_for
from mendel.engines.tfgrpo.store import Journal, PhaseStore

__all__ = [
    "Agent",
    "ApplyOutcome",
    "EngineError",
    "Experience",
    "Journal",
    "Learner",
    "Library",
    "Observer",
    "Operation",
    "ParsedOperations",
    "PhaseStore",
    "PracticeConfig",
    "StepReport",
    "TrainingFreeGRPO",
    "apply_operations",
    "evaluate",
    "extract_json",
    "mean_and_pass",
    "operations_schema",
    "parse_operations",
    "seed_for",
]
