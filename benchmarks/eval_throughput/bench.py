"""Decoding throughput of the resident evaluator backend, against the memory-bandwidth roofline.

CycleQD writes every child into one resident model and scores it by greedy generation
(`mendel.llm.local.LocalCausalLM`). Each decoding step reads every weight once and yields
one token per row, so tokens/s can never exceed

    roofline = batch x memory bandwidth / weight bytes

(KV-cache reads and the prefill only lower it). This benchmark builds a Llama-shaped model
with random weights on one device, measures the bandwidth there (a large `copy_`), then for
the dynamic and the static KV cache times `generate_ids` on a batch of random prompts for
several "children", nudging one weight matrix in place between them as CycleQD does. The
first child of the static cache pays for the compile on a GPU; the median of the later ones
is the steady state. Generation runs to `--new-tokens` on every row (no end-of-sequence).

    python benchmarks/eval_throughput/bench.py --shape smollm2-135m --device cpu --dtype float32
    python benchmarks/eval_throughput/bench.py --shape llama3-8b --device cuda     # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from types import SimpleNamespace
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mendel.llm.local import DTYPES, LocalCausalLM

SHAPES: dict[str, dict[str, int]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152),
    "llama3-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
}
TOKENIZER = SimpleNamespace(pad_token_id=0, bos_token_id=1, eos_token_id=None)
"""What `LocalCausalLM` needs of a tokenizer when it is handed ids: pad and start ids, and no
end of sequence, so that every row decodes the full length."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bandwidth(device: torch.device, megabytes: int) -> float:
    """Bytes/s of the best of five `copy_` between two buffers (each byte read and written)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() / best


def build(shape: str, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, pad_token_id=0,
                         bos_token_id=1, eos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = None
    return model.eval()


def time_children(backend: LocalCausalLM, rows: list[list[int]], new_tokens: int,
                  children: int) -> list[float]:
    """Seconds of one batch per child; a child is an in-place nudge of one weight matrix."""
    device = backend.device
    target = backend.model.model.layers[0].mlp.down_proj.weight
    seconds = []
    for _child in range(children):
        with torch.no_grad():
            target.mul_(1.0001)
        synchronize(device)
        started = time.perf_counter()
        output = backend.generate_ids(rows, new_tokens)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
        if any(len(row) != new_tokens for row in output):
            raise RuntimeError("a row stopped early; the timing would not be comparable")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--caches", nargs="+", choices=["dynamic", "static"],
                        default=["dynamic", "static"])
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build(args.shape, device, DTYPES[args.dtype])
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bytes_per_second = bandwidth(device, 1024 if device.type == "cuda" else 256)
    roofline = args.batch * bytes_per_second / weight_bytes
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(2, SHAPES[args.shape]["vocab_size"], (args.batch, args.prompt_tokens),
                         generator=generator).tolist()
    results: dict[str, Any] = {}
    for cache in args.caches:
        backend = LocalCausalLM(model, TOKENIZER, static_cache=cache == "static")
        seconds = time_children(backend, rows, args.new_tokens, args.children)
        steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
        tokens_per_second = args.batch * args.new_tokens / steady
        results[cache] = {"first_child_s": round(seconds[0], 3),
                          "steady_child_s": round(steady, 3),
                          "tokens_per_s": round(tokens_per_second, 1),
                          "share_of_roofline": round(tokens_per_second / roofline, 3)}
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine())
    print(json.dumps({
        "shape": args.shape, "dtype": args.dtype, "device": device_name,
        "batch": args.batch, "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens, "children": args.children,
        "weight_gb": round(weight_bytes / 1e9, 3),
        "bandwidth_gb_s": round(bytes_per_second / 1e9, 1),
        "roofline_tokens_per_s": round(roofline, 1),
        "results": results,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
