"""The ``slm bench`` command, ready for ``slm.cli`` to register in one line:

from slm.benchmark.command import bench
_command(name="bench", no_args_is_help=True)(bench)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slm.fileio import FORCE_HELP

out = Console(highlight=False, soft_wrap=False)


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
) -> None:
    """Benchmark bundles side by side: size, load time, memory, latency, throughput, accuracy.

    Each variant runs in its own process; the measurements are interleaved in rounds so machine
    noise hits all variants alike. Writes JSON, a Markdown table and an accuracy-vs-latency plot.
    """
    from slm.benchmark.harness import run_benchmark
    from slm.pipeline import DataSource

    source = DataSource(data, text_col, label_col) if data is not None else None
    results = run_benchmark(
        bundles, source, output, baselines=baselines, optimum=optimum, threads=threads, rounds=rounds,
        max_eval=max_eval, show_progress=not quiet, force=force,
    )  # fmt: skip
    print_table(results)
    out.print(f"\nwritten: {escape(str(output / 'benchmark.json'))}, benchmark.md, benchmark.png")


def print_table(results: dict) -> None:
    table = Table(title=results["title"], title_justify="left")
    columns = (("size MB", "size_mb", 1), ("load s", "load_s", 2), ("RSS MB", "peak_rss_mb", 0),
               ("p50 ms", "p50_short_ms", 2), ("p95 ms", "p95_short_ms", 2), ("p50 64t", "p50_long_ms", 2),
               ("texts/s", "texts_per_s", 1))  # fmt: skip
    table.add_column("variant")
    for label, _, _ in columns:
        table.add_column(label, justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("agree", justify="right")
    for row in results["variants"]:
        name = escape(row["name"]) + (" ★" if row.get("pareto") else "")
        if not row["ok"]:
            table.add_row(name, f"[red]failed[/]: {escape(str(row['error']))}")
            continue
        s = row["summary"]
        cells = ["–" if s[key] is None else f"{s[key]:,.{d}f}" for _, key, d in columns]
        cells += ["–" if s[k] is None else f"{100 * s[k]:.2f}%" for k in ("accuracy", "agreement")]
        table.add_row(name, *cells)
    out.print(table)
