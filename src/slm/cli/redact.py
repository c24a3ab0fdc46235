"""``slm redact``: replace personal data (e-mails, phones, cards, IBANs, IDs...) in a file or stdin."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm.cli._util import command, err, split_cols


class Mode(StrEnum):
    placeholder = "placeholder"
    pseudonym = "pseudonym"


InputArg = Annotated[
    str,
    typer.Argument(
        metavar="INPUT",
        help="CSV, TSV, JSONL or Parquet file, a .txt file (one text per line), or '-' for text lines on stdin.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "-o",
        "--output",
        help="Output file, written atomically; a table's format follows its extension. Default (or '-'): "
        "stdout (JSON lines for a table, text lines for text).",
    ),
]
ColumnOpt = Annotated[
    list[str] | None,
    typer.Option("--column", help="Table column to redact (repeat for more; default: the text column by name)."),
]
ModeOpt = Annotated[
    Mode,
    typer.Option(
        "--mode",
        help="placeholder: the type in angle brackets (EMAIL, PHONE...); pseudonym: the type and 8 letters, "
        "the same for the same value under one --key-file.",
    ),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Secret key for --mode pseudonym (16+ bytes): the same key gives the same pseudonyms in every run.",
    ),
]
TypesOpt = Annotated[
    str | None,
    typer.Option(
        "--types",
        help="Comma-separated PII types (default: all but PERSON): "
        "EMAIL,PHONE,CARD,IBAN,CN_ID,IP,URL,DOB,PERSON (PERSON needs spaCy and a model).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No summary or notes on stderr.")]


@command(no_args_is_help=True)
def redact(
    input: InputArg,
    output: OutputOpt = None,
    column: ColumnOpt = None,
    mode: ModeOpt = Mode.placeholder,
    key_file: KeyFileOpt = None,
    types: TypesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Replace personal data in texts with placeholders or consistent pseudonyms.

    Finds e-mail addresses, phone numbers (international, and Chinese mobiles), payment card numbers
    (Luhn-checked), IBANs and Chinese resident ID numbers (checksums), IP addresses, URLs and dates of
    birth, in English and Chinese. Numbers that fail their checksum are left alone. The input is read
    and the output written a chunk at a time; a table keeps every column other than the redacted ones
    as read. A count per type goes to stderr.

    Examples:

        slm redact tickets.csv -o tickets.redacted.csv

        slm redact chats.jsonl --column question --column answer -o chats.redacted.jsonl

        cat notes.txt | slm redact - --mode pseudonym --key-file secret.key > notes.redacted.txt
    """
    from slm.api.redacting import read_key, redact_file

    if quiet:
        from slm.logs import attach_cli_handler

        attach_cli_handler(logging.WARNING)
    key = read_key(key_file) if key_file is not None else None
    if key is not None and mode is not Mode.pseudonym:
        from slm.errors import ConfigError

        raise ConfigError("--key-file is for --mode pseudonym")
    run = redact_file(
        "-" if input == "-" else input,
        output,
        columns=column or None,
        mode=mode.value,
        key=key,
        types=split_cols(types),
    )
    if quiet:
        return
    found = ", ".join(f"{kind} {n}" for kind, n in sorted(run.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    where = f" to {escape(run.output)}" if run.output else ""
    what = "lines" if not run.columns else "rows"
    err.print(f"Redacted {run.changed} of {run.rows} {what}{where}: {found or 'no personal data found'}")
