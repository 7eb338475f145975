"""What the operator and a workload agree on: environment variables, MLflow tag and
metric names, and the termination summary.

The operator creates the MLflow parent run and passes its id to the driver Pod; the
workload logs progress and summaries to that run under these names; the operator reads
them back into the resource's bounded status. Keeping every name here means neither side
can drift from the other silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ENV_KIND",
    "ENV_NAME",
    "ENV_NAMESPACE",
    "ENV_OUTPUT_URI",
    "ENV_ROLE",
    "ENV_RUN_ID",
    "ENV_RUN_INDEX",
    "ENV_SPEC_PATH",
    "ENV_TERMINATION_LOG",
    "ENV_TRACKING_URI",
    "ENV_UID",
    "METRIC_EVAL_SCORE",
    "METRIC_LIBRARY_SIZE",
    "METRIC_LIBRARY_VERSION",
    "METRIC_PROGRESS_STEP",
    "METRIC_PROGRESS_TOTAL",
    "METRIC_QD_CELLS",
    "METRIC_QD_COVERAGE",
    "METRIC_QD_FILLED",
    "METRIC_QD_SCORE",
    "METRIC_SCORE_AFTER",
    "METRIC_SCORE_BEFORE",
    "METRIC_TRAIN_LOSS",
    "TAG_CHECKPOINT_STEP",
    "TAG_CHECKPOINT_URI",
    "TAG_GENERATION",
    "TAG_KIND",
    "TAG_LIBRARY_CONFIG_MAP",
    "TAG_LIBRARY_PROMPT_URI",
    "TAG_LIBRARY_SIZE",
    "TAG_LIBRARY_VERSION",
    "TAG_NAME",
    "TAG_NAMESPACE",
    "TAG_PREVIOUS_RUN_ID",
    "TAG_REGISTERED_NAME",
    "TAG_REGISTERED_VERSION",
    "TAG_RUN_INDEX",
    "TAG_SPEC_HASH",
    "TAG_STAGE",
    "TAG_UID",
    "EXIT_INVALID_SPEC",
    "SPEC_FILE",
    "TERMINATION_LOG_PATH",
    "best_metric",
    "parse_experiences",
    "render_experiences",
    "spec_hash",
    "secret_env",
]

# Environment of the driver Pod (and of `mendel run`, which sets the same).
ENV_SPEC_PATH = "MENDEL_SPEC_PATH"  # the spec snapshot (YAML of the whole resource)
ENV_KIND = "MENDEL_KIND"
ENV_NAMESPACE = "MENDEL_NAMESPACE"
ENV_NAME = "MENDEL_NAME"
ENV_UID = "MENDEL_UID"
ENV_RUN_ID = "MENDEL_RUN_ID"  # the MLflow parent run the operator created
ENV_RUN_INDEX = "MENDEL_RUN_INDEX"  # which run of the resource (0, +1 per restart)
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_OUTPUT_URI = "MENDEL_OUTPUT_URI"  # checkpoints and artifacts of this run
ENV_TERMINATION_LOG = "MENDEL_TERMINATION_LOG"  # default /dev/termination-log
ENV_ROLE = "MENDEL_ROLE"  # driver | leader | worker (multi-node CompressorTraining)
# MENDEL_RUN_ID is empty when MLflow was unreachable as the Job was created: the workload
# then finds the parent run by the TAG_UID tag (the operator creates it once MLflow is back).

SPEC_FILE = "resource.yaml"  # key of the snapshot ConfigMap, file name under the mount
TERMINATION_LOG_PATH = "/dev/termination-log"
EXIT_INVALID_SPEC = 2  # a workload exit code that no retry can fix (FailJob)

# Tags on the parent run: how the operator finds it again after a restart.
TAG_KIND = "mendel.kind"
TAG_NAMESPACE = "mendel.namespace"
TAG_NAME = "mendel.name"
TAG_UID = "mendel.uid"
TAG_GENERATION = "mendel.generation"
# Each restart after an experiment-defining change (runPolicy.onSpecChange: Restart) is a
# new parent run: its index, and the run it replaced. A run without the index tag is run 0.
TAG_RUN_INDEX = "mendel.run"
TAG_PREVIOUS_RUN_ID = "mendel.previous_run_id"
TAG_SPEC_HASH = "mendel.spec_hash"
TAG_CHECKPOINT_URI = "mendel.checkpoint.uri"
TAG_CHECKPOINT_STEP = "mendel.checkpoint.step"
TAG_REGISTERED_NAME = "mendel.registered.name"
TAG_REGISTERED_VERSION = "mendel.registered.version"
TAG_LIBRARY_CONFIG_MAP = "mendel.library.config_map"
# The final experience library of an ExperienceLibrary run, set once it is registered in
# MLflow's Prompt Registry: "prompts:/<name>/<version>", and its size and version (step).
# The operator publishes that prompt's text to the resource's ConfigMap.
TAG_LIBRARY_PROMPT_URI = "mendel.library.prompt_uri"
TAG_LIBRARY_SIZE = "mendel.library.size"
TAG_LIBRARY_VERSION = "mendel.library.version"
TAG_STAGE = "mendel.training.stage"

# Metrics the workload logs on the parent run and the operator mirrors into status.
METRIC_PROGRESS_STEP = "progress/step"
METRIC_PROGRESS_TOTAL = "progress/total"
METRIC_QD_CELLS = "qd/cells"
METRIC_QD_FILLED = "qd/filled"
METRIC_QD_COVERAGE = "qd/coverage"
METRIC_QD_SCORE = "qd/qd_score"
METRIC_LIBRARY_SIZE = "library/size"
METRIC_LIBRARY_VERSION = "library/version"
METRIC_SCORE_BEFORE = "eval/score_before"
METRIC_SCORE_AFTER = "eval/score_after"
METRIC_TRAIN_LOSS = "train/loss"
METRIC_EVAL_SCORE = "eval/score"


def secret_env(path: str) -> str:
    """Env var carrying the Secret key a spec field references, e.g.
    spec.agent.endpoint.apiKey -> MENDEL_SECRET_AGENT_ENDPOINT_API_KEY."""
    words: list[str] = []
    for part in path.removeprefix("spec.").replace("[", ".").replace("]", "").split("."):
        snake = "".join(f"_{c}" if c.isupper() else c for c in part)
        words.append(snake.upper().strip("_"))
    return "MENDEL_SECRET_" + "_".join(w for w in words if w)


def best_metric(task: str) -> str:
    """Metric holding the best score so far on one task."""
    return f"qd/best/{task}"


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Short digest of a spec as written (keys sorted), tagged as TAG_SPEC_HASH by the
    operator and by a workload that creates its parent run itself: both must agree."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_EXPERIENCE_LINE = re.compile(r"^\[(?P<id>[^\]\s]+)\]\. (?P<text>.*)$")


def render_experiences(entries: Sequence[tuple[str, str]]) -> str:
    """The library as the agent reads it: one line "[G0]. text" per experience, in order.

    This text is the prompt registered in MLflow and the ConfigMap's `experiences.txt`, so
    an agent outside Mendel injects exactly what the agent saw in practice. Texts are kept
    to one line (the engine normalises whitespace), which makes the format reversible.
    """
    return "\n".join(f"[{entry_id}]. {' '.join(text.split())}" for entry_id, text in entries)


def parse_experiences(text: str) -> list[tuple[str, str]]:
    """The (id, text) pairs of a rendered library; lines of another shape are skipped."""
    pairs = []
    for line in text.splitlines():
        found = _EXPERIENCE_LINE.match(line.strip())
        if found:
            pairs.append((found["id"], found["text"]))
    return pairs
