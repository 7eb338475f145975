"""CycleQD over the tiny skill experts, for several seeds, scored on the held-out test split.

Runs `mendel run` on examples/qdevolution-small.yaml (with the seed and budget given) in a
scratch directory per seed, then scores the final model and each task's elite with
`evaluate.py` on the test split, which the evolution never saw (it optimises on the
validation split).

    python benchmarks/skill_acquisition/cycleqd.py --seeds 42 1 2 --generations 300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLE = ROOT / "examples" / "qdevolution-small.yaml"


def run_seed(seed: int, generations: int, scratch: Path) -> dict[str, object]:
    """One `mendel run` and the test-split scores of what it produced."""
    resource = yaml.safe_load(EXAMPLE.read_text())
    resource["spec"]["seed"] = seed
    resource["spec"]["budget"]["generations"] = generations
    manifest = scratch / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(resource))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "mendel.cli", "run", "-f", str(manifest)],
                   cwd=scratch, check=True, capture_output=True)
    seconds = time.monotonic() - started
    out = scratch / ".mendel" / "runs" / resource["metadata"]["name"] / "models-out"
    table = subprocess.run(
        [sys.executable, str(HERE / "evaluate.py"), str(out / "final"),
         *(str(p) for p in sorted(out.glob("elite-*"))), "--threads", "2"],
        check=True, capture_output=True, text=True).stdout
    return {"seed": seed, "generations": generations, "seconds": round(seconds, 1),
            "table": table.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--generations", type=int, default=300)
    args = parser.parse_args()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="mendel-cycleqd-") as scratch:
            result = run_seed(seed, args.generations, Path(scratch))
        print(f"## seed {seed}: {args.generations} generations in {result['seconds']} s")
        print(result["table"], flush=True)
        print(json.dumps({k: v for k, v in result.items() if k != "table"}), flush=True)


if __name__ == "__main__":
    main()
