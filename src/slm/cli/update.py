"""``slm update``: train a served bundle further on feedback and promote it only when it earns it
(:func:`slm.api.update`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from slm.cli._util import LabelColOpt, TextColOpt, command, load_api, out
from slm.logs import attach_cli_handler
from slm.training.gate import UpdateOptions


@command(no_args_is_help=True)
def update(
    bundle: Annotated[
        Path,
        typer.Argument(
            metavar="BUNDLE", help="The bundle to improve (e.g. the one a server watches).", show_default=False
        ),
    ],  # fmt: skip
    feedback: Annotated[
        str,
        typer.Option(
            "--feedback",
            help="Feedback database URL (sqlite:///..., postgresql+psycopg://...) or a "
            "corrections file (CSV/JSONL: text,label).",
            show_default=False,
        ),
    ],  # fmt: skip
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="Where the promoted bundle goes; BUNDLE itself to replace it "
            "in place (the old one is kept as OUTPUT.previous).",
            show_default=False,
        ),
    ],  # fmt: skip
    data: Annotated[Path | None, typer.Option("--data", help="More labelled texts to learn from.")] = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only the feedback recorded for this served model name.")
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Accuracy points the original test split may lose.")
    ] = UpdateOptions.tolerance,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Share of each label's feedback held out to judge the update.")
    ] = UpdateOptions.holdout,
    rehearsal: Annotated[
        int, typer.Option("--rehearsal", help="Original training texts per known label replayed.")
    ] = UpdateOptions.rehearsal,
    feedback_repeats: Annotated[
        int, typer.Option("--feedback-repeats", help="Times each feedback text is trained on per epoch.")
    ] = UpdateOptions.feedback_repeats,
    epochs: Annotated[
        int, typer.Option("--epochs", help="Passes over the update's training texts.")
    ] = UpdateOptions.epochs,
    learning_rate: Annotated[
        float, typer.Option("--learning-rate", help="Peak learning rate of the update.")
    ] = UpdateOptions.learning_rate,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the held-out slice, rehearsal and training.")
    ] = UpdateOptions.seed,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.")] = False,
) -> None:
    """Learn from feedback: warm-start, rehearse, gate against the current bundle, promote.

    New labels in the feedback grow the model. The update is compared with BUNDLE on its original test
    split and on a held-out slice of the feedback; it is promoted only when the feedback slice improves and
    the test split loses at most --tolerance points. Otherwise nothing changes and the command exits with
    code 5, saying both numbers. Undo a promotion with 'slm rollback OUTPUT'.
    """
    api = load_api()
    if quiet:  # no progress and no notes: only warnings and the outcome (or the one-line refusal)
        attach_cli_handler(logging.WARNING)
    options = UpdateOptions(tolerance=tolerance, holdout=holdout, rehearsal=rehearsal,
                            feedback_repeats=feedback_repeats, epochs=epochs, learning_rate=learning_rate,
                            seed=seed)  # fmt: skip
    outcome = api.update(bundle, feedback=feedback, output=output, data=data, text_col=text_col,
                         label_col=label_col, model=model, options=options, show_progress=not quiet)  # fmt: skip
    c = outcome.comparison
    table = Table(title="Update against the current bundle (accuracy)")
    for column in ("", "current", "update"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(f"original test split ({c.n_original})", f"{c.parent_original:.2%}", f"{c.candidate_original:.2%}")
    table.add_row(f"held-out feedback ({c.n_feedback})", f"{c.parent_feedback:.2%}", f"{c.candidate_feedback:.2%}")
    out.print(table)
    if outcome.new_labels:
        out.print(f"New labels: {escape(', '.join(outcome.new_labels))}")
    kept = f"; the previous bundle is kept at {escape(str(outcome.previous))}" if outcome.previous else ""
    out.print(f"[green]Promoted[/green] to {escape(str(outcome.path))} in {outcome.seconds:.0f}s{kept}")
