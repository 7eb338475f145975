"""CompressorTraining: CLaRa document compression for RAG (He et al., Apple, arXiv 2511.18659).

One frozen base model carries named LoRA adapters (compressor, generator, query reasoner).
The compressor turns each 256-token document into 256/rate memory-token states; stage I
(salient compressor pretraining) trains on QA and paraphrase targets with loss
CE + mseWeight * MSE(mean document state, mean memory state); optional instruction tuning
and stage II end-to-end training with a differentiable top-k over retrieved candidates
follow. Defaults follow the paper's Table 10.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mendel.api.base import ApiModel, FieldValueError, cel, immutable
from mendel.api.envelope import RoleResources, SpecEnvelope
from mendel.api.experience import LlmBackend
from mendel.api.references import DatasetRef, ModelRef

__all__ = [
    "Compression",
    "CompressorTrainingResources",
    "CompressorTrainingSpec",
    "Distribution",
    "LoraSettings",
    "Optimizer",
    "Stage",
    "Stages",
    "Synthesis",
]

PAPER = "https://arxiv.org/abs/2511.18659"
DOC_TOKENS = 256


class Compression(ApiModel):
    """How much each document is compressed."""

    rate: int = Field(
        default=32,
        description="Compression rate; each 256-token document becomes 256/rate memory "
        "tokens. Must divide 256 (1, 2, 4, ..., 256); the paper reports 4 to 256.",
        ge=1,
        le=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("256 % self == 0", "rate must divide 256 (1, 2, 4, 8, 16, 32, 64, 128, 256)")
            ]
        },
    )
    doc_max_tokens: int = Field(
        default=DOC_TOKENS,
        description="Tokens per document chunk; longer documents are split.",
        ge=16,
        le=8192,
    )

    @field_validator("rate")
    @classmethod
    def _divides_256(cls, rate: int) -> int:
        if DOC_TOKENS % rate != 0:
            raise ValueError(
                f"rate {rate} does not divide 256; use one of 1, 2, 4, 8, 16, 32, 64, 128, 256"
            )
        return rate

    @property
    def memory_tokens(self) -> int:
        """Memory tokens per document chunk."""
        return self.doc_max_tokens // self.rate


class LoraSettings(ApiModel):
    """LoRA adapter shape, shared by the compressor, generator and query-reasoner adapters."""

    r: int = Field(default=16, description="Adapter rank.", ge=1, le=1024)
    alpha: int = Field(default=32, description="Adapter scaling numerator (alpha / r).", ge=1,
                       le=4096)
    dropout: float = Field(default=0.1, description="Dropout on the adapter input.", ge=0.0,
                           lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Module names to adapt, or 'all-linear' for every linear layer but the "
        "output head.",
        min_length=1,
        max_length=32,
    )


class Synthesis(ApiModel):
    """Stage-I targets written by an LLM from bare documents (the paper's SCP data
    synthesis): simple and multi-hop questions, answers from the document alone, a
    judgment per pair, coverage checks, and a checked paraphrase."""

    llm: LlmBackend = Field(description="The LLM that writes and checks the targets.")
    rounds: int = Field(
        default=10,
        description="Coverage checks per document at most; a document whose last check "
        "still finds facts no question asks about is left out (the paper's 10).",
        ge=1,
        le=10,
    )
    complex_questions: bool = Field(
        default=True, description="Also ask multi-hop questions (ComplexQA)."
    )
    paraphrase: bool = Field(
        default=True, description="Also write a paraphrase per document, kept when checked."
    )
    max_questions: int = Field(
        default=12,
        description="Questions one reply may list (simple, multi-hop or supplementary); the "
        "paper averages 7.8 simple and 4.6 multi-hop questions per document.",
        ge=1,
        le=64,
    )
    concurrency: int = Field(
        default=8,
        description="Documents in progress at once, and LLM requests in flight at most.",
        ge=1,
        le=1024,
    )
    max_failed_call_fraction: float = Field(
        default=0.5,
        description="Synthesis fails (and is resumed on retry) only when more than this "
        "fraction of its LLM calls fail or give unreadable replies; below it, the affected "
        "pairs are dropped and counted.",
        ge=0.0,
        le=1.0,
    )


class Stage(ApiModel):
    """One training stage: its data and optimisation budget."""

    dataset: DatasetRef = Field(description="Training records (JSON Lines) for this stage.")
    epochs: int = Field(default=1, description="Passes over the data.", ge=1, le=100)
    learning_rate: float = Field(description="Peak learning rate.", gt=0.0, le=1.0)
    batch_size: int = Field(
        description="Global batch size (micro batch x processes x gradient accumulation).",
        ge=1,
        le=65536,
    )
    micro_batch_size: int = Field(
        default=2, description="Examples per process per forward pass.", ge=1, le=1024
    )
    max_length: int = Field(
        default=2048, description="Longest input sequence in tokens.", ge=32, le=131072
    )
    top_k: int = Field(
        default=1, description="Documents passed to the generator per question.", ge=1, le=64
    )
    mse_weight: float = Field(
        default=0.1,
        description="Weight of the MSE between mean document and mean memory states.",
        ge=0.0,
        le=100.0,
    )
    temperature: float = Field(
        default=0.02,
        description="Temperature of the soft top-k over cosine scores (stage II only; the "
        "reference code's 0.02).",
        gt=0.0,
        le=100.0,
    )
    synthesis: Synthesis | None = Field(
        default=None,
        description="Pretraining only: write the QA and paraphrase targets with an LLM; the "
        "dataset then holds documents, {\"docs\": [...]} or {\"text\": ...} per record.",
    )


class Stages(ApiModel):
    """The three stages of CLaRa; stage I is required, the others are optional."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "(!has(self.instructionTuning) || !has(self.instructionTuning.synthesis))"
                    " && (!has(self.endToEnd) || !has(self.endToEnd.synthesis))",
                    "synthesis is allowed on stages.pretraining only",
                )
            ]
        }
    }

    pretraining: Stage = Field(
        description="Stage I, salient compressor pretraining on {question, answers, docs} and "
        "{answers (paraphrase), docs} records (paper: batch 128, lr 1e-4)."
    )
    instruction_tuning: Stage | None = Field(
        default=None,
        description="Optional compression instruction tuning on {question, docs, answer} "
        "(paper: top-5 documents).",
    )
    end_to_end: Stage | None = Field(
        default=None,
        description="Optional stage II: query reasoner and generator trained jointly through a "
        "straight-through top-k over {question, docs (candidates), answer, pos_index} "
        "(paper: batch 32, lr 5e-6, 20 candidates).",
    )


