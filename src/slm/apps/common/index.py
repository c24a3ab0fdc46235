"""Dense nearest-neighbour index over unit-length float32 embeddings (inner product = cosine).

``exact`` keeps the matrix and searches with one matrix product (best for up to ``EXACT_MAX_ROWS``
rows); ``hnsw`` is a faiss ``IndexHNSWFlat`` graph for larger collections. faiss is imported only
for ``hnsw``. Layout of a saved index: ``index.json`` (kind, dim, rows) beside ``vectors.npy``
(exact) or ``hnsw.faiss`` (hnsw).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from slm.errors import BundleError, ConfigError
from slm.fileio import atomic_directory, write_json_atomic

KINDS = ("auto", "exact", "hnsw")
EXACT_MAX_ROWS = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
UNIT_TOLERANCE = 1e-2
META_FILE = "index.json"
DATA_FILES = {"exact": "vectors.npy", "hnsw": "hnsw.faiss"}
FORMAT_VERSION = 1


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError("the hnsw vector index needs faiss: pip install faiss-cpu") from exc
    return faiss


def _matrix(vectors: Any, what: str, dim: int | None = None) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, d) matrix of finite unit-length rows."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array (rows, dim), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise ConfigError(f"{what} have dimension 0")
    if dim is not None and array.shape[1] != dim:
        raise ConfigError(f"{what} have dimension {array.shape[1]}, but the index has dimension {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ConfigError(f"{what} contain NaN or infinite values")
    if len(array):
        norms = np.linalg.norm(array, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_TOLERANCE)
        if bad.size:
            raise ConfigError(
                f"{what} must have unit length (L2-normalise them); row {int(bad[0])} has norm {norms[bad[0]]:.4g}"
            )
    return array


class VectorIndex:
    """Top-k inner-product search; ``search`` returns (scores, rows), best first."""

    def __init__(self, kind: str, dim: int, rows: int, data: Any) -> None:
        self.kind = kind
        self.dim = dim
        self.rows = rows
        self._data = data  # exact: the (rows, dim) matrix; hnsw: the faiss index

    def __len__(self) -> int:
        return self.rows

    @classmethod
    def build(cls, vectors: np.ndarray, *, kind: str = "auto") -> VectorIndex:
        """Index the rows of ``vectors`` (n, d); ``auto`` is exact up to EXACT_MAX_ROWS rows, else hnsw."""
        if kind not in KINDS:
            raise ConfigError(f"unknown vector index kind {kind!r}; choose one of {', '.join(KINDS)}")
        matrix = _matrix(vectors, "vectors")
        rows, dim = matrix.shape
        if kind == "auto":
            kind = "exact" if rows <= EXACT_MAX_ROWS else "hnsw"
        if kind == "exact":
            return cls("exact", dim, rows, matrix)
        faiss = _faiss()
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        graph.hnsw.efSearch = HNSW_EF_SEARCH
        if rows:
            graph.add(matrix)
        return cls("hnsw", dim, rows, graph)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (q, min(k, rows)): float32 inner products and int64 row numbers, best first.

        hnsw is approximate: in a badly connected graph a row number can be -1 (no result in that slot).
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        matrix = _matrix(queries, "query vectors", self.dim)
        top = min(k, self.rows)
        if top == 0:
            return np.zeros((len(matrix), 0), dtype=np.float32), np.zeros((len(matrix), 0), dtype=np.int64)
        if self.kind == "hnsw":
            scores, rows = self._data.search(matrix, top)
            return scores.astype(np.float32), rows.astype(np.int64)
        sims = matrix @ self._data.T
        if top < self.rows:
            part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        else:
            part = np.broadcast_to(np.arange(self.rows), sims.shape)
        part_scores = np.take_along_axis(sims, part, axis=1)
        # Best first; equal scores in row order (lexsort's last key is the primary one).
        order = np.lexsort((part, -part_scores), axis=-1)
        rows = np.take_along_axis(part, order, axis=1).astype(np.int64)
        return np.take_along_axis(part_scores, order, axis=1), rows

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of ``rows`` (m, dim), float32."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
            raise ConfigError(f"row numbers must lie in 0..{self.rows - 1}")
        if self.kind == "exact":
            return self._data[rows]
        if not rows.size:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._data.reconstruct_batch(rows)

    def save(self, directory: str | Path) -> Path:
        """Write the index into ``directory`` (replaced as a whole, atomically)."""
        directory = Path(directory)
        with atomic_directory(directory) as staging:
            data = staging / DATA_FILES[self.kind]
            if self.kind == "exact":
                with open(data, "wb") as handle:
                    np.save(handle, self._data, allow_pickle=False)
            else:
                _faiss().write_index(self._data, str(data))
            meta = {"format": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "rows": self.rows}
            if self.kind == "hnsw":
                meta.update(M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
            write_json_atomic(staging / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> VectorIndex:
        """An index written by :meth:`save`; BundleError when files are missing or inconsistent."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise BundleError(f"vector index {directory} is incomplete: missing {META_FILE}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            kind, dim, rows = meta["kind"], int(meta["dim"]), int(meta["rows"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"vector index file {meta_path} is unreadable or corrupt") from exc
        if meta.get("format") != FORMAT_VERSION or kind not in DATA_FILES:
            raise BundleError(f"vector index {directory} has an unknown format or kind ({kind!r})")
        data_path = directory / DATA_FILES[kind]
        if not data_path.is_file():
            raise BundleError(f"vector index {directory} is incomplete: missing {DATA_FILES[kind]}")
        if kind == "exact":
            try:
                data = np.load(data_path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise BundleError(f"vector index file {data_path} is unreadable or corrupt") from exc
            if data.dtype != np.float32 or data.shape != (rows, dim):
                raise BundleError(
                    f"vector index file {data_path} holds {data.dtype} {data.shape}, expected float32 ({rows}, {dim})"
                )
        else:
            faiss = _faiss()
            try:
                data = faiss.read_index(str(data_path))
            except RuntimeError as exc:
                raise BundleError(f"vector index file {data_path} is unreadable or corrupt") from exc
            if data.ntotal != rows or data.d != dim:
                raise BundleError(f"vector index file {data_path} holds {data.ntotal}x{data.d}, expected {rows}x{dim}")
            data.hnsw.efSearch = int(meta.get("ef_search", HNSW_EF_SEARCH))
        return cls(kind, dim, rows, data)
