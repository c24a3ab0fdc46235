"""``slm evaluate``: score a bundle on a labelled file, every model side by side (:func:`slm.api.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._results import print_results, robustness_line
from slm.cli._util import (
    ForceOpt,
    LabelColOpt,
    LabelColsOpt,
    LabelSepOpt,
    MarginOpt,
    TextColOpt,
    command,
    load_api,
    out,
    split_cols,
)


@command(no_args_is_help=True)
def evaluate(
    bundle: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False),
    ],
    data: Annotated[
        Path,
        typer.Argument(metavar="DATA", help="Labelled CSV, TSV, JSONL or Parquet file.", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write report.json/.md/.html and confusion.png here."),
    ] = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    label_cols: LabelColsOpt = None,
    label_sep: LabelSepOpt = None,
    margin: MarginOpt = 1.0,
    force: ForceOpt = False,
    redact: Annotated[
        bool,
        typer.Option(
            "--redact",
            help="Replace personal data in the texts with placeholders as they are read: "
            "the report's mistake lists hold none.",
        ),
    ] = False,
    robustness: Annotated[
        bool,
        typer.Option(
            "--robustness/--no-robustness",
            help="Also score the shipped model and the baseline on perturbed texts (typos, casing, ...; at most "
            "500) and per slice of text length and label frequency.",
        ),
    ] = True,
) -> None:
    """Score a bundle on a labelled file: every model side by side, plus a recommendation.

    Labels the bundle never saw are refused. Use -o to keep the full report.
    """
    api = load_api()
    report = api.evaluate(
        bundle,
        data,
        text_col=text_col,
        label_col=label_col,
        label_cols=split_cols(label_cols),
        label_sep=label_sep,
        output=output,
        margin_points=margin,
        force=force,
        redact=redact,
        robustness=robustness,
    )
    print_results(report.get("models"), report.get("recommendation"), f"Evaluation on {data}")
    line = robustness_line(report.get("robustness"))
    if line:
        out.print(escape(line))


# ---------------------------------------------------------------- predict