class Optimizer(ApiModel):
    """AdamW and its schedule."""

    beta1: float = Field(default=0.9, description="AdamW beta1.", ge=0.0, lt=1.0)
    beta2: float = Field(default=0.95, description="AdamW beta2.", ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, description="AdamW weight decay.", ge=0.0, le=1.0)
    scheduler: Literal["cosine", "cosineWithMinLr", "constant", "linear"] = Field(
        default="cosineWithMinLr",
        description="Learning-rate schedule after warm-up (cosineWithMinLr decays to 0.1 x lr).",
    )
    warmup_ratio: float = Field(
        default=0.03, description="Fraction of steps spent warming up.", ge=0.0, le=0.5
    )
    max_grad_norm: float = Field(
        default=1.0, description="Gradient clipping norm.", gt=0.0, le=1000.0
    )


class Distribution(ApiModel):
    """How many nodes and processes train together (torchrun)."""

    num_nodes: int = Field(default=1, description="Nodes (one Pod each).", ge=1, le=128)
    num_proc_per_node: int = Field(
        default=1,
        description="Training processes per node; with GPUs, equal to resources.trainer.gpus.",
        ge=1,
        le=16,
    )


class CompressorTrainingResources(ApiModel):
    """Compute per role."""

    trainer: RoleResources = Field(
        default_factory=RoleResources, description="Each trainer Pod (one per node)."
    )


class CompressorTrainingSpec(SpecEnvelope):
    """A CLaRa run: a base model and documents in, compressor and generator adapters out."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.resources.trainer.gpus == 0 || "
                    "self.resources.trainer.gpus == self.distribution.numProcPerNode",
                    "distribution.numProcPerNode must equal resources.trainer.gpus",
                )
            ]
        }
    }

    base_model: ModelRef = Field(
        description="The frozen backbone (paper: Mistral-7B-Instruct-v0.2).",
        json_schema_extra=immutable("baseModel"),
    )
    compression: Compression = Field(
        default_factory=Compression,
        description="Compression rate and chunk size.",
        json_schema_extra=immutable("compression"),
    )
    lora: LoraSettings = Field(
        default_factory=LoraSettings,
        description="Adapter shape.",
        json_schema_extra=immutable("lora"),
    )
    stages: Stages = Field(
        description="Training stages and their data.", json_schema_extra=immutable("stages")
    )
    optimizer: Optimizer = Field(default_factory=Optimizer, description="Optimiser settings.")
    precision: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Training dtype."
    )
    gradient_checkpointing: bool = Field(
        default=True, description="Recompute activations to save memory."
    )
    checkpoint_every_steps: int = Field(
        default=500, description="Save adapters and optimiser state this often.", ge=1,
        le=10_000_000,
    )
    evaluation: DatasetRef | None = Field(
        default=None,
        description="Held-out {question, docs, answer} records scored (exact match) after "
        "training.",
    )
    distribution: Distribution = Field(
        default_factory=Distribution,
        description="Nodes and processes per node.",
        json_schema_extra=immutable("distribution"),
    )
    resources: CompressorTrainingResources = Field(
        default_factory=CompressorTrainingResources,
        description="Compute per trainer Pod.",
        json_schema_extra=immutable("resources"),
    )

    @model_validator(mode="after")
    def _consistent(self) -> CompressorTrainingSpec:
        gpus = self.resources.trainer.gpus
        if self.distribution.num_nodes > 1 and not (self.output.uri or "").startswith("/"):
            raise FieldValueError(
                "output.uri",
                "distribution.numNodes > 1 needs output.uri on a volume every node mounts "
                "(an absolute path, e.g. a ReadWriteMany claim added through "
                "podTemplatePatch): all ranks write one checkpoint directory",
            )
        if gpus and gpus != self.distribution.num_proc_per_node:
            raise FieldValueError(
                "distribution.numProcPerNode",
                f"{self.distribution.num_proc_per_node} must equal resources.trainer.gpus "
                f"({gpus}): one process per GPU",
            )
        stages = {
            "pretraining": self.stages.pretraining,
            "instructionTuning": self.stages.instruction_tuning,
            "endToEnd": self.stages.end_to_end,
        }
        for name, stage in stages.items():
            if stage is not None and stage.synthesis is not None and name != "pretraining":
                raise FieldValueError(
                    f"stages.{name}.synthesis",
                    "data synthesis writes stage-I (pretraining) targets only; remove it "
                    "here and give this stage prepared records",
                )
            if stage is not None and stage.dataset.split == "test" and not self.allow_test_split:
                raise FieldValueError(
                    f"stages.{name}.dataset.split",
                    "training on the 'test' split is refused; use train data or set "
                    "allowTestSplit: true",
                )
        return self
