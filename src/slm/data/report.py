"""What the loader found in a data file: sizes, columns, class balance and warnings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DataReport:
    """Summary of one loaded data file; ``to_dict()`` is JSON-serialisable."""

    path: str
    format: str
    text_col: str
    label_col: str | None = None
    label_cols: list[str] | None = None
    label_sep: str | None = None
    multi_label: bool = False
    n_rows_read: int = 0
    n_rows: int = 0
    n_blank_dropped: int = 0
    n_duplicates: int = 0
    n_conflicting_duplicates: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    imbalance_ratio: float | None = None
    text_chars: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Number of distinct labels."""
        return len(self.class_counts)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python copy (str/int/float/list/dict/None only)."""
        out = asdict(self)
        out["n_classes"] = self.n_classes
        return out
