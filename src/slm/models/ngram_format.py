"""The n-gram model's stored files, read without scikit-learn or SciPy.

``ngram.json`` holds the settings and both vocabularies (terms in column order), ``ngram.safetensors``
the idf vectors and the logistic-regression weights: no pickle. The fitted model
(:class:`slm.models.ngram.NgramClassifier`, scikit-learn) and the torch-free runtime's numpy predictor
(:class:`slm.runtime.ngram.NgramPredictor`) both read them through :func:`read_ngram_files`, so they
check the same things and agree on what a damaged file is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load

from slm.errors import BundleError
from slm.fileio import read_json_object

JSON_NAME = "ngram.json"
ARRAYS_NAME = "ngram.safetensors"
FORMAT = "slm-ngram"
FORMAT_VERSION = 1
ARRAY_NAMES = ("word_idf", "char_idf", "coef", "intercept")

# Keeps single-character tokens and "$TICKER" cashtags (measured: helps finance tweets and BANKING77).
LEGACY_TOKEN_PATTERN = r"(?u)\$?\b\w+\b"
# The same, except that each CJK ideograph is a word of its own (Chinese has no spaces: \w+ would
# make a whole clause one "word"). Identical on text without ideographs.
CJK_CLASS = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
TOKEN_PATTERN = rf"(?u){CJK_CLASS}|\$?\b\w+\b"


@dataclass
class NgramFiles:
    """What a saved n-gram model holds, checked for consistency (shapes match the vocabularies)."""

    params: dict[str, Any]
    n_classes: int
    word_vocabulary: list[str]
    char_vocabulary: list[str]
    word_idf: np.ndarray
    char_idf: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray


def read_ngram_files(directory: Path) -> NgramFiles:
    """Read ``ngram.json`` and ``ngram.safetensors``; BundleError if missing, corrupt or inconsistent."""
    directory = Path(directory)
    meta = _read_json(directory / JSON_NAME)
    arrays = _read_arrays(directory / ARRAYS_NAME)
    try:
        params = {"token_pattern": LEGACY_TOKEN_PATTERN, **meta["params"]}  # older files predate the field
        files = NgramFiles(
            params=params,
            n_classes=int(meta["n_classes"]),
            word_vocabulary=list(meta["word_vocabulary"]),
            char_vocabulary=list(meta["char_vocabulary"]),
            **{name: arrays[name] for name in ARRAY_NAMES},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{directory / JSON_NAME} is incomplete or invalid ({exc!s:.80})") from None
    _check_shapes(files, directory)
    return files


def _read_json(path: Path) -> dict[str, Any]:
    meta = read_json_object(path, "n-gram model")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path} is not an slm n-gram model file")
    if meta.get("version") != FORMAT_VERSION:
        raise BundleError(f"{path} has unsupported n-gram format version {meta.get('version')!r}")
    return meta


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BundleError(f"n-gram model file {path} is missing")
    try:
        arrays = st_load(path.read_bytes())
    except Exception:  # safetensors raises its own error types on truncated/corrupt headers
        raise BundleError(f"n-gram model file {path} is corrupt or truncated") from None
    missing = set(ARRAY_NAMES) - arrays.keys()
    if missing:
        raise BundleError(f"{path} lacks arrays: {', '.join(sorted(missing))}")
    return arrays


def _check_shapes(files: NgramFiles, directory: Path) -> None:
    k = files.n_classes
    d_word, d_char = len(files.word_vocabulary), len(files.char_vocabulary)
    expected = {
        "word_idf": (files.word_idf.shape, (d_word,)),
        "char_idf": (files.char_idf.shape, (d_char,)),
        "coef": (files.coef.shape, (k, d_word + d_char)),
        "intercept": (files.intercept.shape, (k,)),
    }
    for name, (got, want) in expected.items():
        if tuple(got) != want:
            raise BundleError(f"n-gram model in {directory}: {name} has shape {tuple(got)}, expected {want}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings: multi-label n-gram probabilities, fitted or at run time."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out
