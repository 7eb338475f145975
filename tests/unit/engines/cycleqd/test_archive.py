from __future__ import annotations

import numpy as np
import pytest

from mendel.engines.cycleqd import Archive, Binning, binnings_for, default_range, offer_to_all

from .conftest import make_spec


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(-0.5, 0, id="below-min-clamped"),
        pytest.param(0.0, 0, id="at-min"),
        pytest.param(0.1, 0, id="first-bin"),
        pytest.param(0.25, 0, id="on-edge-goes-left"),
        pytest.param(0.2500001, 1, id="just-past-edge"),
        pytest.param(0.6, 2, id="middle"),
        pytest.param(1.0, 3, id="at-max"),
        pytest.param(7.0, 3, id="above-max-clamped"),
    ],
)
def test_binning_index_matches_reference_digitize(value, expected):
    binning = Binning(0.0, 1.0, 4)
    assert binning.index(value) == expected
    edges = np.linspace(0.0, 1.0, 5)
    assert binning.edges == edges.tolist()
    assert binning.index(value) == int(np.clip(np.digitize(value, edges, right=True) - 1, 0, 3))


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        pytest.param([0.2, 0.4], (0.85 * 0.2, 1.15 * 0.4), id="paper"),
        pytest.param([0.5, 0.95], (0.85 * 0.5, 1.0), id="capped-at-one"),
        pytest.param([0.0, 0.0], (0.0, 1.0), id="degenerate-all-zero"),
    ],
)
def test_default_range(scores, expected):
    assert default_range(scores) == pytest.approx(expected, abs=0, rel=1e-15)


def test_binnings_for_uses_descriptor_range_when_set():
    spec = make_spec()
    tasks = list(spec.tasks)
    tasks[0] = tasks[0].model_copy(
        update={"descriptor": tasks[0].descriptor.model_copy(update={"min": 0.1, "max": 0.3})}
    )
    scores = {
        "alpha": {"task-a": 0.5, "task-b": 0.2, "task-c": 0.4},
        "beta": {"task-a": 0.6, "task-b": 0.8, "task-c": 0.1},
    }
    binnings = binnings_for(tasks, scores)
    assert binnings["task-a"] == Binning(0.1, 0.3, 5)
    assert binnings["task-b"] == Binning(0.85 * 0.2, 1.15 * 0.8, 5)


def test_binning_rejects_empty_range():
    with pytest.raises(ValueError, match="low < high"):
        Binning(0.5, 0.5, 3)


def _archive() -> Archive:
    bins = {"b": Binning(0.0, 1.0, 4), "c": Binning(0.0, 1.0, 2)}
    return Archive("a", ("b", "c"), bins)


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        pytest.param(0.5, "g1", id="tie-keeps-incumbent"),
        pytest.param(0.4, "g1", id="lower-rejected"),
        pytest.param(0.5000001, "g2", id="strictly-higher-replaces"),
    ],
)
def test_archive_insertion_is_strict(incoming, kept):
    archive = _archive()
    assert archive.offer("g1", {"a": 0.5, "b": 0.1, "c": 0.9}) == (0, 1)
    taken = archive.offer("g2", {"a": incoming, "b": 0.2, "c": 0.8})
    assert taken == ((0, 1) if kept == "g2" else None)
    assert archive.cells[(0, 1)].genome_id == kept
    assert len(archive.cells) == 1


def test_offer_to_all_inserts_into_each_archive_that_accepts():
    a = Archive("a", ("b",), {"b": Binning(0, 1, 2)})
    b = Archive("b", ("a",), {"a": Binning(0, 1, 2)})
    b.offer("old", {"a": 0.9, "b": 0.99})
    taken = offer_to_all({"a": a, "b": b}, "new", {"a": 0.8, "b": 0.3})
    assert taken == {"a": (0,)}
    assert b.cells[(1,)].genome_id == "old"


def test_archive_summary_counts_and_qd_score():
    archive = _archive()
    archive.offer("g1", {"a": 0.5, "b": 0.1, "c": 0.9})
    archive.offer("g2", {"a": 0.25, "b": 0.9, "c": 0.1})
    s = archive.summary()
    assert (s.cells, s.filled, s.coverage, s.qd_score) == (8, 2, 0.25, 0.75)
    assert (s.best_quality, s.best_genome) == (0.5, "g1")


def test_archive_round_trips_through_dict():
    archive = _archive()
    archive.offer("g1", {"a": 0.1 + 0.2, "b": 0.1, "c": 0.9})
    again = Archive.from_dict(archive.to_dict())
    assert again == archive
    assert list(archive.to_dict()["cells"]) == ["0,1"]


def test_best_prefers_the_better_generalist_among_equal_quality() -> None:
    from mendel.engines.cycleqd.archive import Archive, Binning

    binnings = {"b": Binning(0.0, 1.0, 4), "c": Binning(0.0, 1.0, 4)}
    archive = Archive(task="a", descriptors=("b", "c"), binnings=binnings)
    archive.offer("narrow", {"a": 1.0, "b": 0.1, "c": 0.1})
    archive.offer("broad", {"a": 1.0, "b": 0.6, "c": 0.9})
    archive.offer("weaker", {"a": 0.9, "b": 0.99, "c": 0.99})
    best = archive.best()
    assert best is not None and best.genome_id == "broad"
