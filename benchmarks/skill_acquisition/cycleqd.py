"""CycleQD over the tiny skill experts, for several seeds, scored on the held-out test split.

Runs `mendel run` on examples/qdevolution-small.yaml (with the seed and budget given, and
its model paths pointed at `--tiny-dir`) in a scratch directory per seed, then scores the
final model and each task's elite with `evaluate.py` on the test split, which the
evolution never saw (its fitness uses the validation split). Each seed's raw numbers go to
`results/cycleqd-seed-<seed>.json`, and the seeds together to `results/cycleqd-summary.json`,
with the environment: the README's table is a view of these files.

    python benchmarks/skill_acquisition/cycleqd.py --seeds 42 1 2 --generations 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from environment import environment
from evaluate import evaluate_dirs, format_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLE = ROOT / "examples" / "qdevolution-small.yaml"


def manifest(seed: int, generations: int, tiny_dir: Path | None) -> dict[str, Any]:
    """The example with this seed and budget; with `tiny_dir`, its models are read there
    instead of in the directory the example names (as hack/demo.sh does with sed)."""
    resource: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = resource["spec"]
    spec["seed"] = seed
    spec["budget"]["generations"] = generations
    if tiny_dir is not None:
        example_dir = Path(spec["baseModel"]["uri"]).parent
        for model in [spec["baseModel"], *spec["experts"]]:
            model["uri"] = str(tiny_dir / Path(model["uri"]).relative_to(example_dir))
    return resource


def run_seed(resource: Mapping[str, Any], threads: int, scratch: Path) -> dict[str, Any]:
    """One `mendel run` in `scratch`, then the test-split scores of what it saved.

    Raises:
        RuntimeError: the run failed (the end of its output is in the message).
    """
    path = scratch / "manifest.yaml"
    path.write_text(yaml.safe_dump(dict(resource)))
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-m", "mendel.cli", "run", "-f", str(path)], cwd=scratch,
        capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads), "COLUMNS": "200"})
    seconds = time.monotonic() - started
    if ran.returncode != 0:
        raise RuntimeError(f"mendel run failed:\n{(ran.stdout + ran.stderr)[-4000:]}")
    run = _run_summary(ran.stdout)
    out = scratch / ".mendel" / "runs" / resource["metadata"]["name"] / "models-out"
    started = time.monotonic()
    elites = [out / f"elite-{task['name']}" for task in resource["spec"]["tasks"]]
    test = evaluate_dirs([out / "final", *(path for path in elites if path.is_dir())])
    return {
        "seed": resource["spec"]["seed"],
        "generations": run["generations"],
        "seconds": round(seconds, 1),
        "evaluation_seconds": round(time.monotonic() - started, 1),
        "test": test,
        "test_means": {name: _mean(scores) for name, scores in test.items()},
        "validation": {
            "final": run["final"]["scores"],
            "best_per_task": run["best"],
            "experts": run["experts"],
            "coverage": run["coverage"],
            "qd_score": run["qdScore"],
        },
    }


def _run_summary(stdout: str) -> dict[str, Any]:
    """The JSON summary that `mendel run` prints last (after its progress and table)."""
    start = stdout.rfind("\n{\n")
    if start < 0:
        raise RuntimeError(f"no summary in the output of mendel run:\n{stdout[-2000:]}")
    summary: dict[str, Any] = json.loads(stdout[start:])
    return summary


def summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per seed: seconds and test means; over seeds: the final model's mean and range."""
    finals = [r["test_means"]["final"] for r in records]
    return {
        "seeds": [r["seed"] for r in records],
        "generations": [r["generations"] for r in records],
        "per_seed": {str(r["seed"]): {"seconds": r["seconds"], "test_means": r["test_means"]}
                     for r in records},
        "final_test_mean": {"mean": sum(finals) / len(finals), "min": min(finals),
                            "max": max(finals)},
    }


def _mean(scores: Mapping[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def _write(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--generations", type=int, default=300)
    parser.add_argument("--tiny-dir", type=Path, default=None,
                        help="the zoo prepare.py wrote; default: where the example looks")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, run and scoring")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(args.threads)
    provenance = {"manifest": str(EXAMPLE.relative_to(ROOT)), "split": "test",
                  "environment": env}
    records = []
    for seed in args.seeds:
        resource = manifest(seed, args.generations, args.tiny_dir)
        with tempfile.TemporaryDirectory(prefix="mendel-cycleqd-") as scratch:
            record = run_seed(resource, args.threads, Path(scratch))
        records.append(record)
        _write(args.out / f"cycleqd-seed-{seed}.json", {**record, **provenance})
        print(f"## seed {seed}: {record['generations']} generations in {record['seconds']} s")
        print(format_table(record["test"]), flush=True)
    _write(args.out / "cycleqd-summary.json", {**summary(records), **provenance})
    return 0


if __name__ == "__main__":
    sys.exit(main())
