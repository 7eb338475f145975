"""A transformers causal LM that stays resident in memory and answers evaluator queries.

CycleQD materialises every child by writing merged weights into the parameters of one
model object, then evaluates it. The backend therefore holds a reference to that object
and only ever runs it: it never reloads, copies, moves or re-wraps the model, so an
in-place weight swap is seen by the next call, and a compiled or static-cache setup is
built once for the object instead of once per child.

Queries are batched: prompts are left-padded by hand (the shared tokenizer is never
mutated), positions are derived from the attention mask, and decoding is greedy, so the
same inputs give the same outputs. Log-likelihoods are computed from the logits of the
continuation positions only, which keeps memory at batch x continuation x vocabulary.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mendel.llm.protocol import cut_at_stop

__all__ = ["DTYPES", "LocalCausalLM", "load_causal_lm"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""Names accepted by `load_causal_lm` for the weights' dtype."""


_PLAIN_GREEDY: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}
"""Set explicitly because generate() fills every unset option from the checkpoint's
generation_config.json, and a shipped repetition penalty would silently change greedy
outputs (the sampling options are neutral values, so no warning is raised either)."""


class LocalCausalLM:
    """A `TextGenerator` over a model and tokenizer that are already in memory.

    Args:
        model: A transformers causal LM (any `*ForCausalLM`); it is put in eval mode.
        tokenizer: Its tokenizer; it needs a pad or an end-of-sequence token.
        static_cache: Generate with transformers' static KV cache, which lets transformers
            compile the decoding step on a GPU. Weights are swapped in place, so a new child
            costs no recompile; a new batch size or cache length does. Leave it off on CPU
            and for short runs, where compiling costs more than it saves.
        compile_config: A transformers `CompileConfig` for the static-cache decoding step
            (default: transformers' own, CUDA graphs through inductor, on GPUs only). Set
            `_compile_all_devices` on it to compile on the CPU too, as the tests do.

    Raises:
        ValueError: the tokenizer has neither a pad nor an end-of-sequence token.
    """

    def __init__(self, model: Any, tokenizer: Any, *, static_cache: bool = False,
                 compile_config: Any = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.static_cache = static_cache
        self.compile_config = compile_config
        model.eval()
        self._eos_ids = _eos_ids(model, tokenizer)
        if tokenizer.pad_token_id is not None:
            self._pad_id: int = tokenizer.pad_token_id
        elif self._eos_ids:
            self._pad_id = self._eos_ids[0]
        else:
            raise ValueError("the tokenizer has neither a pad token nor an end-of-sequence token")
        bos = tokenizer.bos_token_id
        self._start_id: int = bos if bos is not None else self._pad_id
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live; inputs are sent there."""
        return next(self.model.parameters()).device  # type: ignore[no-any-return]

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        """Greedy continuations of a batch of prompts (see `TextGenerator.generate`).

        Raises:
            ValueError: `max_new_tokens` is below 1.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        if not prompts:
            return []
        rows = [self._encode(prompt) for prompt in prompts]
        new_tokens = self.generate_ids(rows, max_new_tokens, stop=stop)
        return [cut_at_stop(self._decode(row), stop) for row in new_tokens]

    def generate_ids(
        self,
        rows: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        stop: Sequence[str] = (),
        logits_processor: Any = None,
    ) -> list[list[int]]:
        """New token ids for a batch of tokenized prompts, end-of-sequence and padding kept.

        Decoding is greedy over the scores `logits_processor` (a transformers
        `LogitsProcessorList`) leaves, so a processor that picks the token itself turns
        this into sampling without touching the model's generation defaults.

        Raises:
            ValueError: `max_new_tokens` is below 1.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        ids, mask = self._left_padded([list(row) for row in rows])
        config = self._generation_config(max_new_tokens, stop)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                tokenizer=self.tokenizer if stop else None,
                logits_processor=logits_processor,
            )
        return output[:, ids.shape[1] :].tolist()  # type: ignore[no-any-return]

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """The token ids that end a generation."""
        return tuple(self._eos_ids)

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Log-probability of each continuation given its context, in one forward pass.

        Raises:
            ValueError: a continuation is empty once tokenized.
        """
        if not pairs:
            return []
        rows, lengths = [], []
        for context, continuation in pairs:
            context_ids, continuation_ids = self._split_tokens(context, continuation)
            rows.append(context_ids + continuation_ids)
            lengths.append(len(continuation_ids))
        ids, mask = self._left_padded(rows)
        width = max(lengths)
        with torch.inference_mode():
            logits = self._last_logits(ids, mask, keep=width + 1)
            logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
            targets = ids[:, -width:]
            chosen = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            counts = torch.tensor(lengths, device=ids.device).unsqueeze(1)
            in_continuation = torch.arange(width, device=ids.device) >= width - counts
            sums = torch.where(in_continuation, chosen, torch.zeros_like(chosen)).sum(-1)
        return [float(value) for value in sums.tolist()]

    def _last_logits(self, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
        # Left padding shifts every row, so positions come from the mask, as in generate().
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": keep} if self._keeps_logits else {}
        output = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra
        )
        return output.logits[:, -keep:, :]  # type: ignore[no-any-return]

    def _split_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # As lm-evaluation-harness does: tokenize the joined text so that merges across the
        # boundary match how the model reads it, and move trailing spaces of the context
        # into the continuation, where tokenizers attach them.
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        context_ids = self._encode(context) if context else []
        continuation_ids = whole[len(context_ids) :]
        if not context_ids:
            context_ids = [self._start_id]
        if not continuation_ids:
            raise ValueError(f"continuation {continuation!r} is empty once tokenized")
        return context_ids, continuation_ids

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids if ids else [self._start_id]

    def _decode(self, tokens: list[int]) -> str:
        for index, token in enumerate(tokens):
            if token in self._eos_ids:
                tokens = tokens[:index]
                break
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[index, width - len(row) :] = 1
        device = self.device
        return ids.to(device), mask.to(device)

    def _generation_config(self, max_new_tokens: int, stop: Sequence[str]) -> Any:
        from transformers import GenerationConfig

        return GenerationConfig(  # type: ignore[no-untyped-call]
            **_PLAIN_GREEDY,
            max_new_tokens=max_new_tokens,
            pad_token_id=self._pad_id,
            eos_token_id=self._eos_ids or None,
            stop_strings=[marker for marker in stop if marker] or None,
            cache_implementation="static" if self.static_cache else None,
            compile_config=self.compile_config if self.static_cache else None,
        )


def load_causal_lm(
    path: str | Path,
    dtype: str | torch.dtype = "bfloat16",
    device: str | torch.device = "cuda",
    *,
    static_cache: bool = False,
) -> LocalCausalLM:
    """Load a model and tokenizer from a local Hugging Face directory, once.

    Args:
        path: Directory with config.json, weights and tokenizer files; nothing is downloaded.
        dtype: Weight dtype: 'float32', 'float16', 'bfloat16' or a torch dtype.
        device: Where the weights are placed, e.g. 'cuda', 'cuda:1' or 'cpu'.
        static_cache: See `LocalCausalLM`.

    Raises:
        ValueError: the directory does not exist or the dtype is unknown.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(path)
    if not directory.is_dir():
        raise ValueError(f"model directory {directory} does not exist")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, device_map=str(device), local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return LocalCausalLM(model, tokenizer, static_cache=static_cache)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        return []
    return [configured] if isinstance(configured, int) else list(configured)
