"""``slm predict``: label new texts with a bundle, a chunk at a time (locally or on Ray)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from slm.cli._util import BackendOpt, ForceOpt, TextColOpt, command, err
from slm.errors import ConfigError, DataError


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class ShardFormat(StrEnum):
    parquet = "parquet"
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"


class Component(StrEnum):
    ensemble = "ensemble"
    transformer = "transformer"
    ngram = "ngram"
    static = "static"


def _stdin() -> Any:
    """Standard input for JSON lines, with a hint when it is a terminal."""
    if sys.stdin is None:
        raise DataError("no standard input to read from")
    if sys.stdin.isatty():
        err.print("[dim]reading JSON lines from stdin (end with Ctrl-D)…[/dim]")
    return sys.stdin


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on stderr, drawn from the first report on: input refused before any row
    (a bad file is checked before the model loads) leaves stderr to the one-line error alone."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.progress import Progress

    from slm.console import console

    progress = Progress(*Progress.get_default_columns(), console=console, transient=True)
    task = progress.add_task("predicting", total=None)

    def advance(done: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, total=total or None, advance=done)

    try:
        yield advance
    finally:
        if progress.live.is_started:
            progress.stop()


BundleArg = Annotated[
    Path,
    typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False),
]
InputArg = Annotated[
    str,
    typer.Argument(
        metavar="INPUT",
        help="CSV, TSV, JSONL or Parquet file with a text column, or '-' for JSON lines on stdin.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "-o",
        "--output",
        help="Output file; its extension (.csv, .tsv, .jsonl, .parquet) sets the format. "
        "Default (or '-'): JSON lines on stdout.",
    ),
]
ComponentOpt = Annotated[
    Component | None,
    typer.Option("--component", help="Which model answers (default: the one the bundle recommends)."),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Texts per inference batch (default: 64; 1024 on Ray).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr.")]
EngineOpt = Annotated[
    Engine,
    typer.Option("--engine", help="local: this process; ray: Ray Data on a Ray cluster, a folder of shards out."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join (auto, or ray://HEAD:10001; default: start a local one)."),
]
ActorsOpt = Annotated[
    int | None, typer.Option("--actors", min=1, help="Ray: model copies (default: the cluster's CPUs / threads).")
]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="Ray: ONNX Runtime threads per model copy.")]
ShardFormatOpt = Annotated[
    ShardFormat | None,
    typer.Option("--format", help="Ray: shard format (default: the -o folder's suffix, else parquet)."),
]
RawCsvOpt = Annotated[
    bool,
    typer.Option("--raw-csv", help="CSV/TSV: write cells as they are, without neutralising spreadsheet formulas."),
]


@command(no_args_is_help=True)
def predict(
    bundle: BundleArg,
    input: InputArg,
    output: OutputOpt = None,
    text_col: TextColOpt = None,
    component: ComponentOpt = None,
    batch_size: BatchSizeOpt = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    threads: ThreadsOpt = 1,
    shard_format: ShardFormatOpt = None,
    force: ForceOpt = False,
    raw_csv: RawCsvOpt = False,
    backend: BackendOpt = None,
) -> None:
    """Label new texts with a trained bundle.

    Output rows are the input columns plus 'label', 'score' (confidence of the top label) and
    'probabilities' (label -> probability; a JSON string in CSV/TSV). Multi-label bundles give a
    list of labels (a JSON list in CSV/TSV). If the input already has a 'label' column, the new
    columns are named 'predicted_label', 'predicted_score' and 'predicted_probabilities'.

    CSV/TSV cells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or
    carriage return, other than plain numbers) get a leading ' unless --raw-csv is given. The input
    is read and the output written a chunk at a time; a line over 8 Mi characters is refused.

    With --engine ray, INPUT may be a folder of shards, and -o names a folder that receives one
    shard per block plus _manifest.json (rows, sha256 of every shard); it replaces an earlier
    output only once every input row is written exactly once.

    Examples:

        slm predict runs/model new.csv -o labelled.csv

        echo '{"text": "where is my card?"}' | slm predict runs/model -

        slm predict runs/model-int8 texts/ -o labelled.parquet --engine ray --address auto
    """
    if engine is Engine.ray:
        if backend is not None:
            raise ConfigError("--backend is for --engine local only")
        _predict_on_ray(
            bundle, input, output, text_col=text_col, component=component, batch_size=batch_size, quiet=quiet,
            address=address, actors=actors, threads=threads, shard_format=shard_format, force=force, raw_csv=raw_csv,
        )  # fmt: skip
        return
    ray_only = {"--address": address is not None, "--actors": actors is not None,
                "--format": shard_format is not None, "--threads": threads != 1}  # fmt: skip
    given = [name for name, used in ray_only.items() if used]
    if given:
        raise ConfigError(f"{given[0]} is for --engine ray only")
    from slm.api.predicting import output_format, predict_file

    if quiet:  # --quiet: no notes either, only warnings and the one-line error
        from slm.logs import attach_cli_handler

        attach_cli_handler(logging.WARNING)
    to_file = output_format(output) is not None  # checked before stdin is touched
    with _progress(not quiet and to_file) as advance:
        run = predict_file(
            bundle, _stdin() if input == "-" else input, output, text_col=text_col,
            component=component.value if component else None, batch_size=batch_size or 64, raw_csv=raw_csv,
            on_rows=advance, backend=backend.value if backend else None,
        )  # fmt: skip
    if to_file and not quiet:
        err.print(f"Wrote {run.rows} predictions to {escape(str(output))}")


def _predict_on_ray(bundle: Path, input: str, output: str | None, *, text_col: str | None,
                    component: Component | None, batch_size: int | None, quiet: bool, address: str | None,
                    actors: int | None, threads: int, shard_format: ShardFormat | None,
                    force: bool, raw_csv: bool) -> None:  # fmt: skip
    """``slm predict --engine ray``: Ray Data over the input, a folder of shards out."""
    from slm.runtime.ray_predict import RayPredictConfig, predict_on_ray

    if input == "-":
        raise ConfigError("--engine ray reads files or folders, not stdin")
    if output in (None, "-"):
        raise ConfigError("--engine ray writes a folder of shards: pass -o FOLDER")
    config = RayPredictConfig(address=address, actors=actors, threads=threads, batch_size=batch_size or 1024,
                              component=component.value if component else None, text_col=text_col,
                              output_format=shard_format.value if shard_format else None,
                              show_progress=not quiet, force=force, raw_csv=raw_csv)  # fmt: skip
    manifest = predict_on_ray(bundle, Path(input), Path(str(output)), config)
    if not quiet:
        rate = manifest["rows"] / max(manifest["seconds"], 1e-9)
        err.print(f"Wrote {manifest['rows']} predictions in {len(manifest['shards'])} {manifest['format']} shards to "
                  f"{escape(str(output))} ({manifest['seconds']:.1f} s, {rate:.0f} texts/s, "
                  f"{manifest['engine']['actors']} actors)")  # fmt: skip


# ---------------------------------------------------------------- models, info
