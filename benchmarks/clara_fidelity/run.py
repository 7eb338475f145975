"""CLaRa fidelity on invented facts: compressed documents against raw text and no context.

Trains stage I through `mendel run` on the tiny reader (`reader.py`) at compression rates 4
and 16, each with the MSE term (mseWeight 0.1) and without it (0.0): four runs on the same
data, steps and seed. Each run ends with the workload's own held-out evaluation on
builtin:facts validation questions, answered three ways by the same backbone:
`compressed` (the generator adapter reading memory states from a compressed store),
`raw_text` (the base reader with the document's text) and `no_context`.

    .venv/bin/python benchmarks/clara_fidelity/run.py --reader <dir>

The reader is built into `<dir>` first when `<dir>/reader.json` is missing. Raw summaries
go to `results/rate<r>-mse<w>.json` (the workload's JSON summary, timings and the
environment; no path of the machine that ran it), and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from reader import RECORD
from reader import main as build_reader

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGURATIONS = ((4, 0.1), (4, 0.0), (16, 0.1), (16, 0.0))
"""(compression rate, mseWeight) of the four runs."""

SETTING: dict[str, Any] = {
    "doc_max_tokens": 48,
    "lora": {"r": 32, "alpha": 64, "dropout": 0.0},
    "train_records": 6000,
    "epochs": 2,
    "learning_rate": 1e-3,
    "batch_size": 16,
    "micro_batch_size": 16,
    "eval_questions": 200,
    "seed": 0,
}
"""Everything the four runs share (README explains the choice)."""


def manifest(reader_dir: Path, rate: int, mse_weight: float,
             setting: Mapping[str, Any]) -> dict[str, Any]:
    """A CompressorTraining resource for one configuration."""
    name = f"fidelity-rate{rate}-mse{str(mse_weight).replace('.', '')}"
    return {
        "apiVersion": "mendel.dev/v1alpha1",
        "kind": "CompressorTraining",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": str(reader_dir)},
            "compression": {"rate": rate, "docMaxTokens": setting["doc_max_tokens"]},
            "lora": dict(setting["lora"]),
            "stages": {"pretraining": {
                "dataset": {"uri": "builtin:facts", "split": "train",
                            "limit": setting["train_records"]},
                "epochs": setting["epochs"],
                "learningRate": setting["learning_rate"],
                "batchSize": setting["batch_size"],
                "microBatchSize": setting["micro_batch_size"],
                "mseWeight": mse_weight,
            }},
            "precision": "float32",
            "gradientCheckpointing": False,
            "checkpointEverySteps": 1_000_000,
            "seed": setting["seed"],
            "evaluation": {"uri": "builtin:facts", "split": "validation",
                           "limit": setting["eval_questions"]},
            "resources": {"trainer": {"gpus": 0}},
        },
    }


def summary_of(stdout: str) -> dict[str, Any]:
    """The JSON summary `mendel run` prints last, after its progress lines and table.

    Raises:
        RuntimeError: no summary in the output.
    """
    start = stdout.rfind("\n{\n")
    if start < 0:
        raise RuntimeError(f"no summary in the output of mendel run:\n{stdout[-2000:]}")
    found: dict[str, Any] = json.loads(stdout[start:])
    return found


def without_paths(value: Any, paths: Sequence[str]) -> Any:
    """`value` with every occurrence of `paths` in its strings replaced by a placeholder."""
    if isinstance(value, str):
        for path in paths:
            value = value.replace(path, "<local>")
        return value
    if isinstance(value, dict):
        return {key: without_paths(item, paths) for key, item in value.items()}
    if isinstance(value, list):
        return [without_paths(item, paths) for item in value]
    return value


def run_configuration(reader_dir: Path, rate: int, mse_weight: float, scratch: Path,
                      threads: int, setting: Mapping[str, Any]) -> dict[str, Any]:
    """One `mendel run` in its own scratch directory; its summary, timed.

    Raises:
        RuntimeError: the run failed (the end of its output is in the message).
    """
    resource = manifest(reader_dir, rate, mse_weight, setting)
    folder = scratch / resource["metadata"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(resource))
    command = [sys.executable, "-m", "mendel.cli", "run", "-f", str(path),
               "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--work-dir", str(folder / "work")]
    started = time.monotonic()
    ran = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads),
                              "COLUMNS": "200"})
    seconds = time.monotonic() - started
    if ran.returncode != 0:
        raise RuntimeError(f"mendel run failed:\n{(ran.stdout + ran.stderr)[-4000:]}")
    summary = without_paths(summary_of(ran.stdout), [str(scratch), str(reader_dir)])
    curves = training_curves(f"sqlite:///{folder / 'mlflow.db'}", summary["runId"])
    return {
        "configuration": {"rate": rate, "mseWeight": mse_weight,
                          "memoryTokens": setting["doc_max_tokens"] // rate, **setting},
        "command": "mendel run -f manifest.yaml (benchmarks/clara_fidelity/run.py)",
        "manifest": without_paths(resource, [str(reader_dir)]),
        "seconds": round(seconds, 1),
        "summary": summary,
        "training": curves,
        "environment": environment(threads),
    }


def training_curves(tracking_uri: str, run_id: str, points: int = 10) -> dict[str, Any]:
    """Stage I's cross-entropy and MSE from the run's MLflow metrics: the mean over each
    tenth of the steps, so a reader sees whether the loss still fell at the end."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    curves: dict[str, Any] = {}
    for key in ("train/cross_entropy", "train/mse"):
        values = [m.value for m in sorted(client.get_metric_history(run_id, key),
                                          key=lambda m: m.step)]
        if not values:
            continue
        size = max(1, -(-len(values) // points))
        curves[key] = [round(sum(values[i:i + size]) / len(values[i:i + size]), 4)
                       for i in range(0, len(values), size)]
    return curves


def environment(threads: int) -> dict[str, Any]:
    """What the timings depend on (no paths of this machine)."""
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "omp_num_threads": threads, "machine": platform.machine()}


def table(records: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per run, Cover-EM / EM / F1 per condition, and the time."""
    lines = ["| rate | memory tokens | mseWeight | compressed | raw text | no context | "
             "final CE | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for record in records:
        configuration = record["configuration"]
        scores = record["summary"]["evaluation"]["scores"]
        cells = [" / ".join(f"{scores[name][metric]:.3f}"
                            for metric in ("cover_em", "exact_match", "f1"))
                 for name in ("compressed", "raw_text", "no_context")]
        stages = record["summary"].get("stages", {})
        loss = stages.get("pretraining", {}).get("loss")
        lines.append(f"| {configuration['rate']} | {configuration['memoryTokens']} | "
                     f"{configuration['mseWeight']} | {' | '.join(cells)} | "
                     f"{'' if loss is None else f'{loss:.3f}'} | "
                     f"{record['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reader", type=Path, required=True,
                        help="The reader's directory (built there when missing).")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="Where the runs write (default: a temporary directory).")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of each run (1: the machine is shared).")
    parser.add_argument("--only", nargs="*", default=None, metavar="RATE:MSE",
                        help="Run only these configurations, e.g. 16:0.1.")
    parser.add_argument("--epochs", type=int, default=SETTING["epochs"],
                        help="Stage-I epochs; results of another count get an -epochs<N> suffix.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    setting = {**SETTING, "epochs": args.epochs}
    suffix = "" if args.epochs == SETTING["epochs"] else f"-epochs{args.epochs}"
    reader_dir = args.reader.resolve()
    built = build_reader(["--out", str(reader_dir)])
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / RECORD).write_text(json.dumps(built, indent=2) + "\n")
    wanted = CONFIGURATIONS if args.only is None else tuple(
        (int(rate), float(mse)) for rate, mse in (item.split(":") for item in args.only))
    records = []
    with tempfile.TemporaryDirectory(prefix="clara-fidelity-") as temporary:
        scratch = (args.scratch or Path(temporary)).resolve()
        for rate, mse_weight in wanted:
            print(f"rate {rate}, mseWeight {mse_weight} ...", flush=True)
            record = run_configuration(reader_dir, rate, mse_weight, scratch, args.threads,
                                       setting)
            name = f"rate{rate}-mse{mse_weight}{suffix}.json"
            (args.results / name).write_text(json.dumps(record, indent=2) + "\n")
            print(json.dumps(record["summary"]["evaluation"]["scores"]), flush=True)
            records.append(record)
    print(table(records))


if __name__ == "__main__":
    main()
