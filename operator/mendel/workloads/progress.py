"""What `mendel run` and `mendel lineage` show people: a progress bar, a summary table and
an ancestry tree."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from mendel.tracking.lineage import LineageNode
from mendel.workloads.context import RunContext
from mendel.workloads.dispatch import run_workload

__all__ = ["compressor_table", "library_table", "lineage_tree", "progress_lines",
           "run_with_progress", "summary_table"]


def run_with_progress(kind: str, spec: Any, ctx: RunContext, console: Console) -> dict[str, Any]:
    """Run a workload with a live progress bar, then print a summary table."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        unit = "generations" if kind == "QDEvolution" else "steps"
        bar = progress.add_task(unit, total=None, detail="loading models")

        def on_summary(summary: Any) -> None:
            progress.update(bar, completed=summary.generation, total=summary.total,
                            detail=_detail(summary, digits=2))

        result = run_workload(kind, spec, ctx, on_summary)
    if result.get("kind") == "ExperienceLibrary":
        console.print(library_table(result))
    elif result.get("kind") == "CompressorTraining":
        console.print(compressor_table(result))
    else:
        console.print(summary_table(result))
    return result


def _detail(summary: Any, digits: int) -> str:
    """One line on where a run stands: the workload's own words, or a QD archive's."""
    if hasattr(summary, "describe"):
        return str(summary.describe())
    best = " ".join(f"{t}={s:.{digits}f}" for t, s in summary.best.items())
    return f"coverage {summary.coverage:.1%}, best {best}"


def progress_lines(write: Callable[[str], None], *, every_seconds: float = 15.0,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[Any], None]:
    """A progress callback that writes one plain line now and then, for `kubectl logs`.

    A Pod has no terminal for a progress bar; a line per tenth of the budget, or per
    `every_seconds` (whichever comes first), shows a run is alive without flooding logs.
    """
    last = {"time": -math.inf, "tenth": -1}

    def on_summary(summary: Any) -> None:
        total = summary.total or 0
        tenth = int(10 * summary.generation / total) if total else 0
        now = clock()
        done = bool(total) and summary.generation >= total
        if not done and tenth == last["tenth"] and now - last["time"] < every_seconds:
            return
        last.update(time=now, tenth=tenth)
        share = f" ({summary.generation / total:.0%})" if total else ""
        unit = "step" if hasattr(summary, "describe") else "generation"
        write(f"{unit} {summary.generation}/{total or '?'}{share}: {_detail(summary, digits=3)}")

    return on_summary


def summary_table(result: dict[str, Any]) -> Table:
    """Per task: each expert's score, the final model's, and the best elite's."""
    experts = result.get("experts", {})
    final = (result.get("final") or {}).get("scores") or {}
    tasks = list(result.get("best", {}))
    table = Table(title=f"{result.get('name')}: {result.get('generations')} generations, "
                        f"coverage {result.get('coverage', 0):.1%}")
    table.add_column("model")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("average", justify="right")
    rows = [(f"expert {name}", scores) for name, scores in experts.items()]
    rows += [("best elite per task", result.get("best", {})), ("final model", final)]
    for label, scores in rows:
        values = [scores.get(task) for task in tasks]
        known = [v for v in values if v is not None]
        average = sum(known) / len(known) if known else None
        table.add_row(label, *[_fmt(v) for v in values], _fmt(average))
    return table


def library_table(result: dict[str, Any]) -> Table:
    """Before/after scores on the held-out set, then the learned experiences."""
    table = Table(title=f"{result.get('name')}: {result.get('steps')} steps, "
                        f"{result.get('library')} experiences")
    table.add_column("")
    table.add_column("Mean@k", justify="right")
    table.add_column("Pass@k", justify="right")
    for label in ("before", "after"):
        scores = result.get(label) or {}
        table.add_row(f"{label} (library {'empty' if label == 'before' else 'learned'})",
                      _fmt(scores.get("meanAtK")), _fmt(scores.get("passAtK")))
    table.add_section()
    for entry in result.get("experiences", []):
        table.add_row(f"[bold]{entry['id']}[/]", entry["text"], "")
    return table


def compressor_table(result: dict[str, Any]) -> Table:
    """Held-out QA per condition (compressed, raw text, no context), then each stage."""
    table = Table(title=f"{result.get('name')}: CLaRa compressor")
    for column in ("", "Cover-EM", "EM", "F1"):
        table.add_column(column, justify="right" if column else "left")
    labels = {"compressed": "compressed documents", "raw_text": "raw text (base model)",
              "no_context": "no context (base model)"}
    scores = ((result.get("evaluation") or {}).get("scores")) or {}
    for condition, label in labels.items():
        row = scores.get(condition)
        if row is not None:
            table.add_row(label, _fmt(row["cover_em"]), _fmt(row["exact_match"]),
                          _fmt(row["f1"]))
    table.add_section()
    for stage, summary in (result.get("stages") or {}).items():
        recall = summary.get("recallAtK")
        detail = f"{summary['steps']} steps, loss {summary['loss']:.3f}" + (
            f", Recall@k {recall:.2f}" if recall is not None else "")
        table.add_row(f"{stage}: {detail}", "", "", "")
    return table


def lineage_tree(root: LineageNode) -> Tree:
    """A rich tree of a model's ancestry."""
    tree = Tree(_label(root))
    _add_parents(tree, root, seen=set())
    return tree


def _add_parents(branch: Tree, node: LineageNode, seen: set[str]) -> None:
    for parent in node.parents:
        child = branch.add(_label(parent))
        if parent.model_id in seen:
            child.add("[dim](ancestry shown above)[/]")
            continue
        seen.add(parent.model_id)
        _add_parents(child, parent, seen)


def _label(node: LineageNode) -> str:
    scores = "  ".join(f"{task}={score:.3f}" for task, score in sorted(node.scores.items()))
    born = f"{node.operator}, gen {node.generation}" if node.generation >= 0 else node.operator
    weights = " [green]weights[/]" if node.has_weights else ""
    return (f"[bold]{node.genome_id}[/] ({born}) {scores}{weights}  "
            f"[dim]{node.model_id}[/]")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
