"""``slm suggest``: the unlabelled texts to label next (active learning), over :func:`slm.api.suggest`."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._util import QuietOpt, TextColOpt, command, err, load_api


class Strategy(StrEnum):
    auto = "auto"
    margin = "margin"
    entropy = "entropy"
    random = "random"


BundleArg = Annotated[
    Path, typer.Argument(metavar="BUNDLE", help="Bundle directory written by 'slm train'.", show_default=False)
]
UnlabeledArg = Annotated[
    Path,
    typer.Argument(
        metavar="UNLABELED_FILE", help="CSV, TSV, JSONL or Parquet file of unlabelled texts.", show_default=False
    ),
]
CountOpt = Annotated[int, typer.Option("-n", "--count", help="How many texts to pick.", show_default=False)]
OutputOpt = Annotated[
    Path,
    typer.Option("-o", "--output", help="File to write the picks to (.csv, .tsv or .jsonl), best first."),
]
StrategyOpt = Annotated[
    Strategy,
    typer.Option(
        "--strategy",
        help="auto: uncertain and diverse (k-means over the most uncertain texts' embeddings); margin or "
        "entropy: the most uncertain; random: a seeded sample (the baseline to compare with).",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the k-means and of the random strategy.")]
NearDupOpt = Annotated[
    float,
    typer.Option(
        "--near-duplicate",
        min=0.01,
        max=1.0,
        help="Cosine similarity (in the bundle's embedding space) at which a text counts as a near-duplicate "
        "of a training text or of another pick, and is left out.",
    ),
]


@command(no_args_is_help=True)
def suggest(
    bundle: BundleArg,
    unlabeled: UnlabeledArg,
    count: CountOpt,
    output: OutputOpt,
    text_col: TextColOpt = None,
    strategy: StrategyOpt = Strategy.auto,
    seed: SeedOpt = 0,
    near_duplicate: NearDupOpt = 0.95,
    quiet: QuietOpt = False,
) -> None:
    """Pick the unlabelled texts whose labels would help the model most, for a person to label.

    Each text is scored by the bundle (how unsure its shipped model is: the margin between its two
    most likely labels) and embedded by its transformer; auto then spreads the picks over k-means
    clusters of the most uncertain texts so they are not all alike. Empty texts, repeats, texts of
    the bundle's training file and near-duplicates are never picked.

    The output has one row per pick, best first: rank, row (in UNLABELED_FILE), text, predicted_label,
    score, margin, cluster, reason, and an empty label column. Fill in label and train on it together
    with the original data (or give it to 'slm update').

    Example:

        slm suggest runs/model unlabelled.csv -n 200 -o to_label.csv
    """
    api = load_api()
    if quiet:
        from slm.logs import attach_cli_handler

        attach_cli_handler(logging.WARNING)
    run = api.suggest(
        bundle, unlabeled, n=count, output=output, text_col=text_col, strategy=strategy.value, seed=seed,
        near_duplicate=near_duplicate, show_progress=not quiet,
    )  # fmt: skip
    if not quiet:
        err.print(f"Wrote {len(run.suggestions)} texts to label to {escape(str(output))}")
