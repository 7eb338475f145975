"""Instruction tuning and stage II on the shared training loop (tiny Llama): each trains only
its adapters, stage II encodes its candidates once, and a killed stage-II run resumes bit for
bit in a model rebuilt from its checkpoint."""

from __future__ import annotations

import pytest
import torch
from tests.support.tiny_models import char_tokenizer
from tests.unit.engines.clara.tiny import build_clara, perturb, tiny_base
from tests.unit.engines.clara.training_run import DROPOUT, Killed, kill_at, weights

from mendel.engines.clara import (
    ADAPTERS,
    COMPRESSOR,
    GENERATOR,
    MEMORY_SLOT,
    QUERY_REASONER,
    CandidateCache,
    StageOneExample,
    StageTwoExample,
    TrainingSettings,
    load_clara,
    train_instruction_tuning,
    train_stage_two,
)
from mendel.engines.clara.checkpoint import MODEL_DIR, checkpoint_name, latest_checkpoint

DOCUMENTS = ("Ada wrote code.", "Bob fed a cat.", "Cy sang a lot.", "Di ran a race.")
QUESTIONS = [StageTwoExample("Who wrote?", DOCUMENTS, " Ada", positives=(0,)),
             StageTwoExample("Who fed?", DOCUMENTS, " Bob", positives=(1,)),
             StageTwoExample("Who sang?", DOCUMENTS, " Cy", positives=(2,))]
"""Every question shares the same candidates, so the first step sees every chunk."""
TUNING_PROMPT = f"Background: {MEMORY_SLOT} {MEMORY_SLOT}\nQuestion: who?\nAnswer:"
TUNING = [StageOneExample(TUNING_PROMPT, (DOCUMENTS[i], DOCUMENTS[i + 1]), f" {DOCUMENTS[i][:2]}")
          for i in range(3)]


class CompressorForwards:
    """Counts forwards run with the compressor (a hook on one of its LoRA layers)."""

    def __init__(self, model):
        self.calls = 0
        layer = next(m for n, m in model.peft.named_modules()
                     if n.endswith(f"lora_A.{COMPRESSOR}"))
        layer.register_forward_hook(self._seen)

    def _seen(self, module, inputs, output):
        self.calls += 1


def after_stage_one(settings=None, sharpen=False):
    """A model as stage I leaves it: a non-trivial compressor and generator."""
    model = build_clara(settings=settings) if settings else build_clara()
    perturb(model, COMPRESSOR, 1)
    perturb(model, GENERATOR, 2)
    if sharpen:
        with torch.no_grad():  # the random head's logits span ~0.6 nats: give it room to fit
            model.backbone.get_output_embeddings().weight.mul_(25.0)
    return model


def changed(before, after, adapter):
    keys = [k for k in before if k.startswith(f"{adapter}:")]
    assert keys, adapter
    return any(not torch.equal(before[k], after[k]) for k in keys)


def unchanged(before, after, adapter):
    keys = [k for k in before if k.startswith(f"{adapter}:")] if adapter != "memory" else \
        ["memory"]
    assert keys, adapter
    return all(torch.equal(before[k], after[k]) for k in keys)


def test_stage_two_memorises_its_answers_and_reports_recall():
    model = after_stage_one(sharpen=True)
    settings = TrainingSettings(steps=30, micro_batch_size=3, learning_rate=2e-2,
                                warmup_steps=3)
    reports = train_stage_two(model, QUESTIONS, settings, cache=CandidateCache(), top_k=2,
                              tau=0.02).reports
    assert len(reports) == 30
    first = sum(r.cross_entropy for r in reports[:3]) / 3
    last = sum(r.cross_entropy for r in reports[-3:]) / 3
    assert last < 0.2 * first, (first, last)
    assert all(r.recall is not None and 0.0 <= r.recall <= 1.0 for r in reports)
    assert all(r.mse == 0.0 and r.loss == r.cross_entropy for r in reports)


def test_stage_two_trains_only_the_query_reasoner_and_generator_on_candidates_encoded_once():
    model = after_stage_one()
    before = weights(model)
    counter = CompressorForwards(model)
    cache = CandidateCache()
    settings = TrainingSettings(steps=4, micro_batch_size=1, gradient_accumulation=2,
                                learning_rate=1e-2)
    train_stage_two(model, QUESTIONS, settings, cache=cache, top_k=2, tau=0.5)
    after = weights(model)
    assert changed(before, after, QUERY_REASONER) and changed(before, after, GENERATOR)
    assert unchanged(before, after, COMPRESSOR) and unchanged(before, after, "memory")
    distinct = {tuple(chunk) for doc in DOCUMENTS for chunk in model.collator.document_chunks(doc)}
    assert counter.calls == 1  # one batch when the stage starts, never again
    assert cache.stats.misses == len(distinct) == len(cache)
    assert cache.stats.hits == 8 * len(distinct)  # warmed before the 8 micro-batches


