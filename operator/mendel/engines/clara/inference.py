"""Answering a question from compressed documents: CLaRa's generator, decoding greedily.

The generator reads a prompt whose memory slots hold the documents' memory states instead of
their text. transformers' `generate` takes `inputs_embeds` but then has to be told about
the spliced states, the explicit position ids and the adapter; a plain greedy loop over
`inputs_embeds` with the backbone's key/value cache is shorter and does exactly what
`ClaraModel.generator_logits` does for the first token, so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from mendel.engines.clara.batches import MEMORY_SLOT, GeneratorExample
from mendel.engines.clara.model import ClaraModel
from mendel.engines.clara.settings import GENERATOR
from mendel.engines.clara.store import CompressedStore

__all__ = ["DEFAULT_PROMPT", "answer", "answer_from_store", "build_prompt", "greedy_ids"]

DEFAULT_PROMPT = "Background:\n{documents}\n\nQuestion: {question}\nAnswer:"
"""`{documents}` becomes one MEMORY_SLOT per document, one a line; `{question}` the question."""


def build_prompt(question: str, documents: int, template: str | None = None) -> str:
    """The generator prompt for `question` with `documents` memory slots.

    Raises:
        ValueError: the template lacks `{documents}`, or the question holds a memory slot.
    """
    chosen = DEFAULT_PROMPT if template is None else template
    if "{documents}" not in chosen:
        raise ValueError("a prompt template needs a {documents} placeholder for the slots")
    if MEMORY_SLOT in question:
        raise ValueError(f"the question contains the memory-slot marker {MEMORY_SLOT}")
    slots = "\n".join([MEMORY_SLOT] * documents)
    return chosen.replace("{question}", question).replace("{documents}", slots)


def _flat(memories: Sequence[torch.Tensor], width: int) -> list[torch.Tensor]:
    blocks = []
    for index, memory in enumerate(memories):
        if memory.shape[-1] != width:
            raise ValueError(f"memory block {index} has width {memory.shape[-1]}, the model "
                             f"{width}")
        blocks.append(memory.reshape(-1, width))
    return blocks


def greedy_ids(model: ClaraModel, prompt: str, memories: Sequence[torch.Tensor], *,
               max_new_tokens: int, stop_token_ids: Sequence[int] | None = None,
               adapter: str | None = GENERATOR) -> list[int]:
    """Greedily decoded token ids after `prompt`, whose slots get `memories` in order.

    Args:
        model: The CLaRa model.
        prompt: Text with one MEMORY_SLOT per memory block.
        memories: Per document, [chunks, memory tokens, hidden] or [states, hidden].
        max_new_tokens: Most tokens to generate.
        stop_token_ids: Tokens that end the answer (not returned); None means the
            tokenizer's end-of-sequence token, an empty sequence never stops early.
        adapter: The adapter that generates; None for the base model without adapters
            (the raw-text and no-context baselines).

    Returns:
        The generated ids, without the stop token.

    Raises:
        ValueError: a negative `max_new_tokens`, or the slots do not match the memories.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must not be negative, got {max_new_tokens}")
    eos = model.collator.eos_id
    stops = set(stop_token_ids) if stop_token_ids is not None else (
        set() if eos is None else {eos})
    blocks = _flat(memories, model.hidden_size)
    device = model.memory_embeddings.device
    example = GeneratorExample(prompt, tuple(int(block.shape[0]) for block in blocks))
    batch = model.collator.generator_batch([example]).to(device)
    states = (torch.cat(blocks) if blocks else torch.zeros(0, model.hidden_size)).to(device)
    training = model.training
    if training:
        model.eval()
    try:
        with torch.no_grad():
            embeds = model.splice_memory(batch, states)
            if adapter is None:
                with model.peft.disable_adapter():
                    return _decode(model, embeds, batch.attention_mask, batch.position_ids,
                                   max_new_tokens, stops)
            model.use_adapter(adapter)
            return _decode(model, embeds, batch.attention_mask, batch.position_ids,
                           max_new_tokens, stops)
    finally:
        if training:
            model.train()


def _cache_name(model: ClaraModel) -> str:
    """transformers 5.24 renamed the key/value-cache argument `past_key_values` to `cache`;
    older and remote-code models still take the old name."""
    parameters = inspect.signature(model.backbone.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _decode(model: ClaraModel, embeds: torch.Tensor, mask: torch.Tensor,
            positions: torch.Tensor, max_new_tokens: int, stops: set[int]) -> list[int]:
    """The greedy loop: feed the whole prompt once, then one token at a time with the cache."""
    generated: list[int] = []
    cache: Any = None
    name = _cache_name(model)
    for _ in range(max_new_tokens):
        past = {} if cache is None else {name: cache}
        output = model.peft(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                            use_cache=True, **past)
        cache = getattr(output, "cache", None)
        if cache is None:
            cache = output.past_key_values
        token = int(output.logits[0, -1].argmax())
        if token in stops:
            break
        generated.append(token)
        step = torch.tensor([[token]], device=mask.device)
        embeds = model.embed(step)
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)
        positions = positions[:, -1:] + 1
    return generated


def answer(model: ClaraModel, question: str, memories: Sequence[torch.Tensor], *,
           max_new_tokens: int, prompt_template: str | None = None,
           stop_token_ids: Sequence[int] | None = None) -> str:
    """The generator's greedy answer to `question` from the documents' memory states.

    Args:
        model: The CLaRa model.
        question: The question text.
        memories: Per document, its memory states (as `CompressedStore.load` gives them).
        max_new_tokens: Most tokens to generate.
        prompt_template: A template with `{documents}` and `{question}`; None for
            DEFAULT_PROMPT. Apply a chat template here when the generator was tuned with one.
        stop_token_ids: As `greedy_ids`.

    Returns:
        The decoded answer, special tokens and surrounding whitespace removed.

    Raises:
        ValueError: a bad template or memory width.
    """
    prompt = build_prompt(question, len(memories), prompt_template)
    ids = greedy_ids(model, prompt, memories, max_new_tokens=max_new_tokens,
                     stop_token_ids=stop_token_ids)
    text: str = model.tokenizer.decode(ids, skip_special_tokens=True)
    return text.strip()


def answer_from_store(model: ClaraModel, store: CompressedStore, question: str,
                      document_ids: Sequence[str], *, max_new_tokens: int,
                      prompt_template: str | None = None,
                      stop_token_ids: Sequence[int] | None = None) -> str:
    """`answer` over stored documents, after checking the store was written by this model's
    compressor.

    Raises:
        StoreMismatchError: the store belongs to another compressor or backbone.
        KeyError: a document is not stored.
    """
    store.check_model(model)
    return answer(model, question, store.load(document_ids), max_new_tokens=max_new_tokens,
                  prompt_template=prompt_template, stop_token_ids=stop_token_ids)
