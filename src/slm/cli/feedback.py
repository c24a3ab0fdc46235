"""``slm feedback import|export``: corrections between files and the feedback database
(:func:`slm.api.import_feedback`, :func:`slm.api.export_feedback`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._util import app, guard_group, out
from slm.serving.config import DEFAULT_FEEDBACK_DB

group = typer.Typer(
    help="Feedback on a served model's predictions: import corrections made elsewhere, export a labelled file. "
    "'slm serve' stores what POST /v1/models/{name}/feedback receives in the same database.",
    no_args_is_help=True,
)

DbOpt = Annotated[
    str,
    typer.Option("--db", help="The feedback database: a SQLite file or a URL (postgresql+psycopg://USER:PW@HOST/DB), "
                 "as given to 'slm serve --feedback-db'."),
]  # fmt: skip
ModelOpt = Annotated[str | None, typer.Option("--model", help="The served model's name (as in /v1/models/NAME).")]


@group.command("import", no_args_is_help=True)
def import_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, TSV or JSONL with text and label columns, and optionally "
            "predicted, verdict, id, model, version, note, user_id, created_at.",
            show_default=False,
        ),
    ],
    db: DbOpt = DEFAULT_FEEDBACK_DB,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="The model of rows that name none (a file without a model column is about this one)."
        ),
    ] = None,
    redact: Annotated[
        bool,
        typer.Option(
            "--redact/--no-redact",
            help="Replace personal data (e-mail addresses; phone, card, IBAN and ID "
            "numbers; ...) in texts, notes and user ids with placeholders before storing them, as "
            "'slm serve' does.",
        ),
    ] = True,
) -> None:
    """Store corrections made elsewhere (a labelling tool, a spreadsheet) as feedback.

    The whole file is checked first: one bad row and nothing is stored. Importing the same file twice stores
    each row once (rows without an id get one from their content). A row whose id is stored with other
    content is refused, and the command fails after storing the rest.
    """  # fmt: skip
    from slm.api.feedback import import_feedback

    report = import_feedback(file, db, model=model, redact=redact)
    out.print(f"imported {report.rows:,} rows into {escape(report.database)}: {report.inserted:,} new, "
              f"{report.duplicates:,} already stored, {report.conflicts:,} conflicts")  # fmt: skip


@group.command("export", no_args_is_help=True)
def export_command(
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="The labelled file to write: .csv, .tsv or .jsonl (replaced atomically).",
            show_default=False,
        ),
    ],
    db: DbOpt = DEFAULT_FEEDBACK_DB,
    model: ModelOpt = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only feedback from this long ago on: 7d, 12h (a bare number is days)."),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Also rows without a correct label or marked 'unsure' (for labelling them).")
    ] = False,
    raw_csv: Annotated[
        bool,
        typer.Option(
            "--raw-csv",
            help="Leave CSV cells as they are (by default a text "
            "that starts like a spreadsheet formula gets a leading ').",
        ),
    ] = False,
) -> None:
    """Write stored feedback as a labelled file: text, label, predicted, verdict, model, version, id, created_at.

    By default the rows 'slm update' would train on: with a correct label and a verdict other than 'unsure'.
    """  # fmt: skip
    from slm.api.feedback import export_feedback

    report = export_feedback(db, output, model=model, since=since, everything=everything, raw_csv=raw_csv)
    left = (
        f" ({report.skipped:,} without a correct label or unsure left out; --all writes them)" if report.skipped else ""
    )
    rows = "1 row" if report.rows == 1 else f"{report.rows:,} rows"
    out.print(f"wrote {rows} to {escape(str(report.output))}{left}")


@group.command("purge")
def purge_command(
    db: DbOpt = DEFAULT_FEEDBACK_DB,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete feedback stored longer ago than this: 90d, 12h (a bare number is days)."
        ),
    ] = "90d",
) -> None:
    """Delete old feedback, texts included ('slm serve' does it at start and hourly with --feedback-retention)."""
    from slm.api.feedback import purge_feedback
    from slm.storage.sql import safe_url

    removed = purge_feedback(db, older_than)
    out.print(f"deleted {removed:,} feedback row{'' if removed == 1 else 's'} older than {older_than} "
              f"from {escape(safe_url(str(db)))}")  # fmt: skip


app.add_typer(guard_group(group), name="feedback")
