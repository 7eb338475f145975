"""The `mendel` command line.

Commands are added only once they do real work; each is a thin layer over a library
function so that the same checks run in the CLI, the operator and the worker.
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path
from typing import Annotated

import typer
import yaml

from mendel import __version__
from mendel.api.crd import crds, render_yaml
from mendel.api.validation import FieldError, load_documents, validate_resource

__all__ = ["app", "main"]

app = typer.Typer(
    help="Mendel: LLM self-improvement experiments (CycleQD, Training-Free GRPO, CLaRa) on "
    "Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Option("--filename", "-f", help="Manifest file(s); '-' reads standard input."),
    ],
) -> None:
    """Check manifests as the API server and the operator would; exit 1 on any error."""
    failed = 0
    for path in files:
        for label, errors in _validate_file(path):
            if errors:
                failed += 1
                typer.secho(f"{label}: invalid", fg=typer.colors.RED, err=False)
                for error in errors:
                    typer.echo(f"  {error}")
            else:
                typer.secho(f"{label}: valid", fg=typer.colors.GREEN)
    if failed:
        typer.echo(f"{failed} invalid document(s)")
        raise typer.Exit(code=1)


def _validate_file(path: Path) -> list[tuple[str, list[FieldError]]]:
    name = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if name == "<stdin>" else path.read_text()
        documents = load_documents(text)
    except (OSError, yaml.YAMLError) as error:
        return [(name, [FieldError("", f"cannot read: {error}")])]
    if not documents:
        return [(name, [FieldError("", "no YAML document found")])]
    results = []
    for index, document in enumerate(documents):
        label = _label(name, index, document)
        results.append((label, validate_resource(document)))
    return results


def _label(name: str, index: int, document: object) -> str:
    if isinstance(document, dict):
        kind = document.get("kind", "?")
        meta = document.get("metadata") or {}
        return f"{name}: {kind}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"
    return f"{name}[{index}]"


@app.command("crds")
def print_crds(
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Write one file per CRD here instead of stdout."),
    ] = None,
) -> None:
    """Print (or write) the CustomResourceDefinitions generated from the API models."""
    documents = crds()
    if output_dir is None:
        typer.echo("---\n".join(render_yaml(doc) for doc in documents.values()), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for filename, document in documents.items():
        (output_dir / filename).write_text(render_yaml(document))
        typer.echo(f"wrote {output_dir / filename}")


@app.command()
def version() -> None:
    """Print Mendel's version."""
    typer.echo(__version__)


# Modules under mendel.commands that add their commands with `register(app)`. They import
# heavy dependencies (torch, kopf, mlflow) inside the commands, so `mendel validate` stays
# fast and works in the operator image.
_COMMAND_MODULES: tuple[str, ...] = ("operator", "run")

for _module in _COMMAND_MODULES:
    import_module(f"mendel.commands.{_module}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
