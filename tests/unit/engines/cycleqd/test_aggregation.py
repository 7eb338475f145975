from __future__ import annotations

import math

import pytest
import torch

from mendel.engines.cycleqd import (
    Archive,
    Binning,
    aggregate,
    materialize,
    softmax_weights,
    svd_mutation_weights,
)
from mendel.engines.cycleqd.recipe import Recipe


def test_softmax_weights_with_temperature():
    w = softmax_weights([0.2, 0.6], 0.5)
    e = [math.exp(0.4), math.exp(1.2)]
    assert w == pytest.approx([e[0] / sum(e), e[1] / sum(e)], abs=1e-15)


def test_softmax_weights_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        softmax_weights([1.0], 0.0)


def _archive(task, other, entries):
    archive = Archive(task, (other,), {other: Binning(0.0, 1.0, 4)})
    for gid, scores in entries:
        archive.offer(gid, scores)
    return archive


def test_aggregate_is_softmax_weighted_sum_of_best_elites(bank, model):
    w = svd_mutation_weights(bank.ranks("beta"), 0.1, torch.Generator().manual_seed(3))
    recipes = {
        "ga": Recipe.expert("alpha"),
        "gb": Recipe(coefficients={"beta": 0.8, "gamma": 0.2}).with_directions("beta", w),
        "weak": Recipe.expert("gamma"),
    }
    archives = {
        "a": _archive("a", "b", [("ga", {"a": 0.9, "b": 0.1}), ("weak", {"a": 0.3, "b": 0.9})]),
        "b": _archive("b", "a", [("gb", {"a": 0.2, "b": 0.7}), ("weak", {"a": 0.3, "b": 0.6})]),
    }
    final = aggregate(archives, recipes, temperature=0.5, generation=12)
    beta = softmax_weights([0.9, 0.7], 0.5)
    assert (final.id, final.operator, final.parents) == ("final", "aggregate", ("ga", "gb"))
    assert final.parent_weights == tuple(beta)
    materialize(final.recipe, model, bank)
    for name, value in model.named_parameters():
        tau_b = 0.8 * bank.task_vectors["beta"][name] + 0.2 * bank.task_vectors["gamma"][name]
        if name in w:
            f = bank.svd["beta"][name]
            tau_b = tau_b + f.u @ torch.diag(w[name] * f.s) @ f.vh
        expected = bank.base[name] + beta[0] * bank.task_vectors["alpha"][name] + beta[1] * tau_b
        torch.testing.assert_close(value.detach(), expected, atol=1e-5, rtol=0)


def test_aggregate_needs_a_non_empty_archive():
    with pytest.raises(ValueError, match="empty"):
        aggregate({"a": _archive("a", "b", [])}, {}, 1.0, 0)
