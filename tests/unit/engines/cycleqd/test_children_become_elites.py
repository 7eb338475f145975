"""With an evaluator whose optimum mixes experts, the search must do what CycleQD is for:
children displace the experts as the best elite of every archive, and the aggregated final
model is a better generalist than any expert."""

from __future__ import annotations

import pytest

from mendel.engines.cycleqd import CycleQD, Recipe, expert_id, materialize

from .conftest import EXPERTS, MIXTURES, MixtureProbe, tiny_model


def test_the_mixture_probe_scores_a_mix_of_experts_above_every_expert(bank):
    probe, model = MixtureProbe(bank), tiny_model()
    expert_scores = {}
    for name in EXPERTS:
        materialize(Recipe.expert(name), model, bank)
        expert_scores[name] = probe(model)
    for task, mix in MIXTURES.items():
        materialize(Recipe(coefficients=dict(mix)), model, bank)
        optimum = probe(model)[task]
        assert optimum == pytest.approx(1.0, abs=1e-6)
        assert max(scores[task] for scores in expert_scores.values()) < optimum - 0.05


@pytest.mark.parametrize(
    "algorithm",
    [
        pytest.param({}, id="linear-svd-elite"),
        pytest.param(
            {"crossover": {"method": "ties"}, "mutation": {"method": "gaussian"}},
            id="ties-gaussian",
        ),
    ],
)
def test_children_become_the_best_elites_and_the_final_model_generalises(
    bank, spec_factory, algorithm
):
    spec = spec_factory(algorithm=algorithm, budget={"generations": 30})
    result = CycleQD(spec, bank, tiny_model(), MixtureProbe(bank)).run()
    experts = result.state.expert_scores
    for task, archive in result.state.archives.items():
        best = archive.best()
        assert best is not None
        assert best.genome_id not in {expert_id(e) for e in EXPERTS}, task
        assert best.quality > max(scores[task] for scores in experts.values()), task
    assert result.final_scores is not None
    final_mean = sum(result.final_scores.values()) / len(MIXTURES)
    best_expert_mean = max(sum(s.values()) / len(s) for s in experts.values())
    assert final_mean > best_expert_mean + 0.05
