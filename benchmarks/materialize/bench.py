"""Time to materialise one CycleQD child in place, against the copy floor and a reload.

Builds a Llama-shaped model with random weights, a bank of K random "experts" (task
vectors plus SVD factors of the chosen rank), and a child recipe of the steady state:
a coefficient on every expert and singular-direction weights on every expert's basis
(what a child many generations deep carries). Then it times, on one device:

- copy floor: copying the base weights into the model (what any in-place swap costs);
- dense merge: base + w1*tau1 + w2*tau2 with the task vectors already resident;
- materialise: `mendel.engines.cycleqd.materialize` of the child recipe, in place;
- reload: reading two parent checkpoints from disk, as the reference code does per child.

    python benchmarks/materialize/bench.py --shape tiny --device cpu
    python benchmarks/materialize/bench.py --shape llama3-8b --device cuda --rank 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from mendel.engines.cycleqd import Recipe, SvdFactors, TaskVectorBank, materialize
from mendel.engines.cycleqd.svd import is_svd_target

SHAPES = {
    "tiny": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=8, vocab_size=8192),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
}


def build(shape: str, layers: int | None, experts: int, rank: int | None, device: str,
          dtype: torch.dtype) -> tuple[torch.nn.Module, TaskVectorBank, Recipe]:
    """A model, a random bank and a steady-state child recipe."""
    config = LlamaConfig(**{**SHAPES[shape], **({"num_hidden_layers": layers} if layers else {})})
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = [f"e{k}" for k in range(experts)]
    taus = {e: {n: torch.randn_like(t, dtype=torch.float32) * 1e-3 for n, t in base.items()}
            for e in names}
    svd = {e: {n: _factors(t, rank) for n, t in taus[e].items() if is_svd_target(n, t)}
           for e in names}
    bank = TaskVectorBank(base=base, task_vectors=taus, svd=svd)
    recipe = Recipe(
        coefficients={e: 1.0 / experts for e in names},
        directions={e: {n: torch.rand(f.rank, device=device) * 0.1 for n, f in svd[e].items()}
                    for e in names},
    )
    return model, bank, recipe


def _factors(tau: torch.Tensor, rank: int | None) -> SvdFactors:
    r = min(tau.shape) if rank is None else min(rank, *tau.shape)
    u = torch.randn(tau.shape[0], r, device=tau.device)
    vh = torch.randn(r, tau.shape[1], device=tau.device)
    return SvdFactors(u=u, s=torch.rand(r, device=tau.device), vh=vh)


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up."""
    fn()
    samples = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="override the layer count")
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--rank", type=int, default=None, help="SVD rank; default full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    model, bank, recipe = build(args.shape, args.layers, args.experts, args.rank, args.device,
                                dtype)
    params = dict(model.named_parameters())
    pairs = [(params[n], bank.base[n], bank.task_vectors["e0"][n], bank.task_vectors["e1"][n])
             for n in params]

    def copy_floor() -> None:
        with torch.no_grad():
            for p, b, _, _ in pairs:
                p.copy_(b)

    def dense_merge() -> None:
        with torch.no_grad():
            for p, b, t1, t2 in pairs:
                p.copy_(b + 0.5 * t1 + 0.5 * t2)

    results = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "shape": args.shape, "layers": model.config.num_hidden_layers,
        "parameters": sum(p.numel() for p in params.values()), "experts": args.experts,
        "rank": args.rank or "full", "dtype": args.dtype,
        "copy_floor_ms": 1e3 * timed(copy_floor, args.device, args.repeats),
        "dense_merge_ms": 1e3 * timed(dense_merge, args.device, args.repeats),
        "materialize_ms": 1e3 * timed(lambda: materialize(recipe, model, bank), args.device,
                                      args.repeats),
    }
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for k in range(2):
            path = Path(folder) / f"parent{k}.safetensors"
            save_file({n: t.contiguous().cpu() for n, t in bank.base.items()}, str(path))
            files.append(path)
        # safetensors maps files lazily: touch every tensor so the bytes are really read
        # (from the page cache here; a cold disk is slower still).
        results["reload_two_parents_ms"] = 1e3 * timed(
            lambda: [t.sum() for f in files for t in load_file(str(f), device=args.device)
                     .values()], args.device, 1)
    results["materialize_over_copy"] = round(results["materialize_ms"] /
                                             results["copy_floor_ms"], 2)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                      for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
