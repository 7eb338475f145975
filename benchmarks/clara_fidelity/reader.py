"""A tiny reader trained from scratch: the base model of the CLaRa fidelity benchmark.

The fidelity benchmark asks whether answers travel through CLaRa's memory tokens. That can
only be seen when the base model reads the raw document well (raw text near 1) and knows
nothing without it (no context near 0). SmolLM2-135M reads these documents at 0.29 and a
CPU budget trains its adapters too little to pass anything (engines-offline §2.4), so the
base here is a 4-layer Llama (128 wide, 1.09 M parameters) trained for the purpose:

- a word-level tokenizer whose vocabulary is every word of builtin:facts (all splits) and
  of the engine's prompts, built with the same pre-tokenizer that later splits text, so no
  word of the benchmark is ever unknown; whitespace (newlines included) separates words and
  is dropped, the same way in training, in the engine's prompts and in its pieces around a
  memory slot;
- a `LlamaForCausalLM` trained to answer `text_prompt(question, [document])` with
  " Name" + end-of-sequence (loss on the answer only) on train-split documents whose names
  are redrawn each time (`ReadingData`), every question of a document packed into one row
  (`PackedDocument`).

    .venv/bin/python benchmarks/clara_fidelity/reader.py --out <dir>

The directory loads with `AutoModelForCausalLM`/`AutoTokenizer.from_pretrained(dir,
local_files_only=True)`. `reader.json` in it records the training and the reader's own
held-out scores, measured through the engine's decoding (`greedy_ids` without adapters on
a `ClaraModel`, as `evaluate_qa` does), so they are the baselines `mendel run` reports. A
directory that already has `reader.json` is left as it is. Seeded: the same command on the
same machine gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mendel.datasets.facts import Document, Statement, documents, evaluation_records
from mendel.engines.clara.evaluation import text_prompt
from mendel.engines.clara.records import PARAPHRASE_PROMPT

__all__ = ["PackedDocument", "ReaderConfig", "ReadingData", "build_model", "build_tokenizer",
           "collate", "engine_scores", "main", "vocabulary"]

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>",
                  "unk_token": "<unk>"}
SPLITS = ("train", "validation", "test")
RECORD = "reader.json"
IGNORE = -100


@dataclass(frozen=True)
class ReaderConfig:
    """Architecture and training budget of the reader (chosen by measurement, README)."""

    hidden_size: int = 128
    intermediate_size: int = 512
    layers: int = 4
    heads: int = 4
    max_positions: int = 512
    steps: int = 3000
    documents_per_step: int = 32
    subset_share: float = 0.3
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 1
    eval_questions: int = 200


def _splitter() -> pre_tokenizers.PreTokenizer:
    """Words (letters, digits, underscore) and runs of punctuation; whitespace is dropped."""
    return pre_tokenizers.Whitespace()


def _texts(split_documents: Sequence[Document]) -> list[str]:
    """Every text the benchmark may tokenize for these documents."""
    texts = [PARAPHRASE_PROMPT.replace("{documents}", "")]
    for document in split_documents:
        texts.append(document.text)
        for statement in document.statements:
            texts.append(text_prompt(statement.question, [document.text]))
            texts.append(text_prompt(statement.question, []))
    return texts


def vocabulary() -> list[str]:
    """The sorted words of every facts split and of the engine's prompts."""
    splitter = _splitter()
    words: set[str] = set()
    for split in SPLITS:
        for text in _texts(documents(split)):  # type: ignore[arg-type]
            words.update(word for word, _ in splitter.pre_tokenize_str(text))
    return sorted(words)


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words`, left padding, no automatic special tokens.

    No BOS is added: the engine tokenizes with `add_special_tokens=False`, so training
    without it shows the reader exactly the ids it will see there.
    """
    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = _splitter()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left",
                                   clean_up_tokenization_spaces=False, model_max_length=512,
                                   **SPECIAL_TOKENS)


def build_model(config: ReaderConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised Llama with ids wired to the tokenizer (seeded)."""
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id))


@dataclass(frozen=True)
class PackedDocument:
    """One document read once and asked every question: the shared prefix
    "Background:\n<document>\n\n" and, per statement, "Question: ...\nAnswer:" + name + eos.

    Prefix plus any one segment is exactly `text_prompt(question, [document])` and its
    answer; `collate` lets each segment see the prefix and itself only, so the questions
    never see each other's answers (which would let the last answer be guessed as "the name
    not said yet").
    """

    prefix: list[int]
    segments: list[tuple[list[int], int]]
    """(question ids + answer ids, length of the question part)."""


class ReadingData:
    """Training documents drawn from the train split, with their names redrawn.

    Redrawing the names of every drawn document keeps the verb phrases and objects of the
    train split but makes "who does what" impossible to learn by heart from its 3,000
    documents: the reader can only answer by reading. A share of documents keeps only a
    random subset of their statements, easier questions mixed in throughout.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, config: ReaderConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.documents = documents("train")
        self.names = sorted({s.name for d in self.documents for s in d.statements})
        self.random = random.Random(config.seed)
        self._check_packing(self.documents[0])

    def _check_packing(self, document: Document) -> None:
        """The prefix and a question segment must tokenize as the engine's raw-text prompt.

        Raises:
            ValueError: they do not (a tokenizer that merges across whitespace would).
        """
        statement = document.statements[0]
        packed = (self._ids(f"Background:\n{document.text}\n\n")
                  + self._ids(f"Question: {statement.question}\nAnswer:"))
        if packed != self._ids(text_prompt(statement.question, [document.text])):
            raise ValueError("the packed prefix and question do not tokenize as text_prompt")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def draw(self) -> PackedDocument:
        """A training document with new names, packed with all its questions."""
        rng = self.random
        statements = list(rng.choice(self.documents).statements)
        if rng.random() < self.config.subset_share:
            kept = sorted(rng.sample(range(len(statements)), rng.randint(1, len(statements))))
            statements = [statements[i] for i in kept]
        names = rng.sample(self.names, len(statements))
        document = Document(tuple(Statement(name, s.verb_phrase, s.obj)
                                  for name, s in zip(names, statements, strict=True)))
        eos = int(self.tokenizer.eos_token_id)
        prefix = self._ids(f"Background:\n{document.text}\n\n")
        segments = []
        for statement in document.statements:
            question = self._ids(f"Question: {statement.question}\nAnswer:")
            answer = self._ids(" " + statement.name)
            segments.append(([*question, *answer, eos], len(question)))
        return PackedDocument(prefix, segments)


def collate(packed: Sequence[PackedDocument], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows with a [rows, 1, width, width] boolean attention mask: the prefix
    is causal, each segment sees the prefix and its own earlier tokens, at the positions
    it would have right after the prefix. Labels are on the answers and eos only."""
    width = max(len(p.prefix) + sum(len(ids) for ids, _ in p.segments) for p in packed)
    ids = torch.full((len(packed), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    positions = torch.zeros_like(ids)
    mask = torch.zeros((len(packed), 1, width, width), dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for row, document in enumerate(packed):
        size = len(document.prefix)
        ids[row, :size] = torch.tensor(document.prefix)
        positions[row, :size] = torch.arange(size)
        mask[row, 0, :size, :size] = causal[:size, :size]
        start = size
        for segment, question in document.segments:
            end = start + len(segment)
            ids[row, start:end] = torch.tensor(segment)
            positions[row, start:end] = torch.arange(size, size + len(segment))
            mask[row, 0, start:end, :size] = True
            mask[row, 0, start:end, start:end] = causal[:len(segment), :len(segment)]
            labels[row, start + question:end] = torch.tensor(segment[question:])
            start = end
        padding = torch.arange(start, width)
        mask[row, 0, padding, padding] = True  # a padding row attends to itself, never NaN
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
            "labels": labels}


def train(model: LlamaForCausalLM, data: ReadingData, config: ReaderConfig,
          pad_id: int) -> dict[str, Any]:
    """AdamW, linear warm-up then cosine decay, over `config.steps` drawn batches."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay, betas=(0.9, 0.98))

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps)
        return warm * 0.5 * (1 + math.cos(math.pi * step / config.steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        batch = collate([data.draw() for _ in range(config.documents_per_step)], pad_id)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}/{config.steps} loss {sum(losses[-250:]) / 250:.4f} "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
    model.eval()
    return {"steps": config.steps, "seconds": round(time.perf_counter() - started, 1),
            "final_loss": round(sum(losses[-250:]) / len(losses[-250:]), 4)}


def engine_scores(out: Path, questions: int) -> dict[str, Any]:
    """Raw-text and no-context scores of the saved reader, decoded exactly as the engine's
    `evaluate_qa` decodes them: `greedy_ids` without adapters on a `ClaraModel`, first line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mendel.engines.clara.inference import greedy_ids
    from mendel.engines.clara.metrics import score_answers
    from mendel.engines.clara.model import create_clara
    from mendel.engines.clara.settings import ClaraSettings

    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    clara = create_clara(base, tokenizer, ClaraSettings(compression_rate=16, chunk_size=48))
    clara.eval()
    records = evaluation_records(documents("validation"), "mendel-facts/validation")
    records = records[:questions]
    scores: dict[str, Any] = {}
    samples = []
    for condition in ("raw_text", "no_context"):
        rows = []
        for record in records:
            docs = record["docs"] if condition == "raw_text" else []
            ids = greedy_ids(clara, text_prompt(record["question"], docs), [],
                             max_new_tokens=24, adapter=None)
            text = tokenizer.decode(ids, skip_special_tokens=True).strip().split("\n")[0]
            rows.append((text, [record["answer"]]))
            if len(rows) <= 3:
                samples.append({"condition": condition, "question": record["question"],
                                "answer": record["answer"], "predicted": text})
        scores[condition] = score_answers(rows).to_json()
    return {"scores": scores, "samples": samples}


def environment(threads: int) -> dict[str, Any]:
    """What the timings depend on (no paths of this machine)."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": threads, "machine": platform.machine()}


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """A Hugging Face directory; greedy decoding and the pad/eos ids pinned."""
    model.generation_config = GenerationConfig(
        do_sample=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="The model directory.")
    parser.add_argument("--threads", type=int, default=ReaderConfig.threads)
    args = parser.parse_args(argv)
    record_path = args.out / RECORD
    if record_path.is_file():
        print(f"{record_path.name} exists; the reader is already built", flush=True)
        recorded: dict[str, Any] = json.loads(record_path.read_text())
        return recorded
    config = ReaderConfig(threads=args.threads)
    torch.set_num_threads(config.threads)
    words = vocabulary()
    tokenizer = build_tokenizer(words)
    model = build_model(config, tokenizer)
    print(f"vocabulary {len(tokenizer)}, {sum(p.numel() for p in model.parameters())} "
          "parameters", flush=True)
    training = train(model, ReadingData(tokenizer, config), config, int(tokenizer.pad_token_id))
    save(model, tokenizer, args.out)
    started = time.perf_counter()
    evaluation = engine_scores(args.out, config.eval_questions)
    evaluation["seconds"] = round(time.perf_counter() - started, 1)
    record = {"config": asdict(config), "vocabulary": len(tokenizer),
              "parameters": sum(p.numel() for p in model.parameters()),
              "training": training, "evaluation": evaluation,
              "environment": environment(config.threads)}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(evaluation["scores"]), flush=True)
    return record


if __name__ == "__main__":
    main()
