from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from mendel.engines.cycleqd import (
    Genome,
    Recipe,
    build_bank,
    load_experts,
    load_resident_model,
    materialize,
    model_card,
    save_model,
)

from .conftest import tiny_config, tiny_model


def _saved(tmp_path, name, model):
    path = tmp_path / name
    model.save_pretrained(str(path))
    return path


def test_load_experts_returns_matching_state_dicts(tmp_path):
    base = tiny_model(0)
    expert = tiny_model(1)
    base_dir, expert_dir = _saved(tmp_path, "base", base), _saved(tmp_path, "expert", expert)
    base_sd, experts = load_experts(base_dir, {"alpha": expert_dir})
    assert set(base_sd) == set(base.state_dict())
    for name, value in expert.state_dict().items():
        assert torch.equal(experts["alpha"][name], value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"intermediate_size": 48},
            "tensor 'model.layers.0.mlp.down_proj.weight' has shape",
            id="shape",
        ),
        pytest.param({"num_hidden_layers": 1}, "lacks tensor 'model.layers.1.", id="missing"),
        pytest.param({"num_hidden_layers": 3}, "has tensor 'model.layers.2.", id="extra"),
    ],
)
def test_load_experts_names_the_mismatching_tensor(tmp_path, change, message):
    config = tiny_config()
    for key, value in change.items():
        setattr(config, key, value)
    other = LlamaForCausalLM(config)
    base_dir, other_dir = _saved(tmp_path, "base", tiny_model()), _saved(tmp_path, "o", other)
    with pytest.raises(ValueError, match=f"expert 'odd'.*{message}"):
        load_experts(base_dir, {"odd": other_dir})


def test_save_model_writes_safetensors_and_card(tmp_path, bank):
    base_dir = _saved(tmp_path, "base", tiny_model())
    model = load_resident_model(base_dir, "float32")
    genome = Genome(
        "g000007",
        Recipe(coefficients={"alpha": 0.4, "beta": 0.6}),
        "ties+svd",
        7,
        ("g000001", "expert-beta"),
        (0.4, 0.6),
        99,
        "task-a",
    )
    materialize(genome.recipe, model, bank)
    out = save_model(
        model,
        tmp_path / "out",
        genome,
        scores={"task-a": 0.5},
        base_uri="/models/base",
        expert_uris={"alpha": "/m/a", "beta": "/m/b"},
    )
    weights = load_file(str(out / "model.safetensors"))
    for name, param in model.named_parameters():
        assert torch.equal(weights[name], param.detach())
    card = (out / "README.md").read_text()
    for needle in (
        "base_model: /models/base",
        "`g000001` weight 0.4",
        "task-a: 0.5",
        "https://arxiv.org/abs/2410.14735",
        "https://arxiv.org/abs/2306.01708",
        '"coefficients"',
        "ties+svd",
    ):
        assert needle in card


def test_model_card_for_aggregate_lists_parents_and_unevaluated():
    genome = Genome("final", Recipe.expert("a"), "aggregate", 12, ("g1", "g2"), (0.3, 0.7))
    card = model_card(genome, None, "base", {"a": "/m/a"})
    assert "- `g2` weight 0.7" in card and "- not evaluated" in card


def test_load_resident_model_rejects_unknown_precision(tmp_path):
    with pytest.raises(ValueError, match="unknown precision"):
        load_resident_model(tmp_path, "int8")  # type: ignore[arg-type]


def test_build_bank_needs_two_experts(base_state, expert_states):
    with pytest.raises(ValueError, match="at least two experts"):
        build_bank(base_state, {"alpha": expert_states["alpha"]})
