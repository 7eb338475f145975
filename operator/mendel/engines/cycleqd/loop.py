"""The CycleQD runner: wires sampling, crossover, mutation, materialisation, evaluation
and the archives into the generation loop, with checkpoints and observer callbacks.

Each generation breeds `childrenPerGeneration` children (one in the paper) from the
archives as they stand, evaluates them (in parallel over ranks, see `distributed`), then
offers them to the archives in child order. The quality task cycles every `cycleInterval`
generations (q = (generation // interval) % K); all random draws of child i of generation
g come from a generator derived from (seed, g, i), so a resumed run, or one spread over
another number of ranks, repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from mendel.api.qdevolution import QDEvolutionSpec
from mendel.engines.cycleqd.aggregation import aggregate
from mendel.engines.cycleqd.archive import Archive, binnings_for, offer_to_all
from mendel.engines.cycleqd.checkpoint import load_latest, save_checkpoint
from mendel.engines.cycleqd.crossover import crossover, draw_coefficients
from mendel.engines.cycleqd.distributed import SINGLE_PROCESS, Outcome, Ranks, evaluate_share
from mendel.engines.cycleqd.errors import (
    CheckpointMismatchError,
    CycleQDError,
    EvaluationFailed,
    TooManyFailedEvaluations,
)
from mendel.engines.cycleqd.genome import Genome, child_id, expert_id
from mendel.engines.cycleqd.materialize import bounded_recipe, materialize, materialize_bounded
from mendel.engines.cycleqd.merge_methods import get_method, method_parameters
from mendel.engines.cycleqd.mutation import mutate, noise_basis
from mendel.engines.cycleqd.observer import Evaluate, NullObserver, Observer, RunSummary
from mendel.engines.cycleqd.recipe import Recipe
from mendel.engines.cycleqd.sampling import sample_parents
from mendel.engines.cycleqd.seeds import derive_seed, generator
from mendel.engines.cycleqd.state import EngineState
from mendel.engines.cycleqd.taskvectors import TaskVectorBank, place_bank

__all__ = ["CycleQD", "CycleQDResult", "quality_task", "validate_scores"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleQDResult:
    """What a finished run returns; the final model is left materialised in the model
    (of rank 0, which evaluates it)."""

    final: Genome
    final_scores: Mapping[str, float] | None
    summary: RunSummary
    state: EngineState


def quality_task(generation: int, tasks: Sequence[str], interval: int) -> str:
    """The quality task of a generation: tasks[(generation // interval) % K].

    Raises:
        ValueError: If there are no tasks or the interval is below 1.
    """
    if not tasks or interval < 1:
        raise ValueError(f"need tasks and an interval >= 1, got {len(tasks)} and {interval}")
    return tasks[(generation // interval) % len(tasks)]


def validate_scores(raw: Mapping[str, float], tasks: Sequence[str]) -> dict[str, float]:
    """Keep one finite float per task.

    Raises:
        ValueError: If a task's score is missing or not finite.
    """
    scores: dict[str, float] = {}
    for task in tasks:
        if task not in raw:
            raise ValueError(f"evaluation returned no score for task '{task}'")
        value = float(raw[task])
        if not math.isfinite(value):
            raise ValueError(f"evaluation returned a non-finite score for task '{task}'")
        scores[task] = value
    return scores


class CycleQD:
    """Runs (or resumes) one CycleQD evolution against a resident model.

    Args:
        spec: The QDEvolution spec (algorithm, budget, checkpointing, seed).
        bank: Base weights, expert task vectors and SVD bases (see `build_bank`); placed
            on the model's device and precision here unless it already is (`place_bank`;
            on a GPU too small to hold the base as well, the base stays in host memory).
        model: The resident model whose parameters are overwritten for every child.
        evaluate: Scores the resident model on every task.
        checkpoint_dir: Where checkpoints go; an existing one is resumed. None: no checkpoints.
        observer: Progress and lineage callbacks.
        ranks: The processes evaluating children; every rank runs this same loop, rank 0
            alone writes checkpoints and calls the observer. Default: this process alone.
        keep_checkpoints: How many checkpoints rank 0 retains; None keeps all (when another
            process mirrors them and prunes).

    Raises:
        ValueError: If the spec names an expert the bank lacks.
    """

    def __init__(
        self,
        spec: QDEvolutionSpec,
        bank: TaskVectorBank,
        model: nn.Module,
        evaluate: Evaluate,
        *,
        checkpoint_dir: Path | None = None,
        observer: Observer | None = None,
        ranks: Ranks = SINGLE_PROCESS,
        keep_checkpoints: int | None = 2,
    ) -> None:
        missing = [e.name for e in spec.experts if e.name not in bank.task_vectors]
        if missing:
            raise ValueError(f"expert '{missing[0]}' has no task vector in the bank")
        self.spec = spec
        self.bank = place_bank(bank, model)
        self.model = model
        self.evaluate = evaluate
        self.checkpoint_dir = checkpoint_dir
        self.ranks = ranks
        self.leads = ranks.rank == 0
        self.observer: Observer = (observer if self.leads else None) or NullObserver()
        self.keep_checkpoints = keep_checkpoints
        self.tasks = tuple(t.name for t in spec.tasks)
        self.task_expert = {t.name: t.expert for t in spec.tasks}

    def run(self) -> CycleQDResult:
        """Run generations until budget.generations, then aggregate the final model.

        Raises:
            TooManyFailedEvaluations: Past budget.maxFailedEvaluations (after checkpointing).
            CheckpointMismatchError: If the checkpoint directory holds another run.
        """
        state = self._start()
        total = self.spec.budget.generations
        every = self.spec.checkpoint.every_generations
        while state.generation < total:
            quality = self._generation(state)
            state.generation += 1
            self.observer.on_generation(self._summary(state, quality))
            over = state.failures > self.spec.budget.max_failed_evaluations
            if over or state.generation % every == 0 or state.generation == total:
                self._checkpoint(state)
            if over:
                raise TooManyFailedEvaluations(
                    f"{state.failures} children failed evaluation, more than "
                    f"budget.maxFailedEvaluations={self.spec.budget.max_failed_evaluations}"
                )
        return self._finish(state)

    def _start(self) -> EngineState:
        state = load_latest(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        found = self.ranks.all_gather(None if state is None else state.generation)
        if len(set(found)) > 1:  # before any rank writes: rank 0 writes after a collective
            raise CycleQDError(
                f"ranks found different checkpoints in {self.checkpoint_dir} (generations "
                f"{found}); every rank must read the same checkpoint directory"
            )
        if state is None:
            return self._initialise()
        self._check_same_run(state)
        logger.info("resuming CycleQD at generation %d", state.generation)
        return state

    def _check_same_run(self, state: EngineState) -> None:
        experts = tuple(e.name for e in self.spec.experts)
        mine = (self.spec.seed, self.tasks, experts)
        theirs = (state.seed, state.tasks, state.experts)
        if mine != theirs:
            raise CheckpointMismatchError(
                f"checkpoint in {self.checkpoint_dir} is from another run: (seed, tasks, "
                f"experts) {theirs} != {mine}"
            )

    def _initialise(self) -> EngineState:
        experts = tuple(e.name for e in self.spec.experts)
        state = EngineState(seed=self.spec.seed, tasks=self.tasks, experts=experts)
        genomes = [Genome(expert_id(n), Recipe.expert(n), "expert") for n in experts]

        def evaluate_expert(index: int) -> Outcome:
            materialize(genomes[index].recipe, self.model, self.bank)
            return self._outcome()

        scores: dict[str, dict[str, float]] = {}
        outcomes = evaluate_share(self.ranks, len(genomes), evaluate_expert)
        for name, outcome in zip(experts, outcomes, strict=True):
            if outcome.scores is None:
                raise CycleQDError(f"evaluating expert '{name}' failed: {outcome.error}")
            scores[name] = dict(outcome.scores)
        state.expert_scores = scores
        binnings = binnings_for(self.spec.tasks, scores)
        for task in self.tasks:
            others = tuple(t for t in self.tasks if t != task)
            state.archives[task] = Archive(task, others, {o: binnings[o] for o in others})
        for name, genome in zip(experts, genomes, strict=True):
            state.store.add(genome)
            cells = offer_to_all(state.archives, genome.id, scores[name])
            if cells:
                self.observer.on_child_accepted(genome, scores[name], cells)
        self.observer.on_generation(self._summary(state, None))
        self._checkpoint(state)
        return state

    def _outcome(self) -> Outcome:
        """Score the resident model; its failures are data (counted and bounded)."""
        try:
            with torch.no_grad():
                raw = self.evaluate(self.model)
            return Outcome(scores=validate_scores(raw, self.tasks))
        except Exception as error:
            return Outcome(error=str(error) or type(error).__name__)

    def _breed(self, state: EngineState, quality: str, index: int) -> Genome:
        gen = state.generation
        algo = self.spec.algorithm
        # The first child keeps the one-child generation's stream, so runs of one child
        # per generation are unchanged by batching.
        labels = ("generation", gen) if index == 0 else ("generation", gen, "child", index)
        rng = generator(state.seed, *labels)
        seed = derive_seed(state.seed, *labels)
        p1, p2 = sample_parents(
            state.archives[quality],
            algo.sampling.method,
            algo.sampling.alpha_low,
            algo.sampling.alpha_high,
            rng,
            # Experts stay in the store, so breeding goes on even when ties left only one
            # genome in the archives (e.g. every model scores 0 at first).
            pool=sorted(set(state.live_ids()) | {expert_id(e) for e in state.experts}),
        )
        weights = draw_coefficients(
            2, algo.crossover.coefficient_mean, algo.crossover.coefficient_std, rng
        )
        method = get_method(algo.crossover.method)
        params = method_parameters(method, algo.crossover)
        parents = {p1: state.store.recipe(p1), p2: state.store.recipe(p2)}
        child = crossover(method.name, parents, weights, params, seed)
        expert = self.task_expert[quality]
        svd_ranks = self.bank.ranks(expert) if algo.mutation.method == "svd" else {}
        child = mutate(
            child,
            algo.mutation.method,
            expert=expert,
            ranks=svd_ranks,
            rate=algo.mutation.rate,
            std=algo.mutation.std,
            rng=rng,
            noise=noise_basis(state.seed),
        )
        return Genome(
            id=child_id(gen, index),
            recipe=child,
            operator=f"{method.name}+{algo.mutation.method}",
            generation=gen,
            parents=(p1, p2),
            parent_weights=weights,
            seed=seed,
            quality_task=quality,
        )

    def _generation(self, state: EngineState) -> str:
        """Breed every child from the archives as they stand, evaluate them (child i on
        rank i % world), then offer them in child order; prune the store once, after."""
        quality = quality_task(state.generation, self.tasks, self.spec.algorithm.cycle_interval)
        count = self.spec.algorithm.children_per_generation
        children = [self._breed(state, quality, index) for index in range(count)]
        kept: dict[int, Recipe] = {}

        def evaluate_child(index: int) -> Outcome:
            recipe = children[index].recipe
            kept[index] = materialize_bounded(recipe, self.model, self.bank, state.store.recipe)
            return self._outcome()

        outcomes = evaluate_share(self.ranks, count, evaluate_child)
        accepted = False
        for index, (child, outcome) in enumerate(zip(children, outcomes, strict=True)):
            if outcome.scores is None:
                state.failures += 1
                logger.warning(
                    "evaluation of %s failed (%d so far): %s", child.id, state.failures,
                    outcome.error,
                )
                self.observer.on_child_failed(child, EvaluationFailed(outcome.error))
                continue
            cells = offer_to_all(state.archives, child.id, outcome.scores)
            if not cells:
                self.observer.on_child_rejected(child, outcome.scores)
                continue
            if index in kept:  # evaluated here: the recipe kept while materialising
                recipe = kept[index]
            else:  # evaluated by another rank: the same recipe, computed here
                recipe = bounded_recipe(child.recipe, self.model, self.bank, state.store.recipe)
            genome = replace(child, recipe=recipe)
            state.store.add(genome)
            accepted = True
            self.observer.on_child_accepted(genome, outcome.scores, cells)
        if accepted:
            state.store.prune([*state.live_ids(), *(expert_id(e) for e in state.experts)])
        return quality

    def _summary(self, state: EngineState, quality: str | None) -> RunSummary:
        return RunSummary(
            generation=state.generation,
            total=self.spec.budget.generations,
            quality_task=quality,
            failed=state.failures,
            archives=tuple(state.archives[t].summary() for t in self.tasks),
        )

    def _checkpoint(self, state: EngineState) -> None:
        if self.checkpoint_dir is None or not self.leads:
            return
        path = save_checkpoint(self.checkpoint_dir, state, keep=self.keep_checkpoints)
        self.observer.on_checkpoint(path)

    def _finish(self, state: EngineState) -> CycleQDResult:
        recipes = {gid: state.store.recipe(gid) for gid in state.store.ids}
        temperature = self.spec.algorithm.aggregation.temperature
        final = aggregate(state.archives, recipes, temperature, state.generation)

        def evaluate_final(_: int) -> Outcome:
            materialize(final.recipe, self.model, self.bank, state.store.recipe)
            return self._outcome()

        (outcome,) = evaluate_share(self.ranks, 1, evaluate_final)  # on rank 0
        scores = None if outcome.scores is None else dict(outcome.scores)
        if outcome.scores is None:  # reported, not fatal: the final recipe is still valid
            logger.warning("evaluation of the final model failed: %s", outcome.error)
            self.observer.on_child_failed(final, EvaluationFailed(outcome.error))
        self.observer.on_finished(final, scores)
        summary = self._summary(state, None)
        return CycleQDResult(final=final, final_scores=scores, summary=summary, state=state)
