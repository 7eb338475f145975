"""Shared pieces of the training-loop tests, and the body of one torch.distributed rank
(importable by name, as torch.multiprocessing.spawn needs)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed as dist
from peft.utils import get_peft_model_state_dict
from tests.support.tiny_models import char_tokenizer
from tests.unit.engines.clara.tiny import PROMPT, build_clara, tiny_base

from mendel.engines.clara import ADAPTERS, ClaraSettings, StageOneExample, load_clara
from mendel.engines.clara.checkpoint import MODEL_DIR, latest_checkpoint
from mendel.engines.clara.training import TrainingSettings, train_stage_one

FACTS = ("Ada wrote code.", "Bob fed a cat.", "Cy sang a lot.", "Di ran a race.",
         "Ed had tea.")
EXAMPLES = [StageOneExample(PROMPT, (fact,), f" {fact[:2]}") for fact in FACTS]
"""Five one-chunk documents with three-character answers: equal token counts, so
accumulated and sharded batches compute the same mean losses as one large batch."""
DROPOUT = ClaraSettings(compression_rate=4, chunk_size=16, lora_r=4, lora_alpha=8,
                        lora_dropout=0.1)
"""Adapter dropout on, so that an exact resume needs the RNG states too."""


class Killed(Exception):
    """Stands for the Pod being killed right after a step."""


def kill_at(step):
    def observer(report):
        if report.step == step:
            raise Killed
    return observer


def weights(model):
    state = {f"{adapter}:{name}": tensor.clone()
             for adapter in ADAPTERS
             for name, tensor in get_peft_model_state_dict(
                 model.peft, adapter_name=adapter, save_embedding_layers=False).items()}
    state["memory"] = model.memory_embeddings.detach().clone()
    return state


def resume_from_latest(directory: Path, settings: TrainingSettings, rng_seed: int):
    """A model rebuilt from the newest checkpoint, trained on to the end."""
    latest = latest_checkpoint(directory)
    assert latest is not None
    tokenizer = char_tokenizer()
    fresh = load_clara(tiny_base("llama", tokenizer), tokenizer, latest / MODEL_DIR)
    torch.manual_seed(rng_seed)  # a new process starts from other RNG states
    return fresh, train_stage_one(fresh, EXAMPLES, settings, checkpoint_dir=directory)


def distributed_rank(rank: int, world_size: int, init_file: str, out: str,
                     settings: TrainingSettings, kill_step: int) -> None:
    """One rank: a plain run without dropout, and a run with dropout both uninterrupted and
    killed after `kill_step` then resumed; saves what rank `rank` ended with."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    root = Path(out)
    try:
        plain = build_clara()
        plain_reports = train_stage_one(plain, EXAMPLES, settings).reports
        straight = build_clara(settings=DROPOUT)
        train_stage_one(straight, EXAMPLES, settings, checkpoint_dir=root / "straight")
        with contextlib.suppress(Killed):
            train_stage_one(build_clara(settings=DROPOUT), EXAMPLES, settings,
                            checkpoint_dir=root / "killed", observer=kill_at(kill_step))
        dist.barrier()
        fresh, resumed = resume_from_latest(root / "killed", settings, 1000 + rank)
        torch.save({"plain": weights(plain), "plain_losses": [r.loss for r in plain_reports],
                    "straight": weights(straight), "resumed": weights(fresh),
                    "resumed_steps": [r.step for r in resumed.reports]},
                   root / f"rank-{rank}.pt")
    finally:
        dist.destroy_process_group()