def test_stage_two_starts_the_query_reasoner_from_the_compressor():
    model = after_stage_one()
    compressor = [p.detach().clone() for p in model.adapter_parameters(COMPRESSOR)]
    seen = []

    def first_step(report):
        seen.append([p.detach().clone() for p in model.adapter_parameters(QUERY_REASONER)])

    # A zero learning rate: the step leaves the copied query reasoner as it started.
    train_stage_two(model, QUESTIONS, TrainingSettings(steps=1, learning_rate=0.0),
                    cache=CandidateCache(), top_k=2, tau=0.5, observer=first_step)
    assert all(torch.equal(a, b) for a, b in zip(compressor, seen[0], strict=True))


def resumed_stage_two(directory, settings):
    latest = latest_checkpoint(directory)
    assert latest is not None
    tokenizer = char_tokenizer()
    fresh = load_clara(tiny_base("llama", tokenizer), tokenizer, latest / MODEL_DIR)
    torch.manual_seed(999)  # a new process starts from other RNG states
    return fresh, train_stage_two(fresh, QUESTIONS, settings, cache=CandidateCache(),
                                  top_k=2, tau=0.5, checkpoint_dir=directory)


@pytest.mark.parametrize("kill_step", [2, 3])
def test_a_killed_stage_two_resumes_bit_identical_to_an_uninterrupted_run(tmp_path, kill_step):
    settings = TrainingSettings(steps=5, micro_batch_size=1, gradient_accumulation=2,
                                learning_rate=1e-2, warmup_steps=1, checkpoint_every=2, seed=3)
    straight = after_stage_one(DROPOUT)
    expected = train_stage_two(straight, QUESTIONS, settings, cache=CandidateCache(), top_k=2,
                               tau=0.5, checkpoint_dir=tmp_path / "a")
    with pytest.raises(Killed):
        train_stage_two(after_stage_one(DROPOUT), QUESTIONS, settings, cache=CandidateCache(),
                        top_k=2, tau=0.5, checkpoint_dir=tmp_path / "b",
                        observer=kill_at(kill_step))
    fresh, result = resumed_stage_two(tmp_path / "b", settings)
    assert result.resumed_from is not None and result.resumed_from.name == checkpoint_name(2)
    assert [r.step for r in result.reports] == [3, 4, 5]
    assert result.reports == expected.reports[2:]
    got, want = weights(fresh), weights(straight)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[name], want[name]) for name in want)
    # The comparison can fail: the resumed run did change the trainable adapters.
    assert changed(weights(after_stage_one(DROPOUT)), got, QUERY_REASONER)


def test_a_checkpoint_of_other_stage_options_is_refused(tmp_path):
    settings = TrainingSettings(steps=3, micro_batch_size=3, checkpoint_every=1)
    with pytest.raises(Killed):
        train_stage_two(after_stage_one(), QUESTIONS, settings, cache=CandidateCache(),
                        top_k=2, tau=0.5, checkpoint_dir=tmp_path, observer=kill_at(1))
    latest = latest_checkpoint(tmp_path)
    assert latest is not None
    tokenizer = char_tokenizer()
    fresh = load_clara(tiny_base("llama", tokenizer), tokenizer, latest / MODEL_DIR)
    with pytest.raises(ValueError, match="other settings"):
        train_stage_two(fresh, QUESTIONS, settings, cache=CandidateCache(), top_k=3, tau=0.5,
                        checkpoint_dir=tmp_path)


def test_instruction_tuning_trains_only_the_generator():
    model = after_stage_one(sharpen=True)
    before = weights(model)
    counter = CompressorForwards(model)
    settings = TrainingSettings(steps=20, micro_batch_size=3, learning_rate=2e-2,
                                warmup_steps=2)
    reports = train_instruction_tuning(model, TUNING, settings).reports
    after = weights(model)
    assert changed(before, after, GENERATOR)
    assert all(unchanged(before, after, name) for name in (*ADAPTERS, "memory")
               if name != GENERATOR)
    assert model.trainable_adapters == (GENERATOR,)
    assert counter.calls == 1  # the frozen compressor's states come from the cache
    first = sum(r.cross_entropy for r in reports[:2]) / 2
    last = sum(r.cross_entropy for r in reports[-2:]) / 2
    assert last < 0.5 * first, (first, last)
    assert all(r.recall is None for r in reports)
