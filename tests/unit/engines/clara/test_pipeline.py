"""All stages in order: each saves its model once, a rerun skips finished stages and resumes
the unfinished one exactly, instruction tuning starts with a fresh generator, and bf16
autocast trains float32 adapters."""

from __future__ import annotations

import pytest
import torch
from tests.support.tiny_models import char_tokenizer
from tests.unit.engines.clara.test_stages import QUESTIONS, TUNING
from tests.unit.engines.clara.tiny import SETTINGS, tiny_base
from tests.unit.engines.clara.training_run import DROPOUT, EXAMPLES, Killed, weights

from mendel.engines.clara import (
    COMPLETE_MARKER,
    COMPRESSOR,
    GENERATOR,
    StagePlan,
    TrainingSettings,
    final_model,
    load_clara,
    run_stages,
)
from mendel.engines.clara.pipeline import _start


def load_base():
    tokenizer = char_tokenizer()
    return tiny_base("llama", tokenizer), tokenizer


def plans(steps: int = 3, every: int = 1) -> list[StagePlan]:
    settings = TrainingSettings(steps=steps, micro_batch_size=2, learning_rate=1e-2,
                                checkpoint_every=every)
    return [StagePlan("pretraining", settings, EXAMPLES),
            StagePlan("instructionTuning", settings, TUNING),
            StagePlan("endToEnd", settings, QUESTIONS, top_k=2, temperature=0.5)]


def final_weights(root, stage):
    path = final_model(root, stage)
    assert path is not None
    base, tokenizer = load_base()
    return weights(load_clara(base, tokenizer, path))


def test_every_stage_saves_its_model_and_a_rerun_trains_nothing(tmp_path):
    seen = []
    last = run_stages(plans(), tmp_path, load_base, DROPOUT,
                      observer=lambda stage, report: seen.append((stage, report.step)))
    assert seen == [(s, n) for s in ("pretraining", "instructionTuning", "endToEnd")
                    for n in (1, 2, 3)]
    assert last == final_model(tmp_path, "endToEnd")
    assert all((tmp_path / s / "final" / COMPLETE_MARKER).is_file()
               for s in ("pretraining", "instructionTuning", "endToEnd"))
    again = []
    run_stages(plans(), tmp_path, load_base, DROPOUT,
               observer=lambda stage, report: again.append(stage))
    assert again == []


def test_a_run_killed_mid_stage_resumes_to_the_same_weights(tmp_path):
    run_stages(plans(), tmp_path / "whole", load_base, DROPOUT)

    def kill(stage, report):
        if stage == "instructionTuning" and report.step == 2:
            raise Killed

    with pytest.raises(Killed):
        run_stages(plans(), tmp_path / "split", load_base, DROPOUT, observer=kill)
    assert final_model(tmp_path / "split", "instructionTuning") is None
    resumed = []
    torch.manual_seed(1234)  # a new process starts from other RNG states
    run_stages(plans(), tmp_path / "split", load_base, DROPOUT,
               observer=lambda stage, report: resumed.append((stage, report.step)))
    assert resumed[0] == ("instructionTuning", 3)
    for stage in ("instructionTuning", "endToEnd"):
        whole, split = final_weights(tmp_path / "whole", stage), \
            final_weights(tmp_path / "split", stage)
        assert all(torch.equal(whole[k], split[k]) for k in whole), stage


def test_instruction_tuning_starts_from_the_stage_one_compressor_and_a_fresh_generator(tmp_path):
    run_stages(plans()[:1], tmp_path, load_base, SETTINGS)
    stage_one = final_weights(tmp_path, "pretraining")
    model = _start(plans()[1], tmp_path, final_model(tmp_path, "pretraining"), load_base,
                   SETTINGS)
    now = weights(model)
    compressor = [k for k in now if k.startswith(f"{COMPRESSOR}:")]
    assert all(torch.equal(now[k], stage_one[k]) for k in compressor)
    assert torch.equal(now["memory"], stage_one["memory"])
    trained_b = [k for k in stage_one if k.startswith(f"{GENERATOR}:") and "lora_B" in k]
    assert any(stage_one[k].any() for k in trained_b)
    assert not any(now[k].any() for k in trained_b)  # fresh LoRA B is zero


def test_stages_out_of_order_are_refused(tmp_path):
    first, second, third = plans()
    with pytest.raises(ValueError, match="must start with pretraining"):
        run_stages([second, third], tmp_path, load_base, SETTINGS)
    with pytest.raises(ValueError, match="must start with pretraining"):
        run_stages([first, third, second], tmp_path, load_base, SETTINGS)


def test_bf16_autocast_trains_float32_adapters(tmp_path):
    seen = []
    run_stages(plans(steps=2, every=0)[:1], tmp_path, load_base, SETTINGS,
               compute_dtype=torch.bfloat16,
               observer=lambda stage, report: seen.append(report.loss))
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor(seen)))
    trained = final_weights(tmp_path, "pretraining")
    assert all(t.dtype == torch.float32 for t in trained.values())
    assert any(trained[k].any() for k in trained if "lora_B" in k)
