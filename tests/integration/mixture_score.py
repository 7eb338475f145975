"""A command evaluator for tests whose optimum mixes experts, so merged children can
become elites: score = 0.5 + 0.5 * cos(model - base, sum_e w_e * (expert_e - base)).

Usage: python mixture_score.py MODEL_DIR TASK CONFIG_JSON, where the config holds
{"base": dir, "experts": {name: dir}, "mixtures": {task: {expert: weight}}}. Only the
standard library: it reads float32 safetensors itself and starts in milliseconds.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from array import array
from pathlib import Path


def read_float32(model_dir: str) -> dict[str, array]:
    data = (Path(model_dir) / "model.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    body = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: expected F32, got {info['dtype']}")
        start, end = info["data_offsets"]
        values = array("f")
        values.frombytes(data[body + start : body + end])
        tensors[name] = values
    return tensors


def main(model_dir: str, task: str, config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    model, base = read_float32(model_dir), read_float32(config["base"])
    experts = {e: read_float32(d) for e, d in config["experts"].items()}
    mixture = config["mixtures"][task]
    dot = model_norm = target_norm = 0.0
    for name in sorted(base):
        b = base[name]
        parts = [(w, experts[e][name]) for e, w in mixture.items()]
        for i, value in enumerate(model[name]):
            delta = value - b[i]
            target = sum(w * (t[i] - b[i]) for w, t in parts)
            dot += delta * target
            model_norm += delta * delta
            target_norm += target * target
    cosine = dot / math.sqrt(model_norm * target_norm) if model_norm and target_norm else 0.0
    print(json.dumps({"score": min(1.0, max(0.0, 0.5 + 0.5 * cosine))}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
