"""The prediction columns of ``slm predict`` as text and Arrow arrays, built from the probability arrays.

A bundle's labels, score and probabilities are formatted once per output (:class:`Layout`) and then per
slice of rows from the arrays (:class:`Predicted`), without a dict of every label's probability per row;
:mod:`slm.data.stream`'s sinks write them.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from slm.cells import csv_cell, jsonable, quoted

if TYPE_CHECKING:
    from slm.bundle.predictions import Decoded

Row = dict[str, Any]


class Layout:
    """The text of a bundle's prediction columns, made once per output: JSON and CSV templates with a ``%s``
    per label's probability, and each label as JSON and as a CSV cell."""

    def __init__(self, labels: list[str], names: tuple[str, str, str], multi_label: bool) -> None:
        self.labels, self.names, self.multi_label = labels, names, multi_label
        self.label_json = [json.dumps(label, ensure_ascii=False) for label in labels]
        probabilities = "{" + ", ".join(f"{key.replace('%', '%%')}: %s" for key in self.label_json) + "}"
        label, score, probs = (json.dumps(name, ensure_ascii=False).replace("%", "%%") for name in names)
        # A JSON line after its input columns, and a CSV row after its input cells (the probabilities are
        # always quoted: JSON holds '"'; the numbers hold no character that needs quoting).
        self.json_tail = f"{label}: %s, {score}: %s, {probs}: {probabilities}}}\n"
        self.csv_probabilities = '"' + probabilities.replace('"', '""') + '"'
        self._csv: dict[tuple[str, bool], tuple[list[str], str]] = {}
        self._arrow: tuple[list[Any], list[dict[str, Any]]] | None = None

    def csv(self, delimiter: str, raw: bool) -> tuple[list[str], str]:
        """Each label's CSV cell and the template of a row's prediction cells (label, score, probabilities)."""
        if (delimiter, raw) not in self._csv:
            cells = [quoted(csv_cell(label, raw=raw), delimiter) for label in self.labels]
            self._csv[delimiter, raw] = cells, f"%s{delimiter}%s{delimiter}{self.csv_probabilities}\n"
        return self._csv[delimiter, raw]

    def arrow(self) -> tuple[list[Any], list[dict[str, Any]]]:
        """The Arrow fields of the prediction columns and their pandas metadata entries, as pandas and
        pyarrow make them from rows of dicts (one such row is converted to find out)."""
        if self._arrow is None:
            import pandas as pd
            import pyarrow as pa

            label, score, probabilities = self.names
            one = {label: [[self.labels[0]] if self.multi_label else self.labels[0]], score: [0.5],
                   probabilities: [dict.fromkeys(self.labels, 0.5)]}  # fmt: skip
            schema = pa.Table.from_pandas(pd.DataFrame(one), preserve_index=False).schema
            self._arrow = list(schema), list(schema.pandas_metadata["columns"])
        return self._arrow


_MICRO_TEXTS = 10_000  # texts of 0 to 0.009999 kept: most of a row's probabilities are that small


@functools.cache
def _micro_table() -> Any:
    import numpy as np

    from slm.bundle.predictions import MICRO

    return np.array([repr(k / MICRO) for k in range(_MICRO_TEXTS)], dtype=object)


def micro_texts(micro: Any) -> Any:
    """``repr(round(p, 6))`` (what json.dumps and a CSV cell write) for each ``p`` given in millionths.

    ``k / 1e6`` is the float nearest k millionths, which is what ``round(p, 6)`` returns: the same float,
    so the same shortest repr (``0.0``, ``1e-06``, ``0.25``, ``1.0``).
    """
    import numpy as np

    from slm.bundle.predictions import MICRO

    texts = _micro_table()[np.minimum(micro, _MICRO_TEXTS - 1)]
    big = micro >= _MICRO_TEXTS
    if big.any():
        texts[big] = [repr(k / MICRO) for k in micro[big].tolist()]
    return texts


class Predicted:
    """Predictions of a slice of rows as columns (:class:`~slm.bundle.predictions.Decoded`), written by each
    sink without the per-row dict of every label's probability that :func:`labelled` builds."""

    def __init__(self, layout: Layout, decoded: Decoded) -> None:
        self.layout, self.decoded = layout, decoded

    def _chosen(self) -> list[list[int]]:
        import numpy as np

        assert self.decoded.chosen is not None
        return [np.flatnonzero(row).tolist() for row in self.decoded.chosen]

    def _label_json(self) -> list[str]:
        names = self.layout.label_json
        if self.decoded.chosen is None:
            return [names[i] for i in self.decoded.top.tolist()]
        return ["[" + ", ".join([names[i] for i in chosen]) + "]" for chosen in self._chosen()]

    def _texts(self) -> tuple[list[str], list[list[str]]]:
        """Each row's score and its probabilities as text."""
        return micro_texts(self.decoded.score).tolist(), micro_texts(self.decoded.micro).tolist()

    def json_lines(self, rows: list[Row]) -> list[str]:
        """JSON lines as :func:`json_line` writes ``rows`` with label, score and probabilities appended."""
        tail = self.layout.json_tail
        scores, probabilities = self._texts()
        lines = []
        for row, label, score, probs in zip(rows, self._label_json(), scores, probabilities, strict=True):
            head = json.dumps(jsonable(row), ensure_ascii=False)
            lines.append((head[:-1] + ", " if len(head) > 2 else "{") + tail % (label, score, *probs))
        return lines

    def csv_cells(self, delimiter: str, raw: bool) -> list[str]:
        """Each row's prediction cells: label, score and probabilities, delimited, ending the line."""
        cells, tail = self.layout.csv(delimiter, raw)
        if self.decoded.chosen is None:
            labels = [cells[i] for i in self.decoded.top.tolist()]
        else:  # a JSON list, as the row path writes it
            labels = [quoted(label, delimiter) for label in self._label_json()]
        scores, probabilities = self._texts()
        return [
            tail % (label, score, *probs) for label, score, probs in zip(labels, scores, probabilities, strict=True)
        ]

    def arrow_columns(self) -> list[Any]:
        """Label, score and probabilities (a struct of every label's), as Arrow arrays of the types of
        :meth:`Layout.arrow`."""
        import numpy as np
        import pyarrow as pa

        from slm.bundle.predictions import MICRO

        label, score, probabilities = (field.type for field in self.layout.arrow()[0])
        labels = self.layout.labels
        if self.decoded.chosen is None:
            labelled = [labels[i] for i in self.decoded.top.tolist()]
        else:
            labelled = [[labels[i] for i in chosen] for chosen in self._chosen()]
        values = np.ascontiguousarray((self.decoded.micro / MICRO).T)
        struct = pa.StructArray.from_arrays([pa.array(column) for column in values], fields=list(probabilities))
        return [pa.array(labelled, label), pa.array(self.decoded.score / MICRO, score), struct]
