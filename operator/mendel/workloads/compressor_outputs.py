"""What a CompressorTraining leaves behind: a compressed store, held-out scores, a model.

After training, `evaluate_and_log` compresses the held-out documents with the trained
compressor into a `CompressedStore` (which records the compressor version and refuses
another), answers every held-out question from it and against raw text and no context, and
logs the scores. `log_model` logs the adapters in PEFT's own format with the memory rows as
an MLflow LoggedModel with a model card, and registers it when the spec names a model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from mendel.api.compressor import CompressorTrainingSpec
from mendel.tracking import contract
from mendel.tracking.registry import register_model
from mendel.workloads.context import RunContext

__all__ = ["evaluate_and_log", "log_model", "model_card"]

_STORE = "store"
_MAX_ANSWER_TOKENS = 24


def _load(spec: CompressorTrainingSpec, base_dir: Path, model_dir: Path) -> Any:
    import torch

    from mendel.engines.clara.io import load_clara
    from mendel.workloads.compressor_ranks import base_loader, compute_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, tokenizer = base_loader(base_dir, device, compute_dtype(spec))()
    model = load_clara(base, tokenizer, model_dir)
    model.eval()
    return model


def evaluate_and_log(ctx: RunContext, spec: CompressorTrainingSpec, base_dir: Path,
                     model_dir: Path, held_out: list[Any]) -> dict[str, Any]:
    """Compress the held-out documents, score the three conditions, log them; returns the
    report as JSON (scores per condition, sample predictions, the store's identity)."""
    from mendel.engines.clara.evaluation import corpus_of, evaluate_qa
    from mendel.engines.clara.store import compress_corpus

    model = _load(spec, base_dir, model_dir)
    if ctx.output_uri and ctx.output_uri.startswith("/"):
        store_dir = Path(ctx.output_uri) / _STORE
    else:
        store_dir = ctx.work_dir / _STORE
    store = compress_corpus(model, corpus_of(held_out), store_dir)
    report = evaluate_qa(model, held_out, store, max_new_tokens=_MAX_ANSWER_TOKENS).to_json()
    metrics = {f"eval/{condition}/{name}": float(value)
               for condition, scores in report["scores"].items()
               for name, value in scores.items() if name != "count"}
    metrics[contract.METRIC_EVAL_SCORE] = report["scores"]["compressed"]["cover_em"]
    ctx.client.log_batch(ctx.run_id, metrics=_metrics(metrics))
    ctx.client.log_dict(ctx.run_id, report, "evaluation.json")
    if not (ctx.output_uri and ctx.output_uri.startswith("/")):
        ctx.client.log_artifacts(ctx.run_id, str(store_dir), _STORE)
    report["store"] = {"documents": len(store), "compressorFingerprint": store.fingerprint,
                       "uri": str(store_dir) if ctx.output_uri and ctx.output_uri.startswith("/")
                       else f"runs:/{ctx.run_id}/{_STORE}"}
    return report


def _metrics(values: dict[str, float]) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, value, now, 0) for key, value in values.items()]


def model_card(spec: CompressorTrainingSpec, name: str,
               evaluation: dict[str, Any] | None) -> str:
    """A README for the logged model: what it is, how it was trained, how to load it."""
    stages = [stage for stage, value in (("pretraining", spec.stages.pretraining),
                                         ("instructionTuning", spec.stages.instruction_tuning),
                                         ("endToEnd", spec.stages.end_to_end)) if value]
    lines = [
        f"# {name}: CLaRa compressor and generator adapters",
        "",
        f"- Base model: `{spec.base_model.uri}` (revision `{spec.base_model.revision}`)",
        f"- Compression: rate {spec.compression.rate}, {spec.compression.memory_tokens} memory "
        f"tokens per {spec.compression.doc_max_tokens}-token chunk",
        f"- LoRA: r {spec.lora.r}, alpha {spec.lora.alpha}, targets "
        f"{', '.join(spec.lora.target_modules)}",
        f"- Stages trained: {', '.join(stages)}; precision {spec.precision}; seed {spec.seed}",
        "- Method: CLaRa (He et al., 2025, https://arxiv.org/abs/2511.18659)",
        "",
        "## Files",
        "",
        "`compressor/`, `generator/`, `query_reasoner/` are PEFT LoRA adapters: load one with",
        "`PeftModel.from_pretrained(base, '<dir>/compressor')`. `memory_tokens.safetensors`",
        "holds the memory tokens' input embeddings; `clara.json` their names and the settings.",
        "`mendel.engines.clara.io.load_clara(base, tokenizer, <dir>)` rebuilds the whole model.",
    ]
    if evaluation:
        lines += ["", "## Held-out QA", "", "| condition | Cover-EM | EM | F1 |",
                  "|---|---|---|---|"]
        for condition, scores in evaluation["scores"].items():
            lines.append(f"| {condition} | {scores['cover_em']:.3f} | "
                         f"{scores['exact_match']:.3f} | {scores['f1']:.3f} |")
    return "\n".join(lines) + "\n"


def log_model(ctx: RunContext, spec: CompressorTrainingSpec, model_dir: Path,
              evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """Log the saved model as a LoggedModel with its card (once per run) and register it."""
    from mendel.engines.clara.checkpoint import COMPLETE_MARKER

    client = ctx.client
    name = f"{ctx.name}-clara"
    found = client.search_logged_models(
        [ctx.experiment_id], filter_string=f"source_run_id = '{ctx.run_id}'", max_results=10)
    models = [m for m in found if m.name == name and str(m.status) == "READY"]
    if models:
        model_id = models[0].model_id
    else:
        model = client.create_logged_model(
            ctx.experiment_id, name=name, source_run_id=ctx.run_id, model_type="clara-adapters",
            tags={contract.TAG_KIND: "CompressorTraining", contract.TAG_UID: ctx.uid},
            params={"compression_rate": str(spec.compression.rate),
                    "base_model": spec.base_model.uri})
        model_id = model.model_id
        with tempfile.TemporaryDirectory() as folder:
            files = Path(folder) / "model"
            shutil.copytree(model_dir, files, ignore=shutil.ignore_patterns(COMPLETE_MARKER))
            (files / "README.md").write_text(model_card(spec, name, evaluation))
            client.log_model_artifacts(model_id, str(files))
        if evaluation:
            for condition, scores in evaluation["scores"].items():
                client.log_metric(ctx.run_id, f"eval/{condition}/cover_em",
                                  float(scores["cover_em"]), model_id=model_id)
        client.finalize_logged_model(model_id, "READY")
    target = spec.tracking.mlflow.registered_model
    registered = None if target is None else register_model(
        client, name=target.name, alias=target.alias, model_id=model_id, run_id=ctx.run_id)
    if registered is not None:
        client.set_tag(ctx.run_id, contract.TAG_REGISTERED_NAME, registered["name"])
        client.set_tag(ctx.run_id, contract.TAG_REGISTERED_VERSION, registered["version"])
    return {"model": {"modelId": model_id, "uri": f"models:/{model_id}",
                      "registered": registered}}
