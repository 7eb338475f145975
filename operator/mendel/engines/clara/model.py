"""One causal LM, three named LoRA adapters and trainable memory-token rows: CLaRa's model.

The compressor, generator and query reasoner are PEFT LoRA adapters on the same frozen
backbone, switched per forward with PEFT's own `set_adapter` (transformers 5.24's
model-level adapter API needs a peft that does not exist yet, engines-offline §3.2.10).
Switching is global state, so every forward names its adapter. PEFT's `set_adapter` also
moves `requires_grad` to the active adapter; that would drop the gradient of an adapter used
earlier in the same step, so after each switch the trainable set is restored explicitly.

Only the memory tokens' input embeddings train, and they live in their own small parameter
(`memory_embeddings`, [memory tokens, hidden]) spliced into the input embeddings: the
vocabulary matrix stays frozen and out of the optimizer (the reference masks the gradient of
the whole matrix and keeps AdamW state for all of it, engines-offline §3.2.2).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from mendel.engines.clara.batches import (
    ClaraCollator,
    EncoderBatch,
    GeneratorBatch,
    StageOneBatch,
)
from mendel.engines.clara.losses import (
    StageOneLoss,
    answer_cross_entropy,
    masked_mean,
    memory_mse,
    stage_one_loss,
)
from mendel.engines.clara.settings import (
    ADAPTERS,
    COMPRESSOR,
    GENERATOR,
    ClaraSettings,
)
from mendel.engines.clara.tokens import MemoryTokens, add_memory_tokens, memory_token_names

__all__ = [
    "ClaraModel",
    "EncoderOutput",
    "create_clara",
    "fit_embeddings",
    "lora_config",
    "memory_rows",
]


@dataclass(frozen=True)
class EncoderOutput:
    """What one encoder forward gives, per row.

    Attributes:
        memory: [rows, memory tokens, hidden] final hidden states at the memory tokens.
        document_mean: [rows, hidden] float32 mean final state over the row's real
            non-memory tokens.
        memory_mean: [rows, hidden] float32 mean of `memory` over its tokens.
    """

    memory: torch.Tensor
    document_mean: torch.Tensor
    memory_mean: torch.Tensor


def lora_config(settings: ClaraSettings) -> LoraConfig:
    """A fresh LoRA config for one adapter (never shared: PEFT may edit it in place)."""
    modules = list(settings.target_modules)
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear" if modules == ["all-linear"] else modules,
        task_type="CAUSAL_LM",
    )


def fit_embeddings(base_model: Any, tokenizer: Any) -> None:
    """Grow the model's vocabulary to the tokenizer's when tokens were added.

    The new rows, of the input embeddings and of an untied output layer, are set to the
    mean of the old rows: deterministic, so a model rebuilt from a checkpoint computes the
    same logits (transformers' default adds random noise, which a reload would redraw).
    """
    old = base_model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return
    base_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        inputs = base_model.get_input_embeddings().weight
        inputs[old:] = inputs[:old].float().mean(dim=0).to(inputs.dtype)
        outputs = base_model.get_output_embeddings()
        if outputs is None or outputs.weight is inputs or outputs.weight.shape[0] <= old:
            return
        outputs.weight[old:] = outputs.weight[:old].float().mean(dim=0).to(outputs.weight.dtype)
        if getattr(outputs, "bias", None) is not None:
            outputs.bias[old:] = outputs.bias[:old].float().mean().to(outputs.bias.dtype)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy().tobytes())


class ClaraModel(nn.Module):
    """A PEFT model with the three CLaRa adapters, plus the trainable memory-token rows.

    Build it with `create_clara` (fresh adapters) or `mendel.engines.clara.io.load_clara`.
    Stage I trains the compressor, the generator and the memory rows (the default); stage II
    calls `set_trainable((QUERY_REASONER, GENERATOR), memory_tokens=False)`.
    """

    def __init__(self, peft_model: PeftModel, tokenizer: Any, memory: MemoryTokens,
                 settings: ClaraSettings, memory_init: torch.Tensor) -> None:
        super().__init__()
        backbone: Any = peft_model.get_base_model()
        width = backbone.get_input_embeddings().weight.shape[1]
        if tuple(memory_init.shape) != (memory.count, width):
            raise ValueError(f"memory rows {tuple(memory_init.shape)} do not fit "
                             f"{memory.count} tokens of width {width}")
        self.peft = peft_model
        self.tokenizer = tokenizer
        self.memory = memory
        self.settings = settings
        self.collator = ClaraCollator(tokenizer, memory, settings.chunk_size)
        self.memory_embeddings = nn.Parameter(memory_init.detach().clone().float())
        self._trainable: tuple[str, ...] = ()
        forward = inspect.signature(self.backbone.forward).parameters
        self._keeps_logits = "logits_to_keep" in forward
        self.set_trainable((COMPRESSOR, GENERATOR), memory_tokens=True)
        self.use_adapter(COMPRESSOR)

    @property
    def backbone(self) -> Any:
        """The causal LM itself, with the LoRA layers injected."""
        return self.peft.get_base_model()

    @property
    def hidden_size(self) -> int:
        """Width of the memory states."""
        return int(self.memory_embeddings.shape[1])

    @property
    def active_adapter(self) -> str:
        """The adapter the next forward runs with."""
        return str(self.peft.active_adapter)

    @property
    def trainable_adapters(self) -> tuple[str, ...]:
        """Adapters whose weights get gradients."""
        return self._trainable

    def use_adapter(self, name: str) -> None:
        """Make `name` the only active adapter, keeping the trainable set as it was.

        Raises:
            ValueError: no such adapter.
        """
        if name not in self.peft.peft_config:
            raise ValueError(f"unknown adapter {name!r}; have {sorted(self.peft.peft_config)}")
        self.peft.set_adapter(name, inference_mode=True)
        if self._trainable:
            self.peft.set_requires_grad(list(self._trainable), True)

    def set_trainable(self, adapters: Iterable[str], *, memory_tokens: bool) -> None:
        """Choose which adapters, and whether the memory rows, receive gradients.

        Raises:
            ValueError: an unknown adapter name.
        """
        chosen = tuple(adapters)
        unknown = set(chosen) - set(self.peft.peft_config)
        if unknown:
            raise ValueError(f"unknown adapters {sorted(unknown)}")
        self.peft.set_requires_grad(list(self.peft.peft_config), False)
        if chosen:
            self.peft.set_requires_grad(list(chosen), True)
        self._trainable = chosen
        self.memory_embeddings.requires_grad_(memory_tokens)

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        """The LoRA weights of one adapter."""
        marker = f".{name}."
        return [p for n, p in self.peft.named_parameters() if "lora_" in n and marker in n]

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: trainable LoRA weights (decayed), memory rows (never decayed).

        Frozen parts are left out, so the optimizer holds state only for what trains.
        """
        lora = [p for name in self._trainable for p in self.adapter_parameters(name)]
        groups: list[dict[str, Any]] = []
        if lora:
            groups.append({"name": "adapters", "params": lora, "weight_decay": weight_decay})
        if self.memory_embeddings.requires_grad:
            groups.append({"name": "memory_tokens", "params": [self.memory_embeddings],
                           "weight_decay": 0.0})
        return groups

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings, with the memory tokens' rows taken from `memory_embeddings`."""
        embeds: torch.Tensor = self.backbone.get_input_embeddings()(input_ids)
        offsets = input_ids - self.memory.first_id
        is_memory = (offsets >= 0) & (offsets < self.memory.count)
        rows = self.memory_embeddings.to(embeds.dtype)[offsets.clamp(0, self.memory.count - 1)]
        return torch.where(is_memory.unsqueeze(-1), rows, embeds)

    def _last_hidden(self, batch: EncoderBatch) -> torch.Tensor:
        inputs = {"inputs_embeds": self.embed(batch.input_ids),
                  "attention_mask": batch.attention_mask,
                  "position_ids": batch.position_ids, "use_cache": False}
        body = self.backbone.base_model
        if body is not self.backbone:
            states: torch.Tensor = body(**inputs).last_hidden_state
            return states
        hidden: torch.Tensor = self.backbone(**inputs, output_hidden_states=True).hidden_states[-1]
        return hidden

    def encode(self, batch: EncoderBatch, adapter: str = COMPRESSOR) -> EncoderOutput:
        """Run the backbone with `adapter` and read the memory states of every row."""
        self.use_adapter(adapter)
        hidden = self._last_hidden(batch)
        memory = hidden[:, -batch.memory_count:, :]
        return EncoderOutput(memory, masked_mean(hidden.float(), batch.document_mask),
                             memory.float().mean(dim=1))

    def splice_memory(self, batch: GeneratorBatch, memory_states: torch.Tensor) -> torch.Tensor:
        """The generator's input embeddings with `memory_states` [slots, hidden] written into
        the slots, row by row, left to right (differentiable in the states).

        Raises:
            ValueError: the number of memory states differs from the batch's slots.
        """
        slots = int(batch.slot_mask.sum())
        if tuple(memory_states.shape) != (slots, self.hidden_size):
            raise ValueError(f"{tuple(memory_states.shape)} memory states for {slots} slots "
                             f"of width {self.hidden_size}")
        embeds = self.embed(batch.input_ids)
        return embeds.masked_scatter(batch.slot_mask.unsqueeze(-1),
                                     memory_states.to(embeds.dtype))

    def generator_logits(self, batch: GeneratorBatch, memory_states: torch.Tensor,
                         adapter: str = GENERATOR) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator logits with `memory_states` [slots, hidden] spliced into the slots.

        Returns:
            (logits, labels) over the same trailing positions: only the answer span (plus
            one) when the model supports `logits_to_keep`, else every position.

        Raises:
            ValueError: the number of memory states differs from the batch's slots.
        """
        embeds = self.splice_memory(batch, memory_states)
        self.use_adapter(adapter)
        extra: dict[str, Any] = {}
        if self._keeps_logits and batch.answer_width:
            extra["logits_to_keep"] = batch.answer_width + 1
        output = self.peft(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False, **extra)
        logits: torch.Tensor = output.logits
        return logits, batch.labels[:, -logits.shape[1]:]

    def forward(self, batch: StageOneBatch, mse_weight: float) -> StageOneLoss:
        """Stage I / instruction-tuning loss: compress every chunk, generate the answer.

        The memory states are not detached, so the CE trains the compressor too (the
        reference's `both_separately`); the MSE reaches only the compressor side.
        """
        encoded = self.encode(batch.encoder, COMPRESSOR)
        logits, labels = self.generator_logits(
            batch.generator, encoded.memory.reshape(-1, self.hidden_size), GENERATOR)
        cross_entropy = answer_cross_entropy(logits, labels)
        mse = memory_mse(encoded.document_mean, encoded.memory_mean)
        return stage_one_loss(cross_entropy, mse, mse_weight)

    def copy_adapter(self, source: str, target: str) -> None:
        """Overwrite `target`'s LoRA weights with `source`'s (the query reasoner starts as a
        copy of the compressor, seed §3.1.6)."""
        state = get_peft_model_state_dict(self.peft, adapter_name=source,
                                          save_embedding_layers=False)
        set_peft_model_state_dict(self.peft, state, adapter_name=target)

    def compressor_fingerprint(self) -> str:
        """A digest of everything that determines memory states: compressor weights, memory
        rows and the compression settings. Keys caches and compressed stores."""
        digest = hashlib.sha256(json.dumps(self.settings.to_json(), sort_keys=True).encode())
        state = get_peft_model_state_dict(self.peft, adapter_name=COMPRESSOR,
                                          save_embedding_layers=False)
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(_tensor_bytes(state[name]))
        digest.update(_tensor_bytes(self.memory_embeddings))
        return digest.hexdigest()

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (non-reentrant, so no input grads
        are needed). Uses transformers 5's `activation_checkpointing_enable` where it exists
        (its older name is deprecated there)."""
        options = {"use_reentrant": False}
        backbone = self.backbone
        if hasattr(backbone, "activation_checkpointing_enable"):
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def memory_rows(base_model: Any, memory: MemoryTokens) -> torch.Tensor:
    """The embedding module's current output for the memory tokens: the initial rows.

    After `fit_embeddings` grew the vocabulary these are all the mean embedding; the
    memory tokens' different positions break the symmetry in the first step.
    """
    embeddings = base_model.get_input_embeddings()
    ids = torch.tensor(memory.ids, device=embeddings.weight.device)
    with torch.no_grad():
        rows: torch.Tensor = embeddings(ids).float()
    return rows


def create_clara(base_model: Any, tokenizer: Any, settings: ClaraSettings) -> ClaraModel:
    """Wrap `base_model` with fresh compressor, generator and query-reasoner adapters.

    Adds the memory tokens to `tokenizer` (in place) and grows the vocabulary when needed;
    the base weights are frozen.
    """
    memory = add_memory_tokens(tokenizer, memory_token_names(settings.memory_tokens))
    fit_embeddings(base_model, tokenizer)
    initial = memory_rows(base_model, memory)
    peft_model = get_peft_model(base_model, lora_config(settings), adapter_name=ADAPTERS[0])
    for name in ADAPTERS[1:]:
        peft_model.add_adapter(name, lora_config(settings))
    return ClaraModel(peft_model, tokenizer, memory, settings, initial)
