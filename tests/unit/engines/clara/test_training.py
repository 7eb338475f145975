"""Stage-I training loop on a tiny Llama: learning, accumulation, schedule, clipping, and
checkpoints that resume bit-exactly in a model rebuilt from disk."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from tests.support.tiny_models import char_tokenizer
from tests.unit.engines.clara.tiny import PROMPT, build_clara, tiny_base
from tests.unit.engines.clara.training_run import (
    DROPOUT,
    EXAMPLES,
    Killed,
    distributed_rank,
    kill_at,
    resume_from_latest,
    weights,
)

from mendel.api.compressor import CompressorTrainingSpec
from mendel.engines.clara import StageOneExample, load_clara
from mendel.engines.clara.checkpoint import (
    COMPLETE_MARKER,
    MODEL_DIR,
    checkpoint_name,
    latest_checkpoint,
)
from mendel.engines.clara.training import (
    DataOrder,
    TrainingSettings,
    learning_rate_factor,
    train_stage_one,
)


def test_loss_goes_down_when_memorising():
    model = build_clara()
    with torch.no_grad():  # the random head's logits span ~0.6 nats: give it room to fit
        model.backbone.get_output_embeddings().weight.mul_(25.0)
    settings = TrainingSettings(steps=30, micro_batch_size=2, gradient_accumulation=1,
                                learning_rate=2e-2, warmup_steps=3)
    reports = train_stage_one(model, EXAMPLES[:2], settings).reports
    assert len(reports) == 30
    first = sum(r.cross_entropy for r in reports[:3]) / 3
    last = sum(r.cross_entropy for r in reports[-3:]) / 3
    assert last < 0.1 * first, (first, last)


def test_accumulating_two_micro_batches_equals_one_batch_of_two():
    same_length = [StageOneExample(PROMPT, ("Ada wrote code.",), " A1"),
                   StageOneExample(PROMPT, ("Bob fed a cat!",), " B2")]
    runs = {}
    for micro, accumulation in ((1, 2), (2, 1)):
        model = build_clara()
        settings = TrainingSettings(steps=3, micro_batch_size=micro,
                                    gradient_accumulation=accumulation, learning_rate=1e-2)
        reports = train_stage_one(model, same_length, settings).reports
        runs[micro] = (reports, weights(model))
    (split, split_weights), (whole, whole_weights) = runs[1], runs[2]
    for a, b in zip(split, whole, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)
    for name, tensor in whole_weights.items():
        torch.testing.assert_close(split_weights[name], tensor, rtol=1e-4, atol=1e-5)
    # The comparison can fail: one fewer micro-batch is a different step.
    model = build_clara()
    train_stage_one(model, same_length[:1], TrainingSettings(steps=3, learning_rate=1e-2))
    assert not torch.allclose(weights(model)["memory"], whole_weights["memory"], atol=1e-5)


def test_schedule_warms_up_then_decays_towards_zero():
    settings = TrainingSettings(steps=12, learning_rate=1e-2, warmup_steps=3)
    factors = [learning_rate_factor(step, settings) for step in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a > b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 9)))
    floor = TrainingSettings(steps=12, warmup_steps=3, min_lr_ratio=0.1)
    assert learning_rate_factor(11, floor) == pytest.approx(0.1 + 0.9 * factors[-1])
    reports = train_stage_one(build_clara(), EXAMPLES, settings).reports
    assert [r.learning_rate for r in reports] == pytest.approx([1e-2 * f for f in factors])


def test_clipping_bounds_the_gradient_norm_the_optimizer_sees(monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    settings = TrainingSettings(steps=3, micro_batch_size=2, max_grad_norm=1e-3)
    reports = train_stage_one(build_clara(), EXAMPLES, settings).reports
    assert all(r.grad_norm > 1e-2 for r in reports), "clipping was never needed"
    assert seen == pytest.approx([1e-3] * 3, rel=1e-3)


def test_data_order_is_a_seeded_permutation_per_epoch_and_resumes_from_its_position():
    order = DataOrder(5, seed=7)
    first = order.take(5)
    assert sorted(first) == list(range(5))
    second = order.take(5)
    assert sorted(second) == list(range(5)) and second != first
    resumed = DataOrder(5, seed=7, epoch=1, index=2)
    assert resumed.take(6) == second[2:] + DataOrder(5, seed=7, epoch=2).take(3)
    assert DataOrder(5, seed=8).take(10) != first + second


def resumed_run(tmp_path, settings, kill_step):
    model = build_clara(settings=DROPOUT)
    with pytest.raises(Killed):
        train_stage_one(model, EXAMPLES, settings, checkpoint_dir=tmp_path,
                        observer=kill_at(kill_step))
    del model
    return resume_from_latest(tmp_path, settings, rng_seed=999)


@pytest.mark.parametrize("kill_step", [3, 4, 6])
def test_a_run_killed_and_resumed_ends_bit_identical_to_an_uninterrupted_run(tmp_path,
                                                                             kill_step):
    settings = TrainingSettings(steps=7, micro_batch_size=2, gradient_accumulation=2,
                                learning_rate=1e-2, warmup_steps=2, checkpoint_every=2,
                                seed=3)
    straight = build_clara(settings=DROPOUT)
    expected = train_stage_one(straight, EXAMPLES, settings, checkpoint_dir=tmp_path / "a")
    fresh, result = resumed_run(tmp_path / "b", settings, kill_step)
    saved_at = kill_step - kill_step % 2
    assert result.resumed_from is not None
    assert result.resumed_from.name == checkpoint_name(saved_at)
    assert [r.step for r in result.reports] == list(range(saved_at + 1, 8))
    assert result.reports == expected.reports[saved_at:]
    got, want = weights(fresh), weights(straight)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_resume_needs_the_checkpoints_weights(tmp_path):
    settings = TrainingSettings(steps=4, micro_batch_size=2, checkpoint_every=2)
    with pytest.raises(Killed):
        train_stage_one(build_clara(), EXAMPLES, settings, checkpoint_dir=tmp_path,
                        observer=kill_at(3))
    with pytest.raises(ValueError, match="trainable weights differ"):
        train_stage_one(build_clara(), EXAMPLES, settings, checkpoint_dir=tmp_path)


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    settings = TrainingSettings(steps=4, micro_batch_size=2, checkpoint_every=2)
    with pytest.raises(Killed):
        train_stage_one(build_clara(), EXAMPLES, settings, checkpoint_dir=tmp_path,
                        observer=kill_at(3))
    complete = tmp_path / checkpoint_name(2)
    half = tmp_path / checkpoint_name(4)
    half.mkdir()
    (half / MODEL_DIR).mkdir()
    (tmp_path / f".{checkpoint_name(6)}.partial-1").mkdir()
    assert latest_checkpoint(tmp_path) == complete
    (half / COMPLETE_MARKER).write_text("")
    assert latest_checkpoint(tmp_path) == half  # the marker is what counts
    (half / COMPLETE_MARKER).unlink()
    tokenizer = char_tokenizer()
    model = load_clara(tiny_base("llama", tokenizer), tokenizer, complete / MODEL_DIR)
    result = train_stage_one(model, EXAMPLES, settings, checkpoint_dir=tmp_path)
    assert result.resumed_from == complete
    assert [r.step for r in result.reports] == [3, 4]
    assert latest_checkpoint(tmp_path) == half and (half / COMPLETE_MARKER).is_file()


def test_settings_from_a_compressor_training_spec():
    spec = CompressorTrainingSpec.model_validate({
        "baseModel": {"uri": "/models/base"},
        "stages": {"pretraining": {"dataset": {"uri": "/data/s1.jsonl"}, "learningRate": 1e-4,
                                   "batchSize": 8, "microBatchSize": 2, "epochs": 2,
                                   "mseWeight": 0.5}},
        "optimizer": {"warmupRatio": 0.1, "maxGradNorm": 0.5, "weightDecay": 0.01},
        "checkpointEverySteps": 5,
    })
    settings = TrainingSettings.from_spec(spec, spec.stages.pretraining, examples=100,
                                          processes=2)
    assert (settings.steps, settings.gradient_accumulation, settings.warmup_steps) == (25, 2, 2)
    assert (settings.min_lr_ratio, settings.schedule) == (0.1, "cosine")
    assert (settings.mse_weight, settings.max_grad_norm, settings.checkpoint_every) == (
        0.5, 0.5, 5)
    with pytest.raises(ValueError, match="multiple"):
        TrainingSettings.from_spec(spec, spec.stages.pretraining, examples=100, processes=3)


def test_settings_reject_a_warmup_as_long_as_the_run():
    with pytest.raises(ValueError, match="warmup"):
        TrainingSettings(steps=3, warmup_steps=3)


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_process_and_resume_exactly(tmp_path):
    settings = TrainingSettings(steps=5, micro_batch_size=1, gradient_accumulation=2,
                                learning_rate=1e-2, warmup_steps=1, checkpoint_every=2, seed=3)
    torch.multiprocessing.spawn(distributed_rank, nprocs=2, args=(
        2, str(tmp_path / "rendezvous"), str(tmp_path), settings, 3))
    ranks = [torch.load(tmp_path / f"rank-{rank}.pt", weights_only=True) for rank in (0, 1)]
    for name in ranks[0]["straight"]:
        assert torch.equal(ranks[0]["straight"][name], ranks[1]["straight"][name]), name
        for rank in ranks:
            assert torch.equal(rank["resumed"][name], rank["straight"][name]), name
    assert ranks[0]["resumed_steps"] == ranks[1]["resumed_steps"] == [3, 4, 5]
    one = build_clara()
    single = replace(settings, micro_batch_size=2, checkpoint_every=0)
    losses = [r.loss for r in train_stage_one(one, EXAMPLES, single).reports]
    assert ranks[0]["plain_losses"] == pytest.approx(losses, rel=1e-5)
    for name, tensor in weights(one).items():
        torch.testing.assert_close(ranks[0]["plain"][name], tensor, rtol=1e-4, atol=1e-5)
