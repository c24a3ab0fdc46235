"""Where a bench script's result goes: ``PATH.json`` (the record) and ``PATH.md`` (the table), both written."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, result: dict, markdown: str) -> None:
    """Write ``result`` as JSON and ``markdown`` beside it (``out`` without suffix), and print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
