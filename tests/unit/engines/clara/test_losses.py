"""The loss functions on hand-made tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mendel.engines.clara import (
    IGNORE_INDEX,
    answer_cross_entropy,
    masked_mean,
    memory_mse,
    stage_one_loss,
)


def test_answer_cross_entropy_counts_only_labelled_next_tokens():
    logits = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1]])
    expected = (F.cross_entropy(logits[0, 1:2], torch.tensor([3]))
                + F.cross_entropy(logits[0, 2:3], torch.tensor([1]))) / 2
    torch.testing.assert_close(answer_cross_entropy(logits, labels), expected)


def test_answer_cross_entropy_refuses_unlabelled_batches_and_bad_shapes():
    with pytest.raises(ValueError, match="no answer token"):
        answer_cross_entropy(torch.zeros(1, 3, 5), torch.full((1, 3), IGNORE_INDEX))
    with pytest.raises(ValueError, match="do not match"):
        answer_cross_entropy(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long))


def test_masked_mean_ignores_masked_positions_and_empty_rows_give_zero():
    states = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [6.0], [7.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(states, mask).tolist() == [[2.0], [0.0]]


def test_stage_one_loss_adds_the_weighted_mse():
    ce, mse = torch.tensor(2.0), memory_mse(torch.zeros(2, 3), torch.ones(2, 3))
    assert mse.item() == 1.0
    assert stage_one_loss(ce, mse, 0.1).total.item() == pytest.approx(2.1)
    unweighted = stage_one_loss(ce, mse, 0.0)
    assert unweighted.total.item() == 2.0 and unweighted.mse.item() == 1.0
