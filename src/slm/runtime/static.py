"""The static turbo tier at prediction time: tokenizers + numpy + safetensors, nothing else.

A static model maps every token id to one fixed vector (distilled from the fine-tuned encoder by
model2vec). A text's embedding is the mean of its tokens' vectors, L2-normalised when the model's
config says so, and a linear head turns it into class probabilities. This module reproduces
``model2vec.StaticModel.encode`` exactly (same tokenisation, unknown tokens dropped, same
truncation, same normalisation) without importing model2vec, torch, transformers or scikit-learn.
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from slm.errors import BundleError
from slm.fileio import read_json_object

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest, StaticSpec
from slm.models.ensemble import probabilities

EMBEDDINGS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
# model2vec's default when a config gives no max_length.
DEFAULT_MAX_LENGTH = 512
# Texts pooled together after sorting by length (see StaticEmbedder._pool).
POOL_CHUNK = 64


class StaticEmbedder:
    """Static token vectors → mean pooling → (L2 normalisation): a model2vec model directory.

    ``directory`` holds ``model.safetensors`` (an ``embeddings`` tensor, one row per token id),
    ``tokenizer.json`` and ``config.json`` (``normalize``, ``max_length``, ``pooling``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        embeddings: str | Path = EMBEDDINGS_FILE,
        tokenizer: str | Path = TOKENIZER_FILE,
        config: str | Path = CONFIG_FILE,
    ) -> None:
        """File names are relative to ``directory``; an absolute path (a checked bundle path) is used as is."""
        directory = Path(directory)
        settings = _read_config(directory / config)
        self.tokenizer = _read_tokenizer(directory / tokenizer)
        arrays = _read_arrays(directory / embeddings, ("embeddings",))
        if "mapping" in arrays or "weights" in arrays:
            raise BundleError(f"{directory}: vocabulary-quantized static models are not supported")
        table = np.asarray(arrays["embeddings"])
        vocab = self.tokenizer.get_vocab()
        if table.ndim != 2 or table.shape[0] != len(vocab):
            raise BundleError(
                f"static model in {directory}: embeddings {table.shape} do not match a {len(vocab)}-token vocabulary"
            )
        # One extra all-zero row at the end: the padding id used by _pool.
        self._table = np.zeros((table.shape[0] + 1, table.shape[1]), dtype=np.float32)
        self._table[:-1] = table
        self.normalize = bool(settings.get("normalize", False))
        max_length = settings.get("max_length", DEFAULT_MAX_LENGTH)
        self.max_length = None if max_length is None else int(max_length)
        # As model2vec: texts are cut to max_length * median token length characters before
        # tokenising, which bounds the cost of a pathological multi-megabyte input.
        self.median_token_length = int(np.median([len(token) for token in vocab])) if vocab else 1
        self.unk_id = _unk_token_id(self.tokenizer)
        self.tokenizer.no_padding()
        if self.max_length is None:
            self.tokenizer.no_truncation()
        else:
            self.tokenizer.enable_truncation(self.max_length)

    @property
    def dim(self) -> int:
        return int(self._table.shape[1])

    @property
    def embeddings(self) -> np.ndarray:
        """The token vectors ``(vocabulary, dim)`` as float32."""
        return self._table[:-1]

    # -- prediction ------------------------------------------------------------------------
    def embed(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        """Sentence embeddings ``(n, dim)`` float32, as ``model2vec.StaticModel.encode`` computes them."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        step = max(1, int(batch_size))
        for start in range(0, len(texts), step):
            out[start : start + step] = self._embed_batch(texts[start : start + step])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        if self.max_length is not None:
            limit = self.max_length * self.median_token_length
            texts = [t[:limit] for t in texts]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        if self.unk_id is not None:
            keep = flat != self.unk_id
            if not keep.all():
                rows = np.repeat(np.arange(n), lengths)
                flat = flat[keep]
                lengths = np.bincount(rows[keep], minlength=n)
        out = self._pool(flat, lengths)
        if self.normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return out

    def _pool(self, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Mean of each text's token vectors; ``flat`` holds all texts' ids back to back.

        Texts are sorted by length and taken POOL_CHUNK at a time, padded with the zero row to the
        chunk's longest text, so one gather + sum does a whole chunk with little padding (about
        10x faster than ``np.add.reduceat``, which loops row by row). Empty texts give zeros.
        """
        n = lengths.shape[0]
        out = np.empty((n, self.dim), dtype=np.float32)
        starts = np.cumsum(lengths) - lengths
        pad = self._table.shape[0] - 1
        last = max(flat.shape[0] - 1, 0)
        flat = flat if flat.size else np.zeros(1, dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        for begin in range(0, n, POOL_CHUNK):
            rows = order[begin : begin + POOL_CHUNK]
            size = lengths[rows]
            width = int(size.max())
            if width == 0:
                out[rows] = 0.0
                continue
            offsets = np.arange(width)
            positions = np.minimum(starts[rows, None] + offsets, last)
            ids = np.where(offsets < size[:, None], flat[positions], pad)
            out[rows] = self._table[ids].sum(axis=1) / np.maximum(size, 1)[:, None]
        return out


class StaticComponent:
    """A bundle's ``static`` component: :class:`StaticEmbedder` + a linear head.

    ``spec`` is the manifest entry ``components["static"]``: ``dir`` (relative to ``root``) holds
    the model2vec files and ``head.safetensors`` (``weight`` ``(k, dim)``, ``bias`` ``(k,)``);
    optional keys ``embeddings``, ``tokenizer``, ``config`` and ``head`` rename those files. With
    ``manifest`` (a loaded bundle's) every file is opened through ``bundle_path`` (inside the bundle,
    listed in the manifest); without it paths are joined to ``root`` as given.
    """

    def __init__(
        self,
        root: Path,
        spec: StaticSpec,
        labels: list[str],
        multi_label: bool,
        *,
        manifest: Manifest | None = None,
    ) -> None:
        from slm.bundle.manifest import bundle_path

        self.labels = list(labels)
        self.multi_label = bool(multi_label)
        folder = spec.dir
        directory = Path(root) / folder if manifest is None else bundle_path(root, manifest, folder)

        def locate(name: str | None, default: str) -> Path:
            name = name or default
            return directory / name if manifest is None else bundle_path(root, manifest, f"{folder}/{name}")

        self.embedder = StaticEmbedder(
            directory,
            embeddings=locate(spec.embeddings, EMBEDDINGS_FILE),
            tokenizer=locate(spec.tokenizer, TOKENIZER_FILE),
            config=locate(spec.config, CONFIG_FILE),
        )
        head = _read_arrays(locate(spec.head, HEAD_FILE), ("weight", "bias"))
        self.weight = np.ascontiguousarray(head["weight"], dtype=np.float32)
        self.bias = np.ascontiguousarray(head["bias"], dtype=np.float32)
        k, dim = len(self.labels), self.embedder.dim
        if self.weight.shape != (k, dim) or self.bias.shape != (k,):
            raise BundleError(
                f"static head in {directory}: weight {self.weight.shape} / bias {self.bias.shape} "
                f"do not fit {k} labels and {dim}-dimensional embeddings"
            )

    def embed(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        """Sentence embeddings ``(n, dim)``, as ``model2vec.StaticModel.encode`` computes them."""
        return self.embedder.embed(texts, batch_size)

    def logits(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        """Head logits ``(n, k)`` float32."""
        return self.embedder.embed(texts, batch_size) @ self.weight.T + self.bias

    def predict_proba(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        """Probabilities ``(n, k)``: softmax (single-label) or per-label sigmoid (multi-label)."""
        if not len(texts):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return probabilities(self.logits(texts, batch_size), self.multi_label)


# ---------------------------------------------------------------------- file helpers
def _read_config(path: Path) -> dict[str, Any]:
    config = read_json_object(path, "static model")
    pooling = str(config.get("pooling", "mean"))
    if pooling != "mean":
        raise BundleError(f"{path}: pooling '{pooling}' is not supported (only 'mean')")
    return config


def _read_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise BundleError(f"static model file {path} is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise BundleError(f"static tokenizer {path} cannot be loaded: {str(exc).splitlines()[0]:.100}") from None


def _read_arrays(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BundleError(f"static model file {path} is missing")
    try:
        arrays = load_file(str(path))
    except Exception:  # safetensors raises its own error types on truncated/corrupt headers
        raise BundleError(f"static model file {path} is corrupt or truncated") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise BundleError(f"{path} lacks arrays: {', '.join(missing)}")
    return arrays


def _unk_token_id(tokenizer: Tokenizer) -> int | None:
    """The id model2vec drops from every text (the unknown token), or None."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):
        token = model.unk_token
        return None if token is None else tokenizer.token_to_id(token)
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram
    return None if unk is None else int(unk)
