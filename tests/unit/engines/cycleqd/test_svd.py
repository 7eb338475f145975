from __future__ import annotations

import pytest
import torch

from mendel.engines.cycleqd import (
    Recipe,
    direction_term,
    expert_svd,
    materialize,
    svd_factors,
    svd_mutation_weights,
)
from mendel.engines.cycleqd.svd import is_svd_target


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        pytest.param("model.layers.0.self_attn.q_proj.weight", (4, 4), True, id="matrix"),
        pytest.param("model.layers.0.input_layernorm.weight", (4,), False, id="norm-1d"),
        pytest.param("model.norm.weight", (4, 4), False, id="norm-named-2d"),
        pytest.param("some.bias", (4,), False, id="bias-1d"),
    ],
)
def test_is_svd_target_skips_norms_and_vectors(name, shape, expected):
    assert is_svd_target(name, torch.zeros(shape)) is expected


def test_svd_factors_full_rank_reconstructs_matrix():
    tau = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    f = svd_factors(tau)
    assert (f.u.shape, f.s.shape, f.vh.shape) == ((6, 4), (4,), (4, 4))
    torch.testing.assert_close(f.u @ torch.diag(f.s) @ f.vh, tau, atol=1e-5, rtol=0)


def test_svd_factors_truncates_to_rank():
    tau = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    f = svd_factors(tau, rank=2)
    assert (f.u.shape, f.s.shape, f.vh.shape, f.rank) == ((6, 2), (2,), (2, 4), 2)


@pytest.mark.parametrize(
    "bad", [pytest.param(torch.zeros(3), id="1d"), pytest.param(torch.zeros(2, 2, 2), id="3d")]
)
def test_svd_factors_rejects_non_matrices(bad):
    with pytest.raises(ValueError, match="2-D"):
        svd_factors(bad)


def test_direction_term_equals_u_diag_ws_vt():
    tau = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    f = svd_factors(tau)
    w = torch.tensor([0.1, 0.0, 0.05])
    expected = f.u @ torch.diag(w * f.s) @ f.vh
    torch.testing.assert_close(direction_term(f, w), expected, atol=1e-6, rtol=0)


def test_direction_term_rejects_wrong_count():
    f = svd_factors(torch.eye(3))
    with pytest.raises(ValueError, match="expected 3 direction weights"):
        direction_term(f, torch.zeros(2))


def test_expert_svd_covers_matrices_only(bank):
    tau = bank.task_vectors["alpha"]
    factors = expert_svd(tau, rank=None)
    expected = {n for n, t in tau.items() if t.ndim == 2 and "norm" not in n}
    assert set(factors) == expected
    assert all("norm" not in n for n in factors)


@pytest.mark.parametrize("rate", [pytest.param(0.1, id="paper"), pytest.param(0.5, id="wide")])
def test_svd_mutation_weights_lie_in_zero_rate(rate):
    w = svd_mutation_weights({"a": 50, "b": 7}, rate, torch.Generator().manual_seed(0))
    assert {k: v.numel() for k, v in w.items()} == {"a": 50, "b": 7}
    for v in w.values():
        assert float(v.min()) >= 0.0 and float(v.max()) <= rate


def test_svd_mutation_materialises_u_diag_ws_vt(bank, model):
    ranks = bank.ranks("beta")
    w = svd_mutation_weights(ranks, 0.1, torch.Generator().manual_seed(4))
    recipe = Recipe.expert("alpha").with_directions("beta", w)
    materialize(recipe, model, bank)
    params = dict(model.named_parameters())
    for name, param in params.items():
        expected = bank.base[name] + bank.task_vectors["alpha"][name]
        if name in w:
            f = bank.svd["beta"][name]
            expected = expected + f.u @ torch.diag(w[name] * f.s) @ f.vh
        torch.testing.assert_close(param.detach(), expected, atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_svd_on_the_gpu_matches_the_cpu_and_comes_back_to_the_matrix_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    matrix = torch.randn(96, 64, generator=torch.Generator().manual_seed(0))
    on_gpu = svd_factors(matrix, rank=16, device="cuda")
    on_cpu = svd_factors(matrix, rank=16)
    assert on_gpu.u.device == matrix.device
    torch.testing.assert_close(on_gpu.s, on_cpu.s, rtol=1e-5, atol=1e-5)
    rebuilt = on_gpu.u @ torch.diag(on_gpu.s) @ on_gpu.vh
    expected = on_cpu.u @ torch.diag(on_cpu.s) @ on_cpu.vh
    torch.testing.assert_close(rebuilt, expected, rtol=1e-4, atol=1e-4)
