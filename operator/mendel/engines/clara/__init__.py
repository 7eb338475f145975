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

Stage II scores candidates with `cosine_scores` and selects them with
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
from mendel.engines.clara.io import (
    MEMORY_FILE,
    METADATA_FILE,
    load_clara,
    read_metadata,
    save_clara,
)
from mendel.engines.clara.losses import (
    StageOneLoss,
    answer_cross_entropy,
    masked_mean,
    memory_mse,
    stage_one_loss,
)
from mendel.engines.clara.model import (
    ClaraModel,
    EncoderOutput,
    create_clara,
    fit_embeddings,
    lora_config,
    memory_rows,
)
from mendel.engines.clara.settings import (
    ADAPTERS,
    COMPRESSOR,
    GENERATOR,
    QUERY_REASONER,
    ClaraSettings,
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
    StepReport,
    TrainingResult,
    TrainingSettings,
    learning_rate_factor,
    train_stage_one,
)

__all__ = [
    "ADAPTERS",
    "COMPLETE_MARKER",
    "COMPRESSOR",
    "GENERATOR",
    "IGNORE_INDEX",
    "MEMORY_FILE",
    "MEMORY_SLOT",
    "METADATA_FILE",
    "MODEL_DIR",
    "PROGRESS_FILE",
    "QUERY_REASONER",
    "STATE_FILE",
    "CacheStats",
    "CandidateCache",
    "ClaraCollator",
    "ClaraModel",
    "ClaraSettings",
    "DataOrder",
    "EncoderBatch",
    "EncoderOutput",
    "GeneratorBatch",
    "GeneratorExample",
    "MemoryTokens",
    "Progress",
    "SavedTrainerState",
    "StageOneBatch",
    "StageOneExample",
    "StageOneLoss",
    "StaleCacheError",
    "StepReport",
    "TrainingResult",
    "TrainingSettings",
    "add_memory_tokens",
    "answer_cross_entropy",
    "checkpoint_name",
    "chunk_digest",
    "chunk_ids",
    "cosine_scores",
    "create_clara",
    "fit_embeddings",
    "latest_checkpoint",
    "learning_rate_factor",
    "load_clara",
    "load_trainer_state",
    "lora_config",
    "masked_mean",
    "memory_mse",
    "memory_rows",
    "memory_token_names",
    "read_metadata",
    "restore_rng",
    "rng_state",
    "save_checkpoint",
    "save_clara",
    "select_memories",
    "soft_topk",
    "stage_one_loss",
    "straight_through_topk",
    "train_stage_one",
    "trainable_digest",
    "world",
]
