"""Which name does a compressed answer give? The fidelity runs' predictions, every one.

Every document of builtin:facts holds 4-6 statements, each about another invented name,
so a reader that learned only "answer with a name from the document" scores about
1/(statements) by luck, 0.21 on these questions. A compressor is faithful when its answers
beat that: the right name among the document's names. For each configuration folder that
`run.py --scratch <dir>` left, this reloads the trained model (`load_clara`) and its
compressed store exactly as the workload wrote them, answers every held-out question under
the three conditions with the engine's `evaluate_qa`, and counts per condition:

- `correct`: the answer is the gold name (Cover-EM, as the workload reports);
- `name_from_document`: the answer is one of the document's names;
- `right_among_document_names`: correct / name_from_document;
- `chance_among_document_names`: the mean of 1/(statements) over those questions.

    .venv/bin/python benchmarks/clara_fidelity/analyse.py --reader <dir> --scratch <dir>

Writes `results/analysis.json` (or `--output`) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from run import CONFIGURATIONS, RESULTS, SETTING

from mendel.api.references import DatasetRef
from mendel.datasets import load_records
from mendel.engines.clara.evaluation import CONDITIONS, evaluate_qa
from mendel.engines.clara.io import load_clara
from mendel.engines.clara.records import QAExample, qa_examples
from mendel.engines.clara.store import CompressedStore


def document_names(document: str) -> list[str]:
    """The subjects of a facts document: the first word of every sentence."""
    return [sentence.split()[0] for sentence in document.split(". ") if sentence.strip()]


def counts(rows: Sequence[tuple[str, QAExample]]) -> dict[str, Any]:
    """correct / name-from-document / chance counts of (prediction, example) rows."""
    correct = from_document = 0
    chance = 0.0
    for predicted, example in rows:
        names = document_names(example.documents[0])
        correct += predicted in example.answers
        if predicted in names:
            from_document += 1
            chance += 1 / len(names)
    return {
        "questions": len(rows), "correct": round(correct / len(rows), 3),
        "name_from_document": round(from_document / len(rows), 3),
        "right_among_document_names": round(correct / from_document, 3) if from_document else None,
        "chance_among_document_names": round(chance / from_document, 3) if from_document else None,
    }


def analyse(reader: Path, folder: Path, examples: list[QAExample]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(reader), local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(str(reader), local_files_only=True)
    model = load_clara(base, tokenizer, folder / "work" / "clara" / "pretraining" / "final")
    model.eval()
    store = CompressedStore.open(folder / "work" / "store", model)
    report = evaluate_qa(model, examples, store, keep_samples=len(examples))
    return {condition: counts([(row[condition], example)
                               for row, example in zip(report.samples, examples, strict=True)])
            for condition in CONDITIONS}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reader", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True,
                        help="The --scratch directory of run.py.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--output", default="analysis.json", help="File name in --results.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    reference = DatasetRef(uri="builtin:facts", split="validation",
                           limit=SETTING["eval_questions"])
    examples = qa_examples(load_records(reference))
    analysis: dict[str, Any] = {}
    lines = ["| rate | mseWeight | condition | correct | name from the document | "
             "right among its names | chance among its names |", "|---|---|---|---|---|---|---|"]
    for rate, mse_weight in CONFIGURATIONS:
        name = f"fidelity-rate{rate}-mse{str(mse_weight).replace('.', '')}"
        folder = args.scratch / name
        if not folder.is_dir():
            continue
        analysis[name] = found = analyse(args.reader, folder, examples)
        for condition, row in found.items():
            lines.append(f"| {rate} | {mse_weight} | {condition} | {row['correct']} | "
                         f"{row['name_from_document']} | {row['right_among_document_names']} | "
                         f"{row['chance_among_document_names']} |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / args.output).write_text(json.dumps(analysis, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
