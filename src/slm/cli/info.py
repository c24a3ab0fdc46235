"""``slm models`` and ``slm info``: the base models slm knows, and what a bundle is."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from slm.cli._results import field_value, print_compression, print_results, training_line
from slm.cli._util import command, load_bundle, out
from slm.cli.apps import describe_app_bundle

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest


@command()
def models() -> None:
    """List the base models slm knows by name (use one with 'slm train --base-model NAME')."""
    from slm.models.registry import ENGLISH_BASE_MODEL, MULTILINGUAL_BASE_MODEL, available_models

    table = Table(title="Base models", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("languages")
    table.add_column("installed", no_wrap=True)
    table.add_column("description", ratio=1)
    for row in available_models():
        name = str(row["name"])
        installed = "yes" if row["installed"] else f"no: {row['source']}"
        table.add_row(
            escape(name), f"{row['parameters_m']}M", escape(str(row["languages"])), escape(installed),
            escape(str(row["description"])),
        )  # fmt: skip
    out.print(table)
    out.print(
        "--base-model auto (the default) picks from the training texts' language: English -> "
        f"{ENGLISH_BASE_MODEL}, other languages or a mix -> {MULTILINGUAL_BASE_MODEL}."
    )
    out.print("Any local Hugging Face model directory or hub id works with --base-model too.")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        name = value.get("name") or value.get("id")
        return str(name) if name else json.dumps(value, ensure_ascii=False)
    return str(value)


def _files_line(manifest: Manifest) -> str:
    """What loading checked: the manifest's digest or signature, then every listed file's sha256.

    Loading refuses a bundle that fails either check (exit 4), so this line is only printed for one
    that passed; a format version 1 manifest carries no digest, and the line says so.
    """
    from slm.bundle.manifest import integrity_summary

    if manifest.files:
        return f"{len(manifest.files)} files, all match their sha256; {integrity_summary(manifest)}"
    return "none listed in the manifest"


@command(no_args_is_help=True)
def info(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
) -> None:
    """Show what a bundle is: task, labels, base model, test metrics, and whether its files are intact."""
    if describe_app_bundle(bundle, as_json=as_json):  # e.g. a recommender: its app shows it
        return
    from slm.cells import jsonable

    loaded = load_bundle(bundle)
    manifest = loaded.manifest
    if as_json:
        sys.stdout.write(json.dumps(jsonable(manifest.to_json()), indent=2, ensure_ascii=False) + "\n")
        return
    labels = list(loaded.labels)
    shown = ", ".join(labels[:8]) + (f", … ({len(labels) - 8} more)" if len(labels) > 8 else "")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows = [
        ("bundle", str(loaded.path)),
        ("task", str(loaded.task)),
        ("labels", f"{len(labels)}: {shown}"),
        ("base model", _describe(field_value(manifest.base_model))),
        ("default model", _describe(field_value(manifest.default_component))),
        ("created", _describe(field_value(manifest.created))),
        ("slm version", _describe(field_value(manifest.slm_version))),
        ("training", training_line(manifest.training)),
        ("files", _files_line(manifest)),
    ]
    for key, value in rows:
        if value not in ("None", ""):
            grid.add_row(key, escape(value))
    out.print(grid)
    if manifest.lineage:
        print_compression(manifest)
        return
    metrics = (manifest.metrics or {}).get("test")
    print_results(metrics, manifest.recommendation, "Test set")
