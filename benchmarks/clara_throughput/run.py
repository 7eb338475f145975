"""Training tokens/s of CLaRa stage I against plain PEFT LoRA fine-tuning on the same tokens.

Stage I reads each document twice over: the compressor encodes the document (plus the
memory tokens), and the generator reads the prompt with the memory states spliced in and
learns the answer. Plain LoRA fine-tuning of the same model reads the document inline:
one sequence "prompt head + document + prompt tail + answer", loss on the answer only.
Both are charged the same tokens per example, the example's text tokens: document (D),
prompt without the slot (P) and answer with its end-of-sequence token (A). Memory tokens
are CLaRa's own overhead and are not counted, so the ratio of tokens/s is the ratio of
time per step on identical data.

    .venv/bin/python benchmarks/clara_throughput/run.py \
        --model-dir "$(.venv/bin/python hack/smollm2.py hf)"

CLaRa steps run through the engine's own `train_stage_one` (timed by its observer); the
LoRA steps replay the same `DataOrder`, so step n of both sees the same examples. Plain
LoRA is timed twice: with the transformers `labels=` loss (logits over every position,
what a PEFT user gets by default) and with logits kept only on the answer span, which is
what CLaRa's generator does and so the like-for-like baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoModelForCausalLM, AutoTokenizer

from mendel.datasets.facts import documents, stage_one_records
from mendel.engines.clara import (
    IGNORE_INDEX,
    MEMORY_SLOT,
    ClaraSettings,
    DataOrder,
    StageOneExample,
    StepReport,
    TrainingSettings,
    answer_cross_entropy,
    build_prompt,
    create_clara,
    learning_rate_factor,
    lora_config,
    train_stage_one,
)

RESULTS = Path(__file__).resolve().parent / "results"


def facts_examples(count: int) -> list[StageOneExample]:
    """One stage-I QA example per (question, answer) of the builtin:facts train records."""
    records = stage_one_records(documents("train", {"train": count, "validation": 0,
                                                    "test": 0}), "mendel-facts/train")
    examples = []
    for record in records:
        if record["data_type"] != "qa":
            continue
        for question, answer in zip(record["question"], record["answers"], strict=True):
            examples.append(StageOneExample(build_prompt(question, 1), tuple(record["docs"]),
                                            answer))
    return examples[:count]


def inline_ids(tokenize: Callable[[str], list[int]], example: StageOneExample,
               eos_id: int) -> tuple[list[int], list[int]]:
    """(prompt-with-document ids, answer ids + eos), tokenized piece by piece exactly as the
    CLaRa collator tokenizes the generator prompt and the compressor the document."""
    head, tail = example.prompt.split(MEMORY_SLOT)
    row = tokenize(head) + tokenize(example.documents[0]) + tokenize(tail)
    return row, tokenize(example.answer) + [eos_id]


def lora_batch(rows: Sequence[tuple[list[int], list[int]]],
               pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded inputs, position ids over real tokens, labels on the answers only."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for index, (prompt, answer) in enumerate(rows):
        full = prompt + answer
        ids[index, width - len(full):] = torch.tensor(full)
        mask[index, width - len(full):] = 1
        labels[index, width - len(answer):] = torch.tensor(answer)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
            "labels": labels}


def step_indices(size: int, settings: TrainingSettings) -> list[list[int]]:
    """The example indices of every step, as `train_stage_one` draws them."""
    order = DataOrder(size, settings.seed)
    return [order.take(settings.micro_batch_size) for _ in range(settings.steps)]


def clara_times(clara: Any, examples: list[StageOneExample],
                settings: TrainingSettings) -> list[float]:
    """Seconds per optimizer step of the engine's own stage-I loop."""
    stamps = [time.perf_counter()]

    def observe(_: StepReport) -> None:
        stamps.append(time.perf_counter())

    train_stage_one(clara, examples, settings, observer=observe)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def lora_times(model: Any, tokenizer: Any, examples: list[StageOneExample],
               settings: TrainingSettings, answer_only_logits: bool) -> list[float]:
    """Seconds per optimizer step of plain LoRA, built as `train_stage_one` builds its step
    (collation, forward, backward, clipping, AdamW, schedule) on the same examples."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate,
                                  betas=(settings.beta1, settings.beta2))
    scheduler = LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    model.train()
    times = []
    for indices in step_indices(len(examples), settings):
        start = time.perf_counter()
        batch = lora_batch([inline_ids(tokenize, examples[i], tokenizer.eos_token_id)
                            for i in indices], tokenizer.pad_token_id)
        loss: torch.Tensor
        if answer_only_logits:
            labels = batch.pop("labels")
            keep = int((labels != IGNORE_INDEX).sum(dim=1).max()) + 1
            logits = model(**batch, use_cache=False, logits_to_keep=keep).logits
            loss = answer_cross_entropy(logits, labels[:, -keep:])
        else:
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def step_tokens(clara: Any, examples: list[StageOneExample], settings: TrainingSettings,
                tokenizer: Any) -> tuple[list[int], list[int]]:
    """(counted tokens, backbone positions CLaRa runs) per step.

    Counted tokens are the plain-LoRA batch's real tokens; the assertion checks they equal
    CLaRa's encoder plus generator tokens minus its memory tokens.
    """
    counted, positions = [], []
    for indices in step_indices(len(examples), settings):
        chosen = [examples[i] for i in indices]
        batch = clara.collator.stage_one_batch(chosen)
        clara_positions = int(batch.encoder.attention_mask.sum()
                              + batch.generator.attention_mask.sum())
        memory = int(batch.encoder.memory_count * batch.encoder.input_ids.shape[0]
                     + batch.generator.slot_mask.sum())
        plain = lora_batch([inline_ids(clara.collator.tokenize, e, tokenizer.eos_token_id)
                            for e in chosen], tokenizer.pad_token_id)
        tokens = int(plain["attention_mask"].sum())
        assert tokens == clara_positions - memory, (tokens, clara_positions, memory)
        counted.append(tokens)
        positions.append(clara_positions)
    return counted, positions


def summary(times: list[float], tokens: list[int], warmup: int) -> dict[str, Any]:
    """Raw step times, and the median over the steps after the warm-up."""
    rates = [n / t for n, t in zip(tokens[warmup:], times[warmup:], strict=True)]
    return {"step_s": times, "tokens_per_s": rates,
            "median_step_s": statistics.median(times[warmup:]),
            "median_tokens_per_s": statistics.median(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--rate", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    settings = ClaraSettings(compression_rate=args.rate, chunk_size=256)
    training = TrainingSettings(steps=args.warmup + args.steps,
                                micro_batch_size=args.micro_batch, learning_rate=1e-4,
                                schedule="constant", mse_weight=0.1)

    def base() -> Any:
        return AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32,
                                                    local_files_only=True)

    clara_tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    clara = create_clara(base(), clara_tokenizer, settings)
    lora = get_peft_model(base(), lora_config(settings))
    examples = facts_examples(200)
    tokens, positions = step_tokens(clara, examples, training, tokenizer)
    runs = {
        "clara_stage_one": clara_times(clara, examples, training),
        "lora_answer_logits": lora_times(lora, tokenizer, examples, training, True),
        "lora_full_logits": lora_times(lora, tokenizer, examples, training, False),
    }
    results = {name: summary(times, tokens, args.warmup) for name, times in runs.items()}
    clara_rate = results["clara_stage_one"]["median_tokens_per_s"]
    overheads = {name: results[name]["median_tokens_per_s"] / clara_rate
                 for name in ("lora_answer_logits", "lora_full_logits")}
    result = {
        "model": args.model_dir.name, "device": "cpu", "threads": args.threads,
        "torch": torch.__version__, "machine": platform.machine(),
        "settings": settings.to_json(), "micro_batch": args.micro_batch,
        "warmup_steps": args.warmup, "timed_steps": args.steps,
        "examples": "builtin:facts train, QA records, one example per question",
        "tokens_per_step": tokens, "clara_backbone_positions_per_step": positions,
        "clara_position_ratio": sum(positions[args.warmup:]) / sum(tokens[args.warmup:]),
        "runs": results,
        "overhead_vs_lora_answer_logits": overheads["lora_answer_logits"],
        "overhead_vs_lora_full_logits": overheads["lora_full_logits"],
    }
    out = args.out or RESULTS / f"{args.model_dir.name}-rate{args.rate}-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, run in results.items():
        print(f"{name}: {run['median_tokens_per_s']:.1f} tokens/s "
              f"({run['median_step_s']:.3f} s/step)")
    print(f"overhead: {overheads['lora_answer_logits']:.2f}x vs LoRA with answer logits, "
          f"{overheads['lora_full_logits']:.2f}x vs LoRA with full logits -> {out.name}")


if __name__ == "__main__":
    main()
