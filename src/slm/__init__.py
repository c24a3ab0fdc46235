"""slm: small, fast, domain-specific language models on an ordinary CPU.

``slm.train``, ``slm.tune``, ``slm.evaluate`` and ``slm.load`` are imported on first use, so ``import slm``
stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Bundle", "__version__", "evaluate", "load", "train", "tune"]


def __getattr__(name: str) -> Any:
    if name in {"train", "tune", "evaluate", "load", "Bundle"}:
        from slm import api

        return getattr(api, name)
    raise AttributeError(f"module 'slm' has no attribute {name!r}")
