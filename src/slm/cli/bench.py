"""``slm bench``: bundles side by side on this machine (:func:`slm.api.bench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._util import BackendOpt, command, out
from slm.fileio import FORCE_HELP


@command(name="bench", no_args_is_help=True)
def bench(
    bundles: Annotated[
        list[Path],
        typer.Argument(metavar="BUNDLE", help="Bundle directories to compare (one or more).", show_default=False),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for benchmark.json, benchmark.md and benchmark.png.")
    ],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Labelled file for accuracy and agreement (and the texts timed)."),
    ] = None,
    text_col: Annotated[str | None, typer.Option("--text-col", help="Column holding the text.")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col", help="Column holding the label.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for every variant.")] = 2,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Interleaved measuring rounds.")] = 5,
    baselines: Annotated[
        bool,
        typer.Option("--baselines/--no-baselines", help="Add PyTorch fp32 and PyTorch dynamic int8."),
    ] = True,
    optimum: Annotated[
        bool,
        typer.Option(
            "--optimum/--no-optimum",
            help="Add Hugging Face Optimum's ONNX Runtime dynamic int8 (builds its own venv once).",
        ),
    ] = True,
    max_eval: Annotated[
        int | None, typer.Option("--max-eval", min=1, help="Score at most this many labelled texts.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    backend: BackendOpt = None,
) -> None:
    """Benchmark bundles side by side: size, load time, memory, latency, throughput, accuracy.

    Each variant runs in its own process; the measurements are interleaved in rounds so machine
    noise hits all variants alike. Writes JSON, a Markdown table and an accuracy-vs-latency plot.
    """
    from slm.api.benchmarking import bench as run_bench
    from slm.benchmark.report import results_table

    results = run_bench(
        bundles, output, data=data, text_col=text_col, label_col=label_col, threads=threads, rounds=rounds,
        baselines=baselines, optimum=optimum, max_eval=max_eval, show_progress=not quiet, force=force,
        backend=backend.value if backend else None,
    )  # fmt: skip
    out.print(results_table(results))
    out.print(f"\nwritten: {escape(str(output / 'benchmark.json'))}, benchmark.md, benchmark.png")
