"""``predict_file``: label a file (or a stream of JSON lines) with a bundle, a chunk at a time.

Memory stays bounded whatever the input's size: the input is checked and read in chunks, and the
output written as each chunk is labelled (:mod:`slm.data.stream`). No PyTorch is imported for an
exported bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

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
            with _BackgroundWrites() as behind:
                for chunk in table.chunks():  # bounded chunks: memory does not grow with the rows
                    proba = model.predict_proba(chunk.texts, component=component, batch_size=batch_size)
                    # Columns, no dict per row; written while the next chunk is labelled.
                    behind.submit(write.predictions, chunk.rows, proba, model.labels, thresholds, names)
                    if on_rows is not None:
                        on_rows(len(chunk.rows), table.rows or 0)
    finally:
        table.close()
    return PredictionRun(rows=table.rows, columns=columns, result_columns=names, output=target)


class _BackgroundWrites:
    """Runs each write in one background thread, at most one at a time, while the caller labels the next chunk.

    Why: labelling a chunk leaves a core idle while the tokenizer and the Python steps run on one thread, and
    writing 100,000 rows took ~2.5 s of the CLI's ~115 s on 2 cores (bench/predict_throughput.py). Memory stays
    bounded: a write waits for the one before it, so at most two chunks are held. A failed write raises at the
    next ``submit`` or at exit; the block never ends with a write still running (the output is then complete, or
    discarded whole by :func:`slm.data.stream.writing`).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slm-write")
        self._pending: Future[None] | None = None

    def __enter__(self) -> _BackgroundWrites:
        return self

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        self._wait()
        self._pending = self._pool.submit(write, *args)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self._wait()
            elif self._pending is not None:
                self._pending.cancel()
                _wait_quietly(self._pending)
        finally:
            self._pool.shutdown(wait=True)


def _wait_quietly(future: Future[None]) -> None:
    """Wait for ``future`` and drop its error: the block is already failing with another one."""
    try:
        future.result()
    except BaseException:  # noqa: BLE001 - the first error is the one reported
        logger.debug("a background write failed after an earlier error", exc_info=True)
