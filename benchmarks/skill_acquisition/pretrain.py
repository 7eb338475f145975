"""Pretraining the base to a target competence band, skill by skill.

CycleQD starts from a base that can already do a little of everything and experts that
each do one thing well. A fixed pretraining budget cannot pin "a little" at this scale:
tiny transformers learn these skills in sudden jumps, and which skill jumps first depends
on the seed. So the base is trained in short rounds on a mixture of a generic skill
(`copy`) and the target skills, probed on validation records after every round; a target
skill leaves the mixture once it reaches `ceiling`, and training ends when every skill
is at least at `floor`. The generic skill stays in throughout, so the model keeps the
prompt format while a finished skill rests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evaluate import accuracy
from train import Schedule, encode, mixture, train
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

__all__ = ["Band", "pretrain_to_band"]

Record = dict[str, str]


@dataclass(frozen=True)
class Band:
    """The competence band for each target skill, as validation exact-match accuracy."""

    floor: float = 0.3
    ceiling: float = 0.6
    round_steps: int = 100
    max_steps: int = 2000
    lr: float = 2e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.ceiling <= 1:
            raise ValueError(f"need 0 <= floor <= ceiling <= 1, got {self.floor}, {self.ceiling}")
        if self.round_steps < 1 or self.max_steps < self.round_steps:
            raise ValueError("need 1 <= round_steps <= max_steps")


def pretrain_to_band(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    parts: dict[str, list[Record]],
    shares: dict[str, float],
    probes: dict[str, Sequence[Record]],
    band: Band,
    seed: int,
) -> tuple[int, dict[str, float]]:
    """Train `model` in place until every probed skill is in the band (or steps run out).

    Args:
        parts: Train records per task, for every task named in `shares`.
        shares: Mixture weights; tasks without a probe (generic skills) never leave it.
        probes: Validation records per target skill.

    Returns:
        The steps taken and the last probe's accuracy per target skill.
    """
    steps, scores = 0, dict.fromkeys(probes, 0.0)
    while steps < band.max_steps:
        active = {t: s for t, s in shares.items() if scores.get(t, 0.0) < band.ceiling}
        records = mixture(parts, active, band.round_steps * band.batch_size, seed + steps)
        warmup = 50 if steps == 0 else 10
        schedule = Schedule(band.round_steps, band.lr, band.batch_size, warmup, final=1.0)
        train(model, encode(tokenizer, records), schedule, seed + steps)
        steps += band.round_steps
        scores = {t: accuracy(model, tokenizer, probe) for t, probe in probes.items()}
        print(
            f"  step {steps}: {sorted(active)} -> { ({t: round(v, 2) for t, v in scores.items()}) }"
        )
        if min(scores.values()) >= band.floor:
            break
    return steps, scores
