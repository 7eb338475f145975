"""Tiny fixtures for the CycleQD engine tests: a 2-layer Llama (hidden 32, vocab 64),
experts made by perturbing it, and a deterministic evaluation that reads the weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mendel.api.qdevolution import QDEvolutionSpec
from mendel.engines.cycleqd import TaskVectorBank, build_bank

EXPERTS = ("alpha", "beta", "gamma")
TASKS = {"task-a": "alpha", "task-b": "beta", "task-c": "gamma"}
MIXTURES = {
    "task-a": {"alpha": 0.6, "beta": 0.4},
    "task-b": {"beta": 0.6, "gamma": 0.4},
    "task-c": {"gamma": 0.6, "alpha": 0.4},
}


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config()).eval()


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def perturbed(base: Mapping[str, torch.Tensor], seed: int, scale: float = 0.05):
    rng = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=rng) for k, v in base.items()}


@pytest.fixture(scope="module")
def base_state() -> dict[str, torch.Tensor]:
    return state_of(tiny_model())


@pytest.fixture(scope="module")
def expert_states(base_state) -> dict[str, dict[str, torch.Tensor]]:
    return {name: perturbed(base_state, 100 + i) for i, name in enumerate(EXPERTS)}


@pytest.fixture(scope="module")
def bank(base_state, expert_states) -> TaskVectorBank:
    return build_bank(base_state, expert_states)


@pytest.fixture
def model() -> LlamaForCausalLM:
    return tiny_model(seed=7)


class WeightProbe:
    """Scores = 0.5 + 0.5 * cos(theta - base, tau_expert), clamped: deterministic, cheap,
    and different for every distinct set of weights."""

    def __init__(self, bank: TaskVectorBank, tasks: Mapping[str, str] = TASKS) -> None:
        names = sorted(bank.base)
        self.names = names
        self.base = torch.cat([bank.base[n].flatten().float() for n in names])
        self.taus = {
            task: torch.cat([bank.task_vectors[e][n].flatten() for n in names])
            for task, e in tasks.items()
        }
        self.calls = 0

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        self.calls += 1
        state = model.state_dict()
        delta = torch.cat([state[n].flatten().float() for n in self.names]) - self.base
        out = {}
        for task, tau in self.taus.items():
            cos = torch.nn.functional.cosine_similarity(delta, tau, dim=0)
            out[task] = float(torch.clamp(0.5 + 0.5 * cos, 0.0, 1.0))
        return out


class MixtureProbe(WeightProbe):
    """Like WeightProbe, but each task's ideal delta mixes two experts' task vectors, so
    every expert scores below the optimum and merged children can beat it (as real skills
    benefit from other experts' knowledge)."""

    def __init__(
        self,
        bank: TaskVectorBank,
        mixtures: Mapping[str, Mapping[str, float]] = MIXTURES,
    ) -> None:
        super().__init__(bank)
        flat = {
            e: torch.cat([bank.task_vectors[e][n].flatten() for n in self.names])
            for e in bank.task_vectors
        }
        self.taus = {
            task: sum((w * flat[e] for e, w in mix.items()), torch.zeros_like(self.base))
            for task, mix in mixtures.items()
        }


def make_spec(**overrides: Any) -> QDEvolutionSpec:
    data: dict[str, Any] = {
        "baseModel": {"uri": "/models/base"},
        "experts": [{"name": e, "uri": f"/models/{e}"} for e in EXPERTS],
        "tasks": [
            {
                "name": t,
                "expert": e,
                "evaluator": {"type": "command", "command": ["true"]},
                "descriptor": {"bins": 5},
            }
            for t, e in TASKS.items()
        ],
        "budget": {"generations": 12},
        "checkpoint": {"everyGenerations": 3},
        "seed": 3,
    }
    data.update(overrides)
    return QDEvolutionSpec.model_validate(data)


@pytest.fixture
def spec_factory() -> Callable[..., QDEvolutionSpec]:
    return make_spec
