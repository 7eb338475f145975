"""`mendel run`, `mendel worker` and `mendel lineage`: running workloads and reading back
what they made.

`mendel run` executes a manifest in this process against a local MLflow store (a laptop,
a demo, CI); `mendel worker` is the same code in a driver Pod, configured by the operator
through the environment. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from mendel.tracking import contract

__all__ = ["register"]

EXIT_FAILED = 1
EXIT_INVALID = 2
DEFAULT_STORE = ".mendel"


def register(app: typer.Typer) -> None:
    """Add the commands to the CLI."""
    app.command("run")(run)
    app.command("worker")(worker)
    app.command("lineage")(lineage)


def run(
    filename: Annotated[Path, typer.Option("--filename", "-f", help="The manifest to run.")],
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI; default: a SQLite store under ./.mendel.")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        help="Scratch space for checkpoints and models; default ./.mendel/runs/<name>.")] = None,
) -> None:
    """Run an experiment here, without a cluster; re-running the same manifest resumes it."""
    from rich.console import Console

    from mendel.tracking.runs import end_run, reopen_run
    from mendel.workloads.context import RunContext
    from mendel.workloads.progress import run_with_progress

    console = Console()
    resource, spec = _load(filename)
    store = Path(DEFAULT_STORE).resolve()
    uri = tracking_uri or _local_store_uri()
    if tracking_uri is None:
        store.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ARTIFACTS_DESTINATION", str(store / "artifacts"))
    os.environ[contract.ENV_TRACKING_URI] = uri
    name = resource["metadata"]["name"]
    ctx = RunContext.open(resource, tracking_uri=uri,
                          work_dir=work_dir or store / "runs" / name)
    console.print(f"[bold]{resource['kind']}/{name}[/]: MLflow run {ctx.run_id} ({uri})")
    reopen_run(ctx.client, ctx.run_id)  # a second `mendel run` resumes the same run
    outcome = "FAILED"
    try:
        summary = run_with_progress(resource["kind"], spec, ctx, console)
        outcome = "FINISHED"
    except KeyboardInterrupt:
        outcome = "KILLED"
        raise
    finally:
        end_run(ctx.client, ctx.run_id, outcome)
    console.print_json(json.dumps(summary, default=str))


def worker() -> None:
    """Run the workload of a driver Pod, as configured by the operator's environment."""
    from mendel.workloads.context import RunContext, WorkloadError
    from mendel.workloads.dispatch import run_workload
    from mendel.workloads.progress import progress_lines

    path = os.environ.get(contract.ENV_SPEC_PATH)
    if not path:
        _terminate({"error": f"{contract.ENV_SPEC_PATH} is not set"}, EXIT_INVALID)
    resource, spec = _load(Path(str(path)))
    identity = os.environ.get(contract.ENV_UID) or resource["metadata"]["name"]
    work_dir = Path(os.environ.get("MENDEL_WORK_DIR")
                    or Path(tempfile.gettempdir()) / "mendel" / identity)
    try:
        ctx = RunContext.from_environment(resource, work_dir)
        print(f"{resource['kind']}/{resource['metadata']['name']}: MLflow run {ctx.run_id}",
              flush=True)
        summary = run_workload(resource["kind"], spec, ctx,
                               progress_lines(lambda line: print(line, flush=True)))
    except WorkloadError as error:
        _terminate({"error": str(error)}, EXIT_INVALID)
    except Exception as error:  # reported to the operator through the termination message
        traceback.print_exc()
        _terminate({"error": f"{type(error).__name__}: {error}"}, EXIT_FAILED)
    _terminate(summary, 0)


def lineage(
    model: Annotated[str, typer.Argument(
        help="A LoggedModel id (m-...) or a registry URI: models:/name/3, models:/name@alias.")],
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI or ./.mendel's store.")] = None,
    depth: Annotated[int, typer.Option(help="Generations of ancestors to show.")] = 64,
) -> None:
    """Print a model's ancestry back to the experts, with scores at every node."""
    from mlflow import MlflowClient
    from rich.console import Console

    from mendel.tracking.lineage import resolve_model_id, walk_lineage
    from mendel.workloads.progress import lineage_tree

    uri = tracking_uri or os.environ.get(contract.ENV_TRACKING_URI) or _local_store_uri()
    os.environ[contract.ENV_TRACKING_URI] = uri
    client = MlflowClient(tracking_uri=uri)
    try:
        root = walk_lineage(client, resolve_model_id(client, model), max_depth=depth)
    except Exception as error:
        typer.secho(f"cannot read the lineage of {model}: {error}", fg=typer.colors.RED)
        raise typer.Exit(EXIT_FAILED) from None
    Console().print(lineage_tree(root))


def _local_store_uri() -> str:
    """The SQLite MLflow store `mendel run` writes to by default."""
    return f"sqlite:///{Path(DEFAULT_STORE).resolve() / 'mlflow.db'}"


def _load(path: Path) -> tuple[dict[str, Any], Any]:
    """Read and validate one manifest; exit 2 naming the fields on any error."""
    from mendel.api.kinds import KINDS
    from mendel.api.validation import load_documents, parse_spec, validate_resource

    try:
        documents = load_documents(path.read_text())
    except OSError as error:
        _terminate({"error": f"cannot read {path}: {error}"}, EXIT_INVALID)
    if len(documents) != 1:
        _terminate({"error": f"{path} must hold exactly one resource"}, EXIT_INVALID)
    resource = documents[0]
    errors = validate_resource(resource)
    if errors:
        _terminate({"error": "invalid spec", "fields": [str(e) for e in errors]}, EXIT_INVALID)
    return resource, parse_spec(KINDS[resource["kind"]], resource["spec"])


def _terminate(summary: dict[str, Any], code: int) -> None:
    """Write the JSON summary where Kubernetes reads termination messages, then exit."""
    text = json.dumps(summary, default=str)
    target = os.environ.get(contract.ENV_TERMINATION_LOG, "/dev/termination-log")
    with contextlib.suppress(OSError):  # not in a Pod: stdout is enough
        Path(target).write_text(text[-4000:])
    print(text, file=sys.stderr if code else sys.stdout)
    raise typer.Exit(code)
