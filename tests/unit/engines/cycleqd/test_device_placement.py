"""The bank lives where the resident model lives, in a precision that fits it, and
materialisation into a bfloat16 model accumulates in float32 and rounds exactly once."""

from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import (
    CycleQD,
    NoiseTerm,
    Recipe,
    build_bank,
    materialize,
    place_bank,
    svd_mutation_weights,
    tensor_delta,
)

from .conftest import EXPERTS, WeightProbe, state_of, tiny_model


def _bf16_exact(state):
    return {n: t.to(torch.bfloat16).float() for n, t in state.items()}


def _mixed_child(bank) -> Recipe:
    w = svd_mutation_weights(bank.ranks("beta"), 0.1, torch.Generator().manual_seed(1))
    recipe = Recipe(coefficients={"alpha": 0.55, "beta": 0.3, "gamma": 0.15})
    return recipe.with_directions("beta", w).with_noise(NoiseTerm(seed=4, scale=0.003))


def test_bfloat16_model_gets_float32_sum_rounded_once(bank):
    model = tiny_model().to(torch.bfloat16)
    placed = place_bank(bank, model)
    assert all(t.dtype == torch.bfloat16 for t in placed.task_vectors["alpha"].values())
    assert all(f.u.dtype == torch.bfloat16 for f in placed.svd["alpha"].values())
    recipe = _mixed_child(placed)
    materialize(recipe, model, placed)
    rounded_twice = 0
    for name, param in model.named_parameters():
        delta = tensor_delta(recipe, name, placed, {})
        assert delta is not None and delta.dtype == torch.float32
        base = placed.base[name]
        expected = (base.float() + delta).to(torch.bfloat16)
        assert param.dtype == torch.bfloat16
        assert torch.equal(param, expected), name
        twice = base.to(torch.bfloat16) + delta.to(torch.bfloat16)
        rounded_twice += int((twice != expected).sum())
    assert rounded_twice > 0  # rounding the delta first would be caught


def _fine_tuned(base, seed):
    """bfloat16 weights a few percent off the base's, as fine-tuning leaves them."""
    rng = torch.Generator().manual_seed(seed)
    return _bf16_exact(
        {n: t * (1 + 0.05 * torch.randn(t.shape, generator=rng)) for n, t in base.items()}
    )


def test_expert_is_reproduced_bit_for_bit_in_bfloat16_with_float32_task_vectors():
    # tau = expert - base is exact in float32 when the two bfloat16 values are within a
    # factor 2^15 of each other (as a fine-tune's are), so base + tau rounds back to the
    # expert; an expert weight near 0 under a large base weight would not be reproduced
    base = _bf16_exact(state_of(tiny_model()))
    experts = {e: _fine_tuned(base, 10 + i) for i, e in enumerate(EXPERTS)}
    model = tiny_model().to(torch.bfloat16)
    placed = place_bank(build_bank(base, experts), model, dtype=torch.float32)
    assert all(t.dtype == torch.bfloat16 for t in placed.base.values())  # exact, so cast
    assert all(t.dtype == torch.float32 for t in placed.task_vectors["beta"].values())
    for expert in EXPERTS:
        materialize(Recipe.expert(expert), model, placed)
        for name, param in model.named_parameters():
            assert torch.equal(param, experts[expert][name].to(torch.bfloat16)), (expert, name)


def test_float32_model_on_cpu_keeps_the_bank_as_built(bank, model):
    placed = place_bank(bank, model)
    for name, tensor in bank.base.items():
        assert placed.base[name] is tensor
    for expert, tau in bank.task_vectors.items():
        for name, tensor in tau.items():
            assert placed.task_vectors[expert][name] is tensor
            factors = bank.svd[expert].get(name)
            if factors is not None:
                assert placed.svd[expert][name].u is factors.u


def test_materialize_refuses_a_bank_on_another_device(bank):
    model = tiny_model().to("meta")
    with pytest.raises(ValueError, match="is on meta but the bank on cpu; place the bank"):
        materialize(Recipe.expert("alpha"), model, bank)


class RecordingProbe(WeightProbe):
    """WeightProbe on a CPU float32 copy of the weights, keeping every copy it scored."""

    def __init__(self, bank) -> None:
        super().__init__(bank)
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model):
        copy = tiny_model()
        cpu = {n: p.detach().float().cpu() for n, p in model.named_parameters()}
        copy.load_state_dict(cpu, strict=False)
        self.seen.append(cpu)
        return super().__call__(copy)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_three_generations_on_cuda_match_the_cpu_within_bfloat16_rounding(bank, spec_factory):
    spec = spec_factory(budget={"generations": 3})
    runs = {}
    for device in ("cpu", "cuda"):
        model = tiny_model().to(device=device, dtype=torch.bfloat16)
        probe = RecordingProbe(bank)
        result = CycleQD(spec, bank, model, probe).run()
        runs[device] = (result, probe.seen)
    (cpu_result, cpu_seen), (gpu_result, gpu_seen) = runs["cpu"], runs["cuda"]
    assert gpu_result.state.store.ids == cpu_result.state.store.ids
    assert len(gpu_seen) == len(cpu_seen) == 3 + 3 + 1  # experts, children, final
    for cpu_weights, gpu_weights in zip(cpu_seen, gpu_seen, strict=True):
        for name, value in cpu_weights.items():
            # float32 sums in another order may round to the neighbouring bfloat16 value:
            # at most one unit in the last place, 2^-7 relative
            torch.testing.assert_close(gpu_weights[name], value, rtol=2**-7, atol=1e-6)
