"""SVD mutation must push each child along the singular directions of the expert of the
generation's quality task (paper section 3.3), and of no other expert. Tasks are mapped to
experts out of name order, so following the task's position or an expert's name order
would be caught."""

from __future__ import annotations

import torch

from mendel.engines.cycleqd import CycleQD, NullObserver, Recipe, crossover, expert_id

from .conftest import EXPERTS, WeightProbe, tiny_model

PERMUTED = {"task-a": "gamma", "task-b": "alpha", "task-c": "beta"}
RATE = 0.1


class Children(NullObserver):
    """Every child, and the recipe of every genome a later child can pick as parent."""

    def __init__(self) -> None:
        self.children = []
        self.recipes = {expert_id(e): Recipe.expert(e) for e in EXPERTS}

    def on_child_accepted(self, genome, scores, cells):
        self.recipes[genome.id] = genome.recipe
        if genome.generation >= 0:
            self.children.append(genome)

    def on_child_rejected(self, genome, scores):
        self.children.append(genome)


def test_svd_mutation_follows_the_quality_tasks_expert(bank, spec_factory):
    tasks = [
        {
            "name": task,
            "expert": expert,
            "evaluator": {"type": "command", "command": ["true"]},
            "descriptor": {"bins": 5},
        }
        for task, expert in PERMUTED.items()
    ]
    spec = spec_factory(
        tasks=tasks,
        budget={"generations": 9},
        algorithm={"mutation": {"method": "svd", "rate": RATE}},
    )
    seen = Children()
    CycleQD(spec, bank, tiny_model(), WeightProbe(bank, PERMUTED), observer=seen).run()

    assert [c.quality_task for c in seen.children] == list(PERMUTED) * 3
    for child in seen.children:
        parents = {p: seen.recipes[p] for p in child.parents}
        merged = crossover("linear", parents, child.parent_weights, {}, 0)
        expert = PERMUTED[child.quality_task]
        assert child.recipe.coefficients == merged.coefficients
        for other in set(EXPERTS) - {expert}:  # untouched, bit for bit
            inherited = merged.directions.get(other, {})
            assert child.recipe.directions.get(other, {}).keys() == inherited.keys()
            for name, weights in inherited.items():
                assert torch.equal(child.recipe.directions[other][name], weights)
        mutated = child.recipe.directions[expert]
        assert mutated.keys() == bank.ranks(expert).keys()  # every matrix of that expert
        for name, weights in mutated.items():
            before = merged.directions.get(expert, {}).get(name, torch.zeros_like(weights))
            added = weights - before  # w ~ U[0, rate], up to float32 rounding of the sum
            assert added.min() >= -1e-6 and added.max() <= RATE + 1e-6, name
            assert added.std() > 0.1 * RATE, name
