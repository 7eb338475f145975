"""The skill-acquisition model family: tokenizer round trip, training and merging.

Runs the benchmark's own modules on a micro model for a few dozen steps: enough to catch a
broken tokenizer, label mask, save format or merge, far too little to learn a skill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "skill_acquisition"
sys.path.insert(0, str(BENCHMARK))

import model as zoo  # noqa: E402
import prepare  # noqa: E402
import train as trainer  # noqa: E402
from evaluate import accuracy  # noqa: E402

from mendel.datasets.skills import generate  # noqa: E402

pytestmark = pytest.mark.slow


def test_tokenizer_round_trips_through_auto_classes(tmp_path: Path) -> None:
    tokenizer = zoo.build_tokenizer()
    zoo.save(zoo.build_model("tiny", tokenizer, seed=0), tokenizer, tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = loaded("rev ab c=")["input_ids"]
    assert ids[0] == loaded.bos_token_id and len(ids) == 1 + len("rev ab c=")
    assert loaded.decode(ids, skip_special_tokens=True) == "rev ab c="
    assert loaded.padding_side == "left"
    assert (loaded.pad_token, loaded.eos_token) == ("<pad>", "</s>")
    assert model.config.vocab_size == len(loaded)


def test_encode_labels_only_answer_and_eos() -> None:
    tokenizer = zoo.build_tokenizer()
    data = trainer.encode(tokenizer, [{"prompt": "12+34=", "answer": "46"}])
    labels = [t for t in data.labels[0].tolist() if t != trainer.IGNORE]
    assert labels == tokenizer("46", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    assert int(data.attention_mask.sum()) == 1 + len("12+34=") + 2 + 1


def test_train_lowers_loss_and_model_generates() -> None:
    torch.set_num_threads(1)
    tokenizer = zoo.build_tokenizer()
    model = zoo.build_model("tiny", tokenizer, seed=0)
    data = trainer.encode(tokenizer, generate("reverse", "train", 512))
    schedule = trainer.Schedule(steps=60, lr=3e-3, batch_size=32, warmup=10)
    curve = trainer.train(model, data, schedule, seed=0)
    assert curve[-1] < curve[0] - 0.5
    score = accuracy(model, tokenizer, generate("reverse", "test", 16))
    assert 0.0 <= score <= 1.0


def test_naive_merge_is_base_plus_mean_task_vector() -> None:
    base = {"w": torch.zeros(2, 2), "b": torch.ones(2)}
    experts = [
        {"w": torch.full((2, 2), 3.0), "b": torch.ones(2)},
        {"w": torch.zeros(2, 2), "b": torch.full((2,), 4.0)},
    ]
    merged = prepare.naive_merge(base, experts)
    assert torch.equal(merged["w"], torch.full((2, 2), 1.5))
    assert torch.equal(merged["b"], torch.full((2,), 2.5))
    with pytest.raises(ValueError, match="tensor names"):
        prepare.naive_merge(base, [{"w": torch.zeros(2, 2)}])


def test_prepare_writes_every_model_directory(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    recipe = prepare.Recipe(
        size="tiny",
        band=prepare.Band(floor=0.0, ceiling=1.0, round_steps=5, max_steps=5),
        expert=trainer.Schedule(steps=5, lr=1e-3, batch_size=8, warmup=1),
        train_records=200,
    )
    report = prepare.prepare(tmp_path, recipe)
    assert report["base_steps"] == 5
    names = ["base", "expert-add", "expert-sort", "expert-reverse", "multitask", "naive-merge"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in names:
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / name)
        transformers.AutoTokenizer.from_pretrained(tmp_path / name)
