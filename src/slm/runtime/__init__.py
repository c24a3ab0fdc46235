"""Torch-free prediction with an exported bundle: onnxruntime + tokenizers + numpy only.

>>> from slm.runtime import load
>>> model = load("runs/banking77-int8")
>>> model.predict(["my card has not arrived"])[0]["label"]

Importing this module, loading an exported (ONNX or static) bundle and predicting never import
PyTorch or transformers; ``tests/test_runtime.py`` proves it in a fresh process. The ensemble's n-gram half
is computed with numpy (:mod:`slm.runtime.ngram`), without scikit-learn or SciPy
(``tests/test_ngram_runtime.py``), so an exported bundle predicts with the ensemble it shipped.
"""

from __future__ import annotations

from pathlib import Path

from slm.bundle.predictions import decode
from slm.errors import BundleError
from slm.runtime.bundle import Bundle

__all__ = ["Bundle", "decode", "load"]


def load(path: str | Path, *, threads: int | None = None, verify: bool = True, backend: str | None = None) -> Bundle:
    """Open an exported bundle for torch-free prediction; BundleError if it would need PyTorch unasked.

    ``backend``: "onnx" (ONNX Runtime), "openvino" (slm[openvino]) or "torch" (asked for explicitly);
    None picks as :class:`Bundle` does.
    """
    bundle = Bundle(path, verify=verify, threads=threads, backend=backend)
    needs_torch = bundle.backend not in ("onnx", "openvino") and backend is None
    if bundle.default_component in ("transformer", "ensemble") and needs_torch:
        raise BundleError(f"{path} has no ONNX model: run `slm export {path}` first")
    return bundle
