"""``suggest``: which unlabelled texts to label next (active learning), written for an annotator.

The picking lives in :mod:`slm.training.suggest`; this checks the request, writes the file and logs
what was counted. The file is read a chunk at a time and the output written atomically (a temporary
file beside it, renamed into place), its text cells neutralised against spreadsheet formulas as every
CSV slm writes from user text (:mod:`slm.cells`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm.cells import csv_cell, csv_row, jsonable
from slm.errors import ConfigError
from slm.fileio import write_text_atomic
from slm.runtime.bundle import Bundle, load

if TYPE_CHECKING:
    from slm.training.suggest import Suggestion

__all__ = ["SUGGEST_COLUMNS", "SuggestRun", "suggest"]

log = logging.getLogger(__name__)

# The output's columns: ``text`` and an empty ``label`` so that the annotated file trains as it is
# (``slm train`` finds both by name); the rest say what the model thought and why the text was picked.
SUGGEST_COLUMNS = ("rank", "row", "text", "predicted_label", "score", "margin", "cluster", "reason", "label")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


@dataclass(frozen=True)
class SuggestRun:
    """What :func:`suggest` did: the picks (best first), what it counted, where it wrote them."""

    suggestions: list[Suggestion]
    rows: int
    usable: int
    empty: int
    repeated: int
    in_training: int
    near_duplicates: int
    strategy: str
    component: str
    seconds: float
    output: str | None


def suggest(
    bundle: str | Path | Bundle,
    unlabeled: str | Path,
    *,
    n: int,
    output: str | Path | None = None,
    text_col: str | None = None,
    strategy: str = "auto",
    seed: int = 0,
    near_duplicate: float = 0.95,
    batch_size: int = 64,
    compare_training: bool = True,
    show_progress: bool = False,
) -> SuggestRun:
    """Pick the ``n`` texts of ``unlabeled`` whose labels would help ``bundle`` most; write them to ``output``.

    ``strategy``: ``auto`` (uncertainty and diversity: k-means over the most uncertain texts' embeddings),
    ``margin`` or ``entropy`` (uncertainty alone), ``random`` (a seeded baseline). Empty texts, repeats
    (case and whitespace aside), texts of the bundle's recorded training file and near-duplicates (cosine
    >= ``near_duplicate`` in the bundle's embedding space) of a training text or of another pick are
    never suggested; ``compare_training=False`` skips the training file. ``output`` (.csv, .tsv or .jsonl)
    gets one row per pick, best first: :data:`SUGGEST_COLUMNS`, ``label`` empty for the annotator.
    ``show_progress`` draws a progress bar on stderr.
    """
    from slm.data.stream import open_table
    from slm.training.suggest import SuggestConfig, check_bundle, labelled_texts, select

    config = SuggestConfig(n=n, strategy=strategy, seed=seed, near_duplicate=near_duplicate, batch_size=batch_size)
    config.check()
    fmt = _output_format(output, unlabeled)
    table = open_table(unlabeled, text_col)  # checked end to end before the model loads
    model = bundle if isinstance(bundle, Bundle) else load(bundle, backend=_backend(bundle))
    check_bundle(model)
    if config.n > table.rows:
        raise ConfigError(f"{table.name}: -n {config.n:,} asks for more texts than the file's {table.rows:,} rows")
    started = time.perf_counter()
    labelled = labelled_texts(model) if compare_training else []
    with _progress(show_progress) as advance:
        selection = select(model, table, config, labelled=labelled, on_rows=advance)
    seconds = round(time.perf_counter() - started, 2)
    if output is not None and fmt is not None:
        _write(Path(output), fmt, selection.suggestions)
    log.info(
        f"picked {len(selection.suggestions):,} of {selection.usable:,} usable texts ({selection.strategy}, "
        f"{selection.component} probabilities) from {selection.rows:,} rows; left out: {selection.empty:,} empty, "
        f"{selection.repeated:,} repeated, {selection.in_training:,} already in the training data, "
        f"{selection.near_duplicates:,} near-duplicates of training texts among the candidates ({seconds:.1f} s)"
    )
    return SuggestRun(
        suggestions=selection.suggestions, rows=selection.rows, usable=selection.usable, empty=selection.empty,
        repeated=selection.repeated, in_training=selection.in_training, near_duplicates=selection.near_duplicates,
        strategy=selection.strategy, component=selection.component, seconds=seconds,
        output=None if output is None else str(output),
    )  # fmt: skip


def _backend(bundle: str | Path) -> str | None:
    """PyTorch whenever the bundle has its PyTorch transformer (suggest needs its embeddings)."""
    from slm.bundle.manifest import read_manifest

    manifest = read_manifest(Path(bundle), verify=False)
    return "torch" if manifest.components.transformer is not None else None


def _output_format(output: str | Path | None, unlabeled: str | Path) -> str | None:
    if output is None:
        return None
    fmt = FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the output format of {str(output)!r}; end it in .csv, .tsv or .jsonl")
    with contextlib.suppress(OSError):
        if Path(output).resolve() == Path(unlabeled).resolve():
            raise ConfigError(f"{output}: the output would replace the unlabelled input; write to another file")
    return fmt


def _row(rank: int, s: Suggestion) -> dict[str, Any]:
    return {"rank": rank, "row": s.row, "text": s.text, "predicted_label": s.predicted_label, "score": s.score,
            "margin": s.margin, "cluster": s.cluster, "reason": s.reason, "label": None}  # fmt: skip


def _write(path: Path, fmt: str, suggestions: list[Suggestion]) -> None:
    rows = [_row(rank, s) for rank, s in enumerate(suggestions, start=1)]
    if fmt == "jsonl":
        text = "".join(json.dumps(jsonable({**r, "label": ""}), ensure_ascii=False) + "\n" for r in rows)
    else:
        delimiter = "," if fmt == "csv" else "\t"
        lines = [csv_row(SUGGEST_COLUMNS, delimiter)]
        lines += [csv_row([csv_cell(r[c]) for c in SUGGEST_COLUMNS], delimiter) for r in rows]
        text = "".join(lines)
    write_text_atomic(path, text)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A transient bar over the rows scored, on stderr, only when asked for."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    from slm.console import console

    with Progress(*Progress.get_default_columns(), console=console, transient=True) as bar:
        task = bar.add_task("scoring", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, total=total or None, advance=done)

        yield advance
