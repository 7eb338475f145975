"""ExperienceLibrary: Training-Free GRPO (Tencent Youtu-Agent, arXiv 2510.08191).

A frozen LLM agent answers each practice question several times (a group). Where a group's
rewards differ, the same or a second LLM compares the rollouts, writes a natural-language
"semantic advantage", and edits a library of experiences (add, update, delete, keep) that
is injected into the agent's prompt from then on. No weights change; the library is the
product. Defaults follow the paper's math setting (3 epochs, group size 5, T = 0.7).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mendel.api.base import ApiModel, FieldValueError, cel, immutable, increase_only
from mendel.api.envelope import RoleResources, SpecEnvelope
from mendel.api.references import DatasetRef, ModelRef, SecretKeyRef, reject_inline_secret

__all__ = [
    "Endpoint",
    "Evaluation",
    "ExperienceLibraryResources",
    "ExperienceLibrarySpec",
    "LibrarySettings",
    "LlmBackend",
    "Practice",
    "Tools",
    "Verifier",
]

PAPER = "https://arxiv.org/abs/2510.08191"
_EXACTLY_ONE_BACKEND = cel(
    "has(self.endpoint) != has(self.model)", "set exactly one of endpoint and model"
)


class Endpoint(ApiModel):
    """An OpenAI-compatible chat-completions endpoint (vLLM, TGI, a hosted API)."""

    url: str = Field(
        description="Base URL, e.g. https://api.example.com/v1 or http://vllm.ns.svc:8000/v1.",
        max_length=512,
        pattern=r"^https?://[^\s]+$",
    )
    model: str = Field(description="Model name the endpoint serves.", min_length=1, max_length=256)
    api_key: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API key; never inline. Unset for endpoints "
        "without authentication.",
    )
    timeout_seconds: int = Field(
        default=600, description="Time limit per request.", ge=1, le=86400
    )
    max_retries: int = Field(
        default=3, description="Retries per request on timeouts and 429/5xx answers.", ge=0, le=20
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_inline_key(cls, value: Any) -> Any:
        return reject_inline_secret(value, "apiKey")


class LlmBackend(ApiModel):
    """An LLM to call: a remote endpoint, or a model loaded in the driver Pod."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [_EXACTLY_ONE_BACKEND]}}

    endpoint: Endpoint | None = Field(default=None, description="Remote endpoint.")
    model: ModelRef | None = Field(
        default=None, description="A model loaded with transformers in the driver Pod."
    )
    temperature: float = Field(default=0.7, description="Sampling temperature.", ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, description="Nucleus sampling threshold.", gt=0.0, le=1.0)
    max_tokens: int = Field(
        default=4096, description="Completion budget per call.", ge=1, le=131072
    )

    @model_validator(mode="after")
    def _one_backend(self) -> LlmBackend:
        if (self.endpoint is None) == (self.model is None):
            raise ValueError("set exactly one of endpoint and model")
        return self


class Practice(ApiModel):
    """The learning loop: epochs over the dataset in batches of groups of rollouts."""

    epochs: int = Field(
        default=3,
        description="Passes over the practice dataset. May be raised on a finished run to "
        "resume it.",
        ge=1,
        le=1000,
        json_schema_extra=increase_only("practice.epochs"),
    )
    batch_size: int = Field(
        default=100, description="Questions per library update step.", ge=1, le=100_000
    )
    group_size: int = Field(
        default=5,
        description="Rollouts per question; groups whose rewards are all equal teach nothing "
        "and are skipped.",
        ge=2,
        le=64,
    )
    rollout_concurrency: int = Field(
        default=32, description="LLM calls in flight at once.", ge=1, le=1024
    )
    task_timeout_seconds: int = Field(
        default=1800, description="Time limit per rollout.", ge=1, le=86400
    )
    max_operations_per_group: int = Field(
        default=2,
        description="Library operations one group may propose before consolidation.",
        ge=1,
        le=16,
    )
    max_failed_call_fraction: float = Field(
        default=0.5,
        description="A step fails the run only when more than this fraction of its LLM "
        "calls fail after their retries; below it, the failed rollouts or groups are dropped "
        "and counted.",
        ge=0.0,
        le=1.0,
    )


class Tools(ApiModel):
    """Tools the agent may call while answering (OpenAI tool calling); off by default."""

    python: bool = Field(
        default=False,
        description="A Python interpreter in Mendel's sandbox (no network, time and memory "
        "limits), as in the paper's ReAct math agent. The endpoint must support tool calls.",
    )
    max_turns: int = Field(
        default=4, description="Tool calls per rollout before the answer is due.", ge=1, le=50
    )
    timeout_seconds: int = Field(
        default=10, description="Time limit per program.", ge=1, le=600
    )


