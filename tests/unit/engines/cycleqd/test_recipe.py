from __future__ import annotations

import json

import pytest
import torch

from mendel.engines.cycleqd import (
    Genome,
    GenomeStore,
    MergeTerm,
    NoiseTerm,
    Recipe,
    combine,
)


def _recipe() -> Recipe:
    return Recipe(
        coefficients={"a": 0.3, "b": 0.7},
        directions={"a": {"m1": torch.tensor([0.1, 0.2]), "m2": torch.tensor([0.5])}},
        noise=(NoiseTerm(5, 0.001),),
        merges=(MergeTerm("ties", ("g1", "g2"), (0.4, 0.6), {"density": 0.5}, 9),),
    )


def test_combine_sums_coefficients_and_directions_exactly():
    r1 = Recipe(coefficients={"a": 1.0}, directions={"a": {"m": torch.tensor([1.0, 2.0])}})
    r2 = Recipe(
        coefficients={"a": 0.5, "b": 1.0}, directions={"a": {"m": torch.tensor([4.0, 0.0])}}
    )
    out = combine([r1, r2], [0.5, 0.25])
    assert out.coefficients == {"a": 0.625, "b": 0.25}
    assert out.directions["a"]["m"].tolist() == [1.5, 1.0]


def test_scaled_scales_every_term():
    out = _recipe().scaled(2.0)
    assert out.coefficients == {"a": 0.6, "b": 1.4}
    assert out.directions["a"]["m1"].tolist() == pytest.approx([0.2, 0.4])
    assert out.noise == (NoiseTerm(5, 0.002),)
    assert out.merges[0].scale == 2.0


def test_combine_rejects_mismatched_ranks():
    r1 = Recipe(directions={"a": {"m": torch.zeros(2)}})
    r2 = Recipe(directions={"a": {"m": torch.zeros(3)}})
    with pytest.raises(ValueError, match="differ in rank"):
        combine([r1, r2], [1.0, 1.0])


def test_recipe_round_trips_through_small_json_and_tensors():
    recipe = _recipe()
    data = json.loads(json.dumps(recipe.to_dict()))
    again = Recipe.from_dict(data, recipe.tensors())
    assert again.to_dict() == recipe.to_dict()
    assert torch.equal(again.directions["a"]["m1"], recipe.directions["a"]["m1"])
    assert recipe.parents_needed == ("g1", "g2")


def test_recipe_from_dict_reports_missing_tensor():
    with pytest.raises(ValueError, match="'a/m1'"):
        Recipe.from_dict(_recipe().to_dict(), {})


def test_genome_round_trips_and_keeps_lineage():
    genome = Genome("g000004", _recipe(), "ties+svd", 4, ("g1", "g2"), (0.4, 0.6), 123, "task-a")
    data = json.loads(json.dumps(genome.to_dict()))
    again = Genome.from_dict(data, genome.recipe.tensors())
    assert again.to_dict() == genome.to_dict()
    assert data["parents"] == ["g1", "g2"] and data["operator"] == "ties+svd"


def test_store_prune_keeps_merge_ancestors_only():
    lin = Recipe.expert("a")
    store = GenomeStore(
        [
            Genome("g1", lin, "expert"),
            Genome("g2", lin, "expert"),
            Genome(
                "g3", Recipe(merges=(MergeTerm("ties", ("g1", "g2"), (0.5, 0.5), {}, 0),)), "ties"
            ),
            Genome("g4", lin, "linear"),
        ]
    )
    assert store.prune(["g3"]) == ["g4"]
    assert store.ids == ["g1", "g2", "g3"]


def test_store_round_trips_with_tensors():
    store = GenomeStore([Genome("g1", _recipe(), "x"), Genome("g2", Recipe.expert("b"), "expert")])
    again = GenomeStore.from_dict(json.loads(json.dumps(store.to_dict())), store.tensors())
    assert again.to_dict() == store.to_dict()
    with pytest.raises(ValueError, match="'nope'"):
        again.get("nope")


def test_combine_merges_terms_inherited_along_two_paths():
    shared = _recipe()
    out = combine([shared, shared.scaled(0.5), Recipe(noise=(NoiseTerm(6, 1.0),))], [1.0, 1.0, 2.0])
    assert out.noise == (NoiseTerm(5, 0.0015), NoiseTerm(6, 2.0))
    (merge,) = out.merges
    assert merge.scale == 1.5 and merge.parents == ("g1", "g2")
