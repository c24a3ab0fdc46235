"""``predict_file``: label a file (or a stream of JSON lines) with a bundle, a chunk at a time.

Memory stays bounded whatever the input's size: the input is checked and read in chunks, and the
output written as each chunk is labelled (:mod:`slm.data.stream`). No PyTorch is imported for an
exported bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from slm.errors import ConfigError
from slm.runtime.bundle import Bundle, load

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ("label", "score", "probabilities")
RENAMED_RESULT_COLUMNS = ("predicted_label", "predicted_score", "predicted_probabilities")


@dataclass(frozen=True)
class PredictionRun:
    """What :func:`predict_file` did: rows labelled, the columns written, where (None: stdout)."""

    rows: int
    columns: list[str]
    result_columns: tuple[str, str, str]
    output: str | None


def output_format(output: str | Path | None) -> str | None:
    """The table format an output path asks for by its extension (None: JSON lines on stdout)."""
    if output is None or str(output) == "-":
        return None
    from slm.data.files import EXTENSIONS

    fmt = EXTENSIONS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the output format of {str(output)!r}; end it in .csv, .tsv, .jsonl or .parquet, "
            "or leave out -o for JSON lines on stdout"
        )
    return fmt


def result_columns(existing: list[str]) -> tuple[str, str, str]:
    """The names of the prediction columns: renamed when the input already has one of the plain names."""
    return RENAMED_RESULT_COLUMNS if any(n in existing for n in RESULT_COLUMNS) else RESULT_COLUMNS


def predict_file(
    bundle: str | Path | Bundle,
    input: str | Path | IO[str],
    output: str | Path | None = None,
    *,
    text_col: str | None = None,
    component: str | None = None,
    batch_size: int = 64,
    raw_csv: bool = False,
    on_rows: Callable[[int, int], None] | None = None,
    backend: str | None = None,
) -> PredictionRun:
    """Label every text of ``input`` with ``bundle`` and write rows to ``output`` (None or '-': stdout).

    ``input`` is a CSV/TSV/JSONL/Parquet path, or an open text stream of JSON lines (e.g. stdin).
    A file is checked end to end (and its rows counted) before the model loads, so bad input costs
    no model load. Output rows are the input columns plus label, score and probabilities (see
    :func:`result_columns`); ``output``'s extension sets its format. CSV/TSV cells a spreadsheet would
    run as formulas are neutralised unless ``raw_csv``. ``on_rows(done, total)`` is called after each
    chunk, and once with ``done=0`` when the input is checked and the model loaded (``total`` is 0 for a stream).
    ``backend`` ("onnx", "openvino", "torch"; None: the bundle's default) is the engine a path is loaded with.
    """
    from slm.data.stream import open_stdin, open_table, writing

    fmt = output_format(output)
    if raw_csv and fmt not in ("csv", "tsv"):
        raise ConfigError("--raw-csv applies to CSV and TSV output only (-o FILE.csv or FILE.tsv)")
    is_path = isinstance(input, str | Path) and str(input) != "-"
    table = open_table(Path(str(input)), text_col) if is_path else None
    model = bundle if isinstance(bundle, Bundle) else load(bundle, backend=backend)
    if table is None:
        import sys

        stream = input if not isinstance(input, str | Path) else sys.stdin
        table = open_stdin(stream, text_col)
    try:
        names = result_columns(table.columns)
        if names != RESULT_COLUMNS:
            logger.info("note: the input has a 'label' column; predictions go to %s", ", ".join(names))
        columns = [*table.columns, *names]
        thresholds = model.thresholds(component) if model.multi_label else None
        target = None if output is None else str(output)
        with writing(fmt, target, columns, multi_label=model.task == "multi_label", raw_csv=raw_csv) as write:
            if on_rows is not None:
                on_rows(0, table.rows or 0)  # checked and loaded: the work starts
            for chunk in table.chunks():  # bounded chunks: memory does not grow with the rows
                proba = model.predict_proba(chunk.texts, component=component, batch_size=batch_size)
                write.predictions(chunk.rows, proba, model.labels, thresholds, names)  # columns, no dict per row
                if on_rows is not None:
                    on_rows(len(chunk.rows), table.rows or 0)
    finally:
        table.close()
    return PredictionRun(rows=table.rows, columns=columns, result_columns=names, output=target)