class Verifier(ApiModel):
    """How a rollout's answer is rewarded (0 or 1)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.type != 'regex' || has(self.pattern)", "pattern is required for regex"),
                cel("self.type != 'command' || has(self.command)", "command is required"),
                cel("self.type != 'llmJudge' || has(self.judge)", "judge is required"),
            ]
        }
    }

    type: Literal["math", "exact", "regex", "llmJudge", "command"] = Field(
        default="math",
        description="math: the final (boxed or last) number or expression equals the answer "
        "symbolically; exact: trimmed text equality; regex: pattern's first group equals the "
        "answer; llmJudge: an LLM grades against the answer; command: a program prints "
        "{\"reward\": x}.",
    )
    pattern: str | None = Field(
        default=None, description="regex: pattern whose first group is the answer.", max_length=512
    )
    command: list[str] | None = Field(
        default=None,
        description="command: argv; the record and response arrive as JSON on standard input.",
        min_length=1,
        max_length=64,
    )
    judge: LlmBackend | None = Field(default=None, description="llmJudge: the grading LLM.")
    timeout_seconds: int = Field(
        default=30, description="command: time limit per rollout scored.", ge=1, le=3600
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> Verifier:
        needs = {"regex": self.pattern, "command": self.command, "llmJudge": self.judge}
        if self.type in needs and not needs[self.type]:
            field = {"regex": "pattern", "command": "command", "llmJudge": "judge"}[self.type]
            raise ValueError(f"{field} is required when type is {self.type}")
        return self


class Evaluation(ApiModel):
    """Scoring the agent with and without the library."""

    dataset: DatasetRef | None = Field(
        default=None, description="Held-out questions; unset skips before/after scoring."
    )
    samples_per_question: int = Field(
        default=4,
        description="Rollouts per question; the score is their mean reward (Mean@k).",
        ge=1,
        le=64,
    )
    temperature: float = Field(
        default=0.3, description="Sampling temperature while scoring.", ge=0.0, le=2.0
    )
    every_epochs: int = Field(
        default=1, description="Score the library after this many epochs.", ge=1, le=1000
    )


class LibrarySettings(ApiModel):
    """Bounds on the library and where it is published."""

    max_experiences: int = Field(
        default=64, description="Upper bound on library entries.", ge=1, le=1000
    )
    max_words: int = Field(
        default=32, description="Longest experience accepted, in words.", ge=4, le=256
    )
    config_map_name: str | None = Field(
        default=None,
        description="ConfigMap the final library is published to; default <name>-library.",
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )


class ExperienceLibraryResources(ApiModel):
    """Compute per role."""

    driver: RoleResources = Field(
        default_factory=lambda: RoleResources(gpus=0, cpu="2", memory="8Gi"),
        description="The driver Pod. GPUs help only when an LLM is a local model.",
    )


class ExperienceLibrarySpec(SpecEnvelope):
    """A Training-Free GRPO run: a frozen agent in, an experience library out."""

    agent: LlmBackend = Field(
        description="The frozen agent whose prompts the library improves.",
        json_schema_extra=immutable("agent"),
    )
    learner: LlmBackend | None = Field(
        default=None,
        description="The LLM that summarises rollouts and edits the library; default: the "
        "agent itself at temperature 0.",
        json_schema_extra=immutable("learner"),
    )
    dataset: DatasetRef = Field(
        description="Practice questions, JSON Lines {question, answer}; the paper uses 100.",
        json_schema_extra=immutable("dataset"),
    )
    practice: Practice = Field(default_factory=Practice, description="The learning loop.")
    tools: Tools = Field(
        default_factory=Tools,
        description="Tools the agent may call.",
        json_schema_extra=immutable("tools"),
    )
    verifier: Verifier = Field(
        default_factory=Verifier,
        description="Reward of a rollout.",
        json_schema_extra=immutable("verifier"),
    )
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Before/after scoring of the agent."
    )
    library: LibrarySettings = Field(
        default_factory=LibrarySettings, description="Library bounds and publishing."
    )
    resources: ExperienceLibraryResources = Field(
        default_factory=ExperienceLibraryResources,
        description="Compute for the driver Pod.",
        json_schema_extra=immutable("resources"),
    )

    @model_validator(mode="after")
    def _no_test_split(self) -> ExperienceLibrarySpec:
        if self.dataset.split == "test" and not self.allow_test_split:
            raise FieldValueError(
                "dataset.split",
                "practising on the 'test' split is refused; use a train split or set "
                "allowTestSplit: true",
            )
        return self
