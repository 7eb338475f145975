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

__all__ = [
    "ADAPTERS",
    "COMPRESSOR",
    "GENERATOR",
    "IGNORE_INDEX",
    "MEMORY_FILE",
    "MEMORY_SLOT",
    "METADATA_FILE",
    "QUERY_REASONER",
    "ClaraCollator",
    "ClaraModel",
    "ClaraSettings",
    "EncoderBatch",
    "EncoderOutput",
    "GeneratorBatch",
    "GeneratorExample",
    "MemoryTokens",
    "StageOneBatch",
    "StageOneExample",
    "StageOneLoss",
    "add_memory_tokens",
    "answer_cross_entropy",
    "chunk_ids",
    "cosine_scores",
    "create_clara",
    "fit_embeddings",
    "load_clara",
    "lora_config",
    "masked_mean",
    "memory_mse",
    "memory_rows",
    "memory_token_names",
    "read_metadata",
    "save_clara",
    "select_memories",
    "soft_topk",
    "stage_one_loss",
    "straight_through_topk",
]
