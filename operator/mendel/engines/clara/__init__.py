"""CLaRa (He et al., Apple, arXiv 2511.18659): the model core of CompressorTraining.

A library with no Kubernetes import. One causal LM carries three PEFT LoRA adapters
(compressor, generator, query reasoner) and `chunk_size // rate` memory tokens whose input
embeddings are the only trainable rows. Typical stage-I use:

    clara = create_clara(base_model, tokenizer, ClaraSettings.from_spec(spec))
    optimizer = torch.optim.AdamW(clara.parameter_groups(weight_decay), lr=...)
    batch = clara.collator.stage_one_batch([StageOneExample(prompt, (doc,), target)])
    loss = clara(batch, mse_weight=0.1)
    loss.total.backward()
    save_clara(clara, out_dir)

Every stage trains on one loop (`run_training`): `train_stage_one`, `train_instruction_tuning`
and `train_stage_two`. Stage II scores candidates with `cosine_scores` and selects them with
`straight_through_topk`; `select_memories` gives the memory blocks for the generator.
"""

from __future__ import annotations

from mendel.engines.clara.batches import (
    IGNORE_INDEX,
    MEMORY_SLOT,
    ClaraCollator,
    EncoderBatch,
    GeneratorBatch,
    GeneratorExample,
    StageOneBatch,
    StageOneExample,
)
from mendel.engines.clara.cache import CacheStats, CandidateCache, StaleCacheError, chunk_digest
from mendel.engines.clara.checkpoint import (
    COMPLETE_MARKER,
    MODEL_DIR,
    PROGRESS_FILE,
    STATE_FILE,
    Progress,
    SavedTrainerState,
    checkpoint_name,
    latest_checkpoint,
    load_trainer_state,
    restore_rng,
    rng_state,
    save_checkpoint,
    trainable_digest,
    world,
)
from mendel.engines.clara.evaluation import (
    CONDITIONS,
    EvaluationReport,
    corpus_of,
    document_id,
    evaluate_qa,
    text_prompt,
)
from mendel.engines.clara.inference import (
    DEFAULT_PROMPT,
    answer,
    answer_from_store,
    build_prompt,
    greedy_ids,
)
from mendel.engines.clara.io import (
    MEMORY_FILE,
    METADATA_FILE,
    load_clara,
    read_metadata,
    read_versioned_json,
    save_clara,
)
from mendel.engines.clara.losses import (
    StageOneLoss,
    answer_cross_entropy,
    masked_mean,
    memory_mse,
    stage_one_loss,
)
from mendel.engines.clara.metrics import (
    QAScores,
    cover_em,
    exact_match,
    f1,
    normalize_answer,
    score_answers,
)
from mendel.engines.clara.model import (
    ClaraModel,
    EncoderOutput,
    create_clara,
    fit_embeddings,
    lora_config,
    memory_rows,
)
from mendel.engines.clara.pipeline import (
    CHECKPOINT_DIR,
    FINAL_DIR,
    STAGE_ORDER,
    StageName,
    StagePlan,
    final_model,
    run_stages,
)
from mendel.engines.clara.records import (
    PARAPHRASE_PROMPT,
    QAExample,
    RecordError,
    instruction_examples,
    qa_examples,
    stage_one_examples,
    stage_two_examples,
)
from mendel.engines.clara.settings import (
    ADAPTERS,
    COMPRESSOR,
    GENERATOR,
    QUERY_REASONER,
    ClaraSettings,
)
from mendel.engines.clara.stage_two import (
    STAGE_TWO_PROMPT,
    StageTwoExample,
    StageTwoLoss,
    prepare_stage_two,
    recall_at_k,
    stage_two_loss,
    stage_two_prompt,
)
from mendel.engines.clara.stages import (
    prepare_instruction_tuning,
    train_instruction_tuning,
    train_stage_two,
)
from mendel.engines.clara.store import (
    MANIFEST_FILE,
    CompressedStore,
    StoreMismatchError,
    compress_corpus,
    model_identity,
)
from mendel.engines.clara.synthesis import (
    NOT_IN_DOCUMENT,
    SynthesisError,
    SynthesisResult,
    SynthesisSettings,
    synthesize,
)
from mendel.engines.clara.tokens import (
    MemoryTokens,
    add_memory_tokens,
    chunk_ids,
    memory_token_names,
)
from mendel.engines.clara.topk import (
    cosine_scores,
    select_memories,
    soft_topk,
    straight_through_topk,
)
from mendel.engines.clara.training import (
    DataOrder,
    MicroBatchLoss,
    MicroBatchLossFunction,
    StepReport,
    TrainingResult,
    TrainingSettings,
    learning_rate_factor,
    run_training,
    train_stage_one,
)

