"""Stage-II step time with cached candidate memories against re-encoding them every step.

The reference re-encodes all 20 candidate documents of every question on every step,
although the compressor is frozen in stage II; Mendel encodes each document once
(`CandidateCache`, keyed by the compressor fingerprint) and serves it from memory after.
This script times full optimizer steps (query reasoner and generator forward, backward,
AdamW) both ways on the same model, questions and candidates, and writes the raw times.

    .venv/bin/python benchmarks/clara_stage_two/run.py \
        --model-dir "$(.venv/bin/python hack/smollm2.py hf)"

Documents are synthetic fictitious-fact paragraphs of about the paper's mean length (95
tokens, seed-algorithms §3.1.4); the settings are the paper's (chunk 256, rate 32, k 5,
tau 0.02, LoRA r 16 on all linear layers), so the ratio, not the absolute time, carries over.
Cached steps are timed after one pass has filled the cache (the offline compression the
paper assumes); that one-off fill is timed separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mendel.engines.clara import CandidateCache, ClaraSettings, create_clara
from mendel.engines.clara.stage_two import StageTwoExample, prepare_stage_two, stage_two_loss

RESULTS = Path(__file__).resolve().parent / "results"
COLOURS = ["red", "blue", "green", "amber", "violet", "grey", "white", "black", "gold"]
PLACES = ["Vorn", "Talis", "Quend", "Ostrel", "Mirabay", "Kesh", "Ulden", "Pryce"]


def paragraph(rng: random.Random, index: int) -> str:
    """About 100 tokens of invented facts about ledger entry `index`."""
    facts = [f"Entry {index} of the Zorvian ledger records a {rng.choice(COLOURS)} lantern "
             f"made in {rng.choice(PLACES)} in the year {rng.randint(1200, 1900)}."]
    for _ in range(4):
        facts.append(f"Its keeper, {rng.choice(PLACES)} guild member number "
                     f"{rng.randint(10, 999)}, traded it for {rng.randint(2, 90)} "
                     f"{rng.choice(COLOURS)} stones.")
    return " ".join(facts)


def make_examples(questions: int, candidates: int, pool: int,
                  seed: int) -> list[StageTwoExample]:
    """Questions with `candidates` documents each, drawn from a pool of `pool` documents."""
    rng = random.Random(seed)
    documents = [paragraph(rng, index) for index in range(pool)]
    examples = []
    for _ in range(questions):
        chosen = rng.sample(range(pool), candidates)
        target = chosen[0]
        rng.shuffle(chosen)
        examples.append(StageTwoExample(
            f"Where was the lantern of entry {target} made?", tuple(documents[i] for i in chosen),
            documents[target].split(" in the year")[0].rsplit(" ", 1)[-1],
            (chosen.index(target),)))
    return examples


def timed_steps(model: Any, examples: list[StageTwoExample], cache: CandidateCache,
                optimizer: torch.optim.Optimizer, fingerprint: str, reencode: bool,
                top_k: int, tau: float) -> list[float]:
    """Seconds per optimizer step, one question per step."""
    times = []
    for example in examples:
        start = time.perf_counter()
        loss = stage_two_loss(model, [example], cache, top_k=top_k, tau=tau,
                              fingerprint=fingerprint, reencode=reencode)
        loss.cross_entropy.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--pool", type=int, default=40, help="distinct documents")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--tau", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    settings = ClaraSettings(compression_rate=32, chunk_size=256, lora_r=16, lora_alpha=32,
                             lora_dropout=0.0)
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32,
                                                local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    model = create_clara(base, tokenizer, settings).to(args.device)
    prepare_stage_two(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameter_groups(0.0), lr=5e-6, betas=(0.9, 0.95))
    examples = make_examples(2 * args.steps + 1, args.candidates, args.pool, seed=0)
    fingerprint = model.compressor_fingerprint()
    cache = CandidateCache()
    warm = timed_steps(model, examples[:1], cache, optimizer, fingerprint, True, args.top_k,
                       args.tau)  # first step: allocator and kernel warm-up, not counted
    start = time.perf_counter()
    chunks = [c for e in examples for d in e.documents for c in model.collator.document_chunks(d)]
    cache.get_or_compute(model, chunks, fingerprint)
    fill = time.perf_counter() - start
    reencoded = timed_steps(model, examples[1:1 + args.steps], cache, optimizer, fingerprint,
                            True, args.top_k, args.tau)
    cached = timed_steps(model, examples[1 + args.steps:], cache, optimizer, fingerprint,
                         False, args.top_k, args.tau)
    tokens = [len(model.collator.tokenize(d)) for e in examples for d in e.documents]
    speedup = statistics.median(reencoded) / statistics.median(cached)
    result = {
        "model": args.model_dir.name, "device": args.device, "threads": args.threads,
        "torch": torch.__version__, "machine": platform.machine(),
        "settings": settings.to_json(), "candidates": args.candidates, "top_k": args.top_k,
        "tau": args.tau, "distinct_documents": len(cache), "steps_per_mode": args.steps,
        "document_tokens_mean": statistics.mean(tokens),
        "warmup_step_s": warm[0], "cache_fill_s": fill,
        "reencoded_step_s": reencoded, "cached_step_s": cached,
        "reencoded_median_s": statistics.median(reencoded),
        "cached_median_s": statistics.median(cached), "speedup": speedup,
        "cache_stats": {"hits": cache.stats.hits, "misses": cache.stats.misses},
    }
    out = args.out or RESULTS / f"{args.model_dir.name}-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"re-encoded {result['reencoded_median_s']:.3f} s/step, cached "
          f"{result['cached_median_s']:.3f} s/step: {speedup:.1f}x faster "
          f"(one-off fill of {len(cache)} documents: {fill:.2f} s) -> {out.name}")


if __name__ == "__main__":
    main()
