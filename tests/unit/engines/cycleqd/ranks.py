"""CycleQD on the ranks of a gloo group, for test_distributed: the function each spawned
process runs, the probes it scores with, and the snapshot both sides compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mendel.engines.cycleqd import CycleQD, CycleQDResult, TaskVectorBank, TorchRanks

from .conftest import MixtureProbe, WeightProbe, make_spec, tiny_model


class FlakyMixtureProbe(MixtureProbe):
    """MixtureProbe that fails about a quarter of the children, chosen by their weights
    alone (never an expert), so the same children fail whichever rank evaluates them."""

    def __init__(self, bank: TaskVectorBank) -> None:
        super().__init__(bank)
        self.expert_taus = [
            torch.cat([bank.task_vectors[e][n].flatten() for n in self.names])
            for e in sorted(bank.task_vectors)
        ]

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        scores = super().__call__(model)
        state = model.state_dict()
        delta = torch.cat([state[n].flatten().float() for n in self.names]) - self.base
        cosines = [torch.nn.functional.cosine_similarity(delta, t, dim=0) for t in self.expert_taus]
        is_expert = max(float(c) for c in cosines) > 0.9999
        if not is_expert and int(scores["task-a"] * 1e6) % 4 == 0:
            raise RuntimeError("the flaky probe failed this child")
        return scores


PROBES = {"weight": WeightProbe, "flaky-mixture": FlakyMixtureProbe}


@dataclass(frozen=True)
class Job:
    """One run: spec overrides, the probe's name, and where its checkpoints go."""

    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    probe: str = "weight"

    def run(self, bank: TaskVectorBank, root: Path, model_seed: int,
            ranks: Any = None) -> tuple[CycleQDResult, torch.nn.Module]:
        model = tiny_model(model_seed)
        extra = {} if ranks is None else {"ranks": ranks}
        engine = CycleQD(make_spec(**self.spec), bank, model, PROBES[self.probe](bank),
                         checkpoint_dir=root / self.name, **extra)
        return engine.run(), model


def snapshot(result: CycleQDResult, model: torch.nn.Module) -> dict[str, Any]:
    """Everything a run decides: archives, stored recipes down to every tensor, the final
    recipe, its scores and weights, and the failure count."""
    return {
        "archives": {t: a.to_dict() for t, a in result.state.archives.items()},
        "genomes": result.state.store.to_dict(),
        "tensors": result.state.store.tensors(),
        "final": result.final.to_dict(),
        "final_scores": result.final_scores,
        "failures": result.state.failures,
        "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
    }


def save_bank(bank: TaskVectorBank, path: Path) -> None:
    torch.save({"base": dict(bank.base), "taus": {k: dict(v) for k, v in bank.task_vectors.items()},
                "svd": {k: dict(v) for k, v in bank.svd.items()}}, path)


def load_bank(path: Path) -> TaskVectorBank:
    data = torch.load(path, weights_only=False)
    return TaskVectorBank(data["base"], data["taus"], data["svd"])


def run_rank(rank: int, world: int, directory: str, jobs: list[Job]) -> None:
    """A spawned process: join the group, run every job, rank 0 saves snapshots."""
    import torch.distributed as dist

    root = Path(directory)
    dist.init_process_group("gloo", init_method=f"file://{root / 'rendezvous'}",
                            rank=rank, world_size=world)
    try:
        bank = load_bank(root / "bank.pt")
        ranks = TorchRanks()
        for job in jobs:  # each rank starts from other resident weights: they must not matter
            result, model = job.run(bank, root, model_seed=11 + rank, ranks=ranks)
            if rank == 0:
                torch.save(snapshot(result, model), root / f"{job.name}.pt")
    finally:
        dist.destroy_process_group()