__all__ = [
    "ADAPTERS",
    "CHECKPOINT_DIR",
    "COMPLETE_MARKER",
    "COMPRESSOR",
    "CONDITIONS",
    "DEFAULT_PROMPT",
    "FINAL_DIR",
    "GENERATOR",
    "IGNORE_INDEX",
    "MANIFEST_FILE",
    "MEMORY_FILE",
    "MEMORY_SLOT",
    "METADATA_FILE",
    "MODEL_DIR",
    "NOT_IN_DOCUMENT",
    "PARAPHRASE_PROMPT",
    "PROGRESS_FILE",
    "QUERY_REASONER",
    "STAGE_ORDER",
    "STAGE_TWO_PROMPT",
    "STATE_FILE",
    "CacheStats",
    "CandidateCache",
    "ClaraCollator",
    "ClaraModel",
    "ClaraSettings",
    "CompressedStore",
    "DataOrder",
    "EncoderBatch",
    "EncoderOutput",
    "EvaluationReport",
    "GeneratorBatch",
    "GeneratorExample",
    "MemoryTokens",
    "MicroBatchLoss",
    "MicroBatchLossFunction",
    "Progress",
    "QAExample",
    "QAScores",
    "RecordError",
    "SavedTrainerState",
    "StageName",
    "StageOneBatch",
    "StageOneExample",
    "StageOneLoss",
    "StagePlan",
    "StageTwoExample",
    "StageTwoLoss",
    "StaleCacheError",
    "StepReport",
    "StoreMismatchError",
    "SynthesisError",
    "SynthesisResult",
    "SynthesisSettings",
    "TrainingResult",
    "TrainingSettings",
    "add_memory_tokens",
    "answer",
    "answer_cross_entropy",
    "answer_from_store",
    "build_prompt",
    "checkpoint_name",
    "chunk_digest",
    "chunk_ids",
    "compress_corpus",
    "corpus_of",
    "cosine_scores",
    "cover_em",
    "create_clara",
    "document_id",
    "evaluate_qa",
    "exact_match",
    "f1",
    "final_model",
    "fit_embeddings",
    "greedy_ids",
    "instruction_examples",
    "latest_checkpoint",
    "learning_rate_factor",
    "load_clara",
    "load_trainer_state",
    "lora_config",
    "masked_mean",
    "memory_mse",
    "memory_rows",
    "memory_token_names",
    "model_identity",
    "normalize_answer",
    "prepare_instruction_tuning",
    "prepare_stage_two",
    "qa_examples",
    "read_metadata",
    "read_versioned_json",
    "recall_at_k",
    "restore_rng",
    "rng_state",
    "run_stages",
    "run_training",
    "save_checkpoint",
    "save_clara",
    "score_answers",
    "select_memories",
    "soft_topk",
    "stage_one_examples",
    "stage_one_loss",
    "stage_two_examples",
    "stage_two_loss",
    "stage_two_prompt",
    "straight_through_topk",
    "synthesize",
    "text_prompt",
    "train_instruction_tuning",
    "train_stage_one",
    "train_stage_two",
    "trainable_digest",
    "world",
]
