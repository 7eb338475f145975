"""The final model (paper section 3.4): a softmax-weighted merge of each archive's best.

final = base + sum_k softmax(f / T)_k * tau(elite_k), where elite_k is the best elite of
archive k and f_k its quality. Since each elite is a recipe, so is the final model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mendel.engines.cycleqd.archive import Archive
from mendel.engines.cycleqd.genome import FINAL_ID, Genome
from mendel.engines.cycleqd.recipe import Recipe, combine

__all__ = ["aggregate", "softmax_weights"]


def softmax_weights(values: Sequence[float], temperature: float) -> list[float]:
    """softmax(values / temperature), computed stably.

    Raises:
        ValueError: If no value is given or temperature is not positive.
    """
    if not values:
        raise ValueError("need at least one value")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    top = max(values)
    exps = [math.exp((v - top) / temperature) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def aggregate(
    archives: Mapping[str, Archive],
    recipes: Mapping[str, Recipe],
    temperature: float,
    generation: int,
) -> Genome:
    """The final genome from the best elite of every non-empty archive.

    Args:
        archives: Task -> archive.
        recipes: Genome id -> recipe (at least every best elite).
        temperature: Softmax temperature.
        generation: Recorded as the final genome's generation.

    Returns:
        A genome with id "final", operator "aggregate", the elites as parents and the
        softmax weights as parent weights.

    Raises:
        ValueError: If every archive is empty or a best elite's recipe is missing.
    """
    bests = [(task, best) for task, a in archives.items() if (best := a.best()) is not None]
    if not bests:
        raise ValueError("every archive is empty; nothing to aggregate")
    weights = softmax_weights([b.quality for _, b in bests], temperature)
    missing = [b.genome_id for _, b in bests if b.genome_id not in recipes]
    if missing:
        raise ValueError(f"no recipe for best elite '{missing[0]}'")
    recipe = combine([recipes[b.genome_id] for _, b in bests], weights)
    return Genome(
        id=FINAL_ID,
        recipe=recipe,
        operator="aggregate",
        generation=generation,
        parents=tuple(b.genome_id for _, b in bests),
        parent_weights=tuple(weights),
    )
