"""The straight-through top-k: exactly hard forward, soft gradient, taken candidates out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mendel.engines.clara import (
    cosine_scores,
    select_memories,
    soft_topk,
    straight_through_topk,
)


def reference_soft(scores, order, tau):
    """An independent soft path: slot j is softmax(scores / tau) with the first j choices
    removed."""
    slots = []
    for j in range(len(order[0])):
        masked = scores / tau
        for row, chosen in enumerate(order):
            masked = masked.index_put((torch.tensor([row] * j, dtype=torch.long),
                                       torch.tensor(chosen[:j], dtype=torch.long)),
                                      torch.tensor(float("-inf")))
        slots.append(torch.softmax(masked, dim=-1))
    return torch.stack(slots, dim=1)


def test_straight_through_topk_forward_is_exactly_the_hard_selection():
    scores = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    selection = straight_through_topk(scores.requires_grad_(), k=3, tau=0.02)
    order = scores.detach().topk(3, dim=-1).indices
    assert torch.equal(selection.detach(), F.one_hot(order, 8).float())


def test_straight_through_topk_gradient_is_the_soft_path():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 8, generator=generator)
    weights = torch.randn(3, 2, 8, generator=generator)
    tau = 0.5
    through = scores.clone().requires_grad_()
    (straight_through_topk(through, k=2, tau=tau) * weights).sum().backward()
    soft = scores.clone().requires_grad_()
    order = scores.topk(2, dim=-1).indices.tolist()
    (reference_soft(soft, order, tau) * weights).sum().backward()
    assert through.grad is not None and soft.grad is not None
    assert float(through.grad.abs().sum()) > 0
    torch.testing.assert_close(through.grad, soft.grad)


def test_soft_topk_gives_a_taken_candidate_no_mass_in_later_slots():
    # Divided by tau=0.02 the taken candidate scores 50 and the next best 15: the reference's
    # log(1e-8) = -18.4 penalty would leave the taken candidate with almost all the mass.
    scores = torch.tensor([[1.0, 0.3, -0.2, -0.9]])
    hard, soft = soft_topk(scores, k=2, tau=0.02)
    assert hard[0, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert hard[0, 1].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert soft[0, 1, 0].item() == 0.0
    torch.testing.assert_close(soft.sum(dim=-1), torch.ones(1, 2))
    leaky = torch.softmax(scores / 0.02 + torch.log(1 - hard[:, 0] + 1e-8), dim=-1)
    assert leaky[0, 0].item() > 0.99  # what the reference's mask does


def test_select_memories_forward_equals_the_chosen_candidates_and_trains_the_query():
    generator = torch.Generator().manual_seed(2)
    candidates = torch.randn(2, 5, 12, generator=generator)
    query = torch.randn(2, 12, generator=generator, requires_grad=True)
    scores = cosine_scores(query, candidates)
    selection = straight_through_topk(scores, k=2, tau=0.02)
    chosen = select_memories(selection, candidates)
    order = scores.detach().topk(2, dim=-1).indices
    expected = torch.stack([candidates[row, order[row]] for row in range(2)])
    assert torch.equal(chosen.detach(), expected)
    (chosen * torch.randn(chosen.shape, generator=generator)).sum().backward()
    assert query.grad is not None
    assert torch.isfinite(query.grad).all() and float(query.grad.abs().sum()) > 0


def test_cosine_scores_match_the_definition():
    query = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])
    torch.testing.assert_close(cosine_scores(query, candidates), torch.tensor([[1.0, 0.0, -1.0]]))


def test_straight_through_topk_never_selects_invalid_candidates():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0]])
    valid = torch.tensor([[False, True, True, True]])
    hard, soft = soft_topk(scores, k=2, tau=0.1, valid=valid)
    assert hard[0].argmax(dim=-1).tolist() == [1, 2]
    assert soft[..., 0].abs().sum().item() == 0.0


@pytest.mark.parametrize(("k", "valid_count"), [(0, 4), (3, 2)], ids=["k-zero", "too-few"])
def test_straight_through_topk_refuses_impossible_k(k, valid_count):
    valid = torch.zeros(1, 4, dtype=torch.bool)
    valid[0, :valid_count] = True
    with pytest.raises(ValueError, match="cannot select"):
        straight_through_topk(torch.zeros(1, 4), k=k, tau=0.02, valid=valid)


def test_straight_through_topk_survives_a_zero_temperature():
    scores = torch.randn(2, 6, generator=torch.Generator().manual_seed(3), requires_grad=True)
    selection = straight_through_topk(scores, k=3, tau=0.0)
    selection.sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
