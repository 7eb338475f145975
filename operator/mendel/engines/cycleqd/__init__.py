"""CycleQD: quality-diversity evolution over merged LLMs (Kuroki et al., ICLR 2025).

A library with no Kubernetes import. Typical use (see `CycleQD` for the runner):

    base, experts = load_experts(base_dir, expert_dirs)
    bank = build_bank(base, experts, rank=spec.algorithm.mutation.rank,
                      svd_provider=SvdCache(cache_dir))
    model = load_resident_model(base_dir, spec.precision)
    result = CycleQD(spec, bank, model, evaluate, checkpoint_dir=ckpt, observer=obs).run()
    save_model(model, out_dir, result.final, scores=result.final_scores, ...)

Children are recipes over the experts' task vectors and singular bases, materialised in
place into one resident model; the model I/O lives in `mendel.engines.cycleqd.io`. Under
torchrun, pass `ranks=TorchRanks()` on every process: each holds a resident model and the
children of a generation are evaluated in parallel (see `distributed`).
"""

from __future__ import annotations

from mendel.engines.cycleqd.aggregation import aggregate, softmax_weights
from mendel.engines.cycleqd.archive import (
    Archive,
    ArchiveSummary,
    Binning,
    Cell,
    Elite,
    binnings_for,
    default_range,
    offer_to_all,
)
from mendel.engines.cycleqd.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from mendel.engines.cycleqd.crossover import crossover, draw_coefficients
from mendel.engines.cycleqd.distributed import (
    SINGLE_PROCESS,
    Outcome,
    Ranks,
    SingleProcess,
    TorchRanks,
    evaluate_share,
)
from mendel.engines.cycleqd.errors import (
    CheckpointMismatchError,
    CycleQDError,
    EvaluationFailed,
    TooManyFailedEvaluations,
)
from mendel.engines.cycleqd.genome import FINAL_ID, Genome, GenomeStore, child_id, expert_id
from mendel.engines.cycleqd.io import (
    load_experts,
    load_resident_model,
    load_state_dict,
    model_card,
    save_model,
)
from mendel.engines.cycleqd.loop import CycleQD, CycleQDResult, quality_task, validate_scores
from mendel.engines.cycleqd.materialize import (
    MAX_REPLAYED_ANCESTORS,
    Resolver,
    bounded_recipe,
    materialize,
    materialize_bounded,
    tensor_delta,
)
from mendel.engines.cycleqd.merge_methods import (
    MERGE_METHODS,
    MergeMethod,
    ParameterDef,
    get_method,
    method_parameters,
)
from mendel.engines.cycleqd.mutation import (
    NOISE_BASIS_SIZE,
    gaussian_mutation_terms,
    mutate,
    noise_basis,
    svd_mutation_weights,
)
from mendel.engines.cycleqd.observer import Evaluate, NullObserver, Observer, RunSummary
from mendel.engines.cycleqd.recipe import MergeTerm, NoiseTerm, Recipe, combine
from mendel.engines.cycleqd.sampling import elite_weights, sample_parents
from mendel.engines.cycleqd.seeds import derive_seed, generator
from mendel.engines.cycleqd.state import EngineState
from mendel.engines.cycleqd.svd import SvdFactors, direction_term, expert_svd, svd_factors
from mendel.engines.cycleqd.svdcache import SvdCache
from mendel.engines.cycleqd.taskvectors import (
    TaskVectorBank,
    build_bank,
    check_same_architecture,
    place_bank,
    task_vector,
)

__all__ = [
    "FINAL_ID",
    "MAX_REPLAYED_ANCESTORS",
    "MERGE_METHODS",
    "NOISE_BASIS_SIZE",
    "SINGLE_PROCESS",
    "Archive",
    "ArchiveSummary",
    "Binning",
    "Cell",
    "CheckpointMismatchError",
    "CycleQD",
    "CycleQDError",
    "CycleQDResult",
    "Elite",
    "EngineState",
    "Evaluate",
    "EvaluationFailed",
    "Genome",
    "GenomeStore",
    "MergeMethod",
    "MergeTerm",
    "NoiseTerm",
    "NullObserver",
    "Observer",
    "Outcome",
    "ParameterDef",
    "Ranks",
    "Recipe",
    "Resolver",
    "RunSummary",
    "SingleProcess",
    "SvdCache",
    "SvdFactors",
    "TaskVectorBank",
    "TooManyFailedEvaluations",
    "TorchRanks",
    "aggregate",
    "binnings_for",
    "bounded_recipe",
    "build_bank",
    "check_same_architecture",
    "child_id",
    "combine",
    "crossover",
    "default_range",
    "derive_seed",
    "direction_term",
    "draw_coefficients",
    "elite_weights",
    "evaluate_share",
    "expert_id",
    "expert_svd",
    "gaussian_mutation_terms",
    "generator",
    "get_method",
    "latest_checkpoint",
    "load_checkpoint",
    "load_experts",
    "load_latest",
    "load_resident_model",
    "load_state_dict",
    "materialize",
    "materialize_bounded",
    "method_parameters",
    "model_card",
    "mutate",
    "noise_basis",
    "offer_to_all",
    "place_bank",
    "prune_checkpoints",
    "quality_task",
    "sample_parents",
    "save_checkpoint",
    "save_model",
    "softmax_weights",
    "svd_factors",
    "svd_mutation_weights",
    "task_vector",
    "tensor_delta",
    "validate_scores",
]
