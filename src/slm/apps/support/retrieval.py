"""Hybrid (dense + BM25) retrieval of knowledge-base entries.

Each entry is indexed densely by up to two rows, its question and its answer (see :func:`index_texts`);
an entry's dense score is the best cosine over its rows, so a user question can match the FAQ's
question or its answer. Lexically each entry is one BM25 document, question and answer together
(see :func:`lexical_texts`). Per query the candidates are the union of the dense top and the BM25
top entries, re-ranked by ``weight * cosine + (1 - weight) * bm25 / (best bm25 among the candidates)``.
Without a lexical index the score is the cosine alone.

Saved layout (``Retriever.save``, the directory is replaced as a whole)::

    retrieval.json   weight, counts, index kinds, tokeniser stopwords
    entries.jsonl    the knowledge base (KnowledgeBase.to_jsonl)
    row_entry.npy    int64 entry number of every dense row
    vectors/         VectorIndex (index.json + vectors.npy or hnsw.faiss)
    lexical/         LexicalIndex (lexical.json + bm25s files), absent without a lexical index

Loading needs only the stdlib, numpy, bm25s (with a lexical index) and faiss (with an hnsw index).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm.apps.common.index import VectorIndex
from slm.apps.support.knowledge import Entry, KnowledgeBase
from slm.apps.support.lexical import LexicalIndex
from slm.apps.support.ranking import mrr
from slm.errors import BundleError, ConfigError
from slm.fileio import atomic_directory, read_json_object, write_json_atomic

WEIGHT_GRID = tuple(i / 10 for i in range(11))
DEFAULT_WEIGHT = 0.5
FORMAT_VERSION = 1
META_FILE = "retrieval.json"
ENTRIES_FILE = "entries.jsonl"
ROW_ENTRY_FILE = "row_entry.npy"
VECTORS_DIR = "vectors"
LEXICAL_DIR = "lexical"


@dataclass(frozen=True)
class Hit:
    """A retrieved entry: hybrid score, and the cosine and normalised BM25 it was made of."""

    entry: Entry
    score: float
    dense: float
    lexical: float


def index_texts(kb: KnowledgeBase) -> tuple[list[str], np.ndarray]:
    """The texts to embed (each entry's question, if any, then its answer) and each text's entry number."""
    texts: list[str] = []
    owners: list[int] = []
    for i, entry in enumerate(kb.entries):
        if entry.question and entry.question.strip() != entry.answer.strip():
            texts.append(entry.question)
            owners.append(i)
        texts.append(entry.answer)
        owners.append(i)
    return texts, np.asarray(owners, dtype=np.int64)


def lexical_texts(kb: KnowledgeBase) -> list[str]:
    """One BM25 document per entry: its question and answer together."""
    return [f"{entry.question}\n{entry.answer}" if entry.question else entry.answer for entry in kb.entries]


def _check_weight(weight: float) -> float:
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"the dense weight must lie in [0, 1], got {weight}")
    return weight


@dataclass
class _Candidates:
    """One query's candidate entries with their cosine and normalised BM25 scores."""

    entries: np.ndarray
    dense: np.ndarray
    lexical: np.ndarray


class Retriever:
    """Search a knowledge base with query embeddings (from the same encoder as the rows) and query texts.

    ``row_vectors`` embed :func:`index_texts` (or are an already built VectorIndex; otherwise one of
    ``kind`` is built), ``row_entry`` maps each row to its entry, and ``lexical`` (optional) must index
    :func:`lexical_texts` of the same knowledge base. ``weight`` is the dense share of the hybrid score.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        row_vectors: np.ndarray | VectorIndex,
        row_entry: np.ndarray,
        lexical: LexicalIndex | None,
        weight: float = DEFAULT_WEIGHT,
        *,
        kind: str = "auto",
    ) -> None:
        self.kb = kb
        if not isinstance(row_vectors, VectorIndex):
            row_vectors = VectorIndex.build(row_vectors, kind=kind)
        self.vectors = row_vectors
        self.row_entry = self._check_rows(np.asarray(row_entry))
        if lexical is not None and len(lexical) != len(kb):
            raise ConfigError(f"the lexical index holds {len(lexical)} texts but the knowledge base {len(kb)} entries")
        self.lexical = lexical
        self.weight = weight
        order = np.argsort(self.row_entry, kind="stable")
        self._rows_by_entry = order
        self._entry_start = np.searchsorted(self.row_entry[order], np.arange(len(kb) + 1))

    def _check_rows(self, row_entry: np.ndarray) -> np.ndarray:
        if row_entry.ndim != 1 or len(row_entry) != len(self.vectors):
            raise ConfigError(f"row_entry must give one entry number per vector row ({len(self.vectors)})")
        if len(row_entry) and not np.issubdtype(row_entry.dtype, np.integer):
            raise ConfigError(f"row_entry must hold integers, got {row_entry.dtype}")
        row_entry = row_entry.astype(np.int64)
        if len(row_entry) and (row_entry.min() < 0 or row_entry.max() >= len(self.kb)):
            raise ConfigError(f"row_entry values must lie in 0..{len(self.kb) - 1}")
        missing = np.setdiff1d(np.arange(len(self.kb)), row_entry)
        if missing.size:
            raise ConfigError(f"entry {self.kb.entries[missing[0]].id!r} has no vector row")
        return row_entry

    @property
    def weight(self) -> float:
        """The dense share of the hybrid score, in [0, 1]."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        self._weight = _check_weight(value)

    @classmethod
    def build(
        cls,
        kb: KnowledgeBase,
        row_vectors: np.ndarray,
        row_entry: np.ndarray,
        *,
        weight: float = DEFAULT_WEIGHT,
        lexical: bool = True,
        stopwords: str | None = "en",
        kind: str = "auto",
    ) -> Retriever:
        """A retriever with a BM25 index over :func:`lexical_texts` (none for an empty knowledge base)."""
        index = LexicalIndex.build(lexical_texts(kb), stopwords=stopwords) if lexical and len(kb) else None
        return cls(kb, row_vectors, row_entry, index, weight, kind=kind)

    # ------------------------------------------------------------ search

    def _candidates(self, query_vectors: np.ndarray, queries: Sequence[str], candidates: int) -> list[_Candidates]:
        if candidates < 1:
            raise ConfigError(f"candidates must be at least 1, got {candidates}")
        if len(queries) != len(query_vectors):
            raise ConfigError(f"{len(query_vectors)} query vectors but {len(queries)} query texts")
        n = len(self.kb)
        c = min(candidates, n)
        per_entry = int(np.diff(self._entry_start).max()) if n else 1
        # c * (most rows of one entry) rows always reach c distinct entries.
        scores, rows = self.vectors.search(query_vectors, max(1, c * per_entry))
        query_matrix = np.asarray(query_vectors, dtype=np.float32)
        out: list[_Candidates] = []
        for qi, query in enumerate(queries):
            if n == 0:
                out.append(_Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)))
                continue
            found = self.row_entry[rows[qi][rows[qi] >= 0]]
            _, first = np.unique(found, return_index=True)
            dense_top = found[np.sort(first)][:c]
            lexical_top = np.zeros(0, dtype=np.int64)
            bm25 = None
            if self.lexical is not None:
                bm25 = self.lexical.scores(query)
                positive = np.flatnonzero(bm25 > 0)
                if positive.size:
                    ranked = positive[np.lexsort((positive, -bm25[positive]))]
                    lexical_top = ranked[:c]
            entries = np.union1d(dense_top, lexical_top).astype(np.int64)
            out.append(_Candidates(entries, self._dense(query_matrix[qi], entries), self._lexical(bm25, entries)))
        return out

    def _dense(self, query: np.ndarray, entries: np.ndarray) -> np.ndarray:
        """Best cosine over each entry's rows."""
        if not entries.size:
            return np.zeros(0, dtype=np.float32)
        starts, ends = self._entry_start[entries], self._entry_start[entries + 1]
        rows = np.concatenate([self._rows_by_entry[s:e] for s, e in zip(starts, ends, strict=True)])
        sims = self.vectors.vectors(rows) @ query
        offsets = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        return np.maximum.reduceat(sims, offsets).astype(np.float32)

    @staticmethod
    def _lexical(bm25: np.ndarray | None, entries: np.ndarray) -> np.ndarray:
        if bm25 is None:
            return np.zeros(len(entries), dtype=np.float32)
        values = bm25[entries].astype(np.float32)
        top = float(values.max(initial=0.0))
        return values / top if top > 0 else np.zeros_like(values)

    def _rank(self, cand: _Candidates, weight: float, k: int) -> np.ndarray:
        """Positions into ``cand`` of the ``k`` best hybrid scores (ties: file order)."""
        score = self._hybrid(cand, weight)
        return np.lexsort((cand.entries, -score))[:k]

    def _hybrid(self, cand: _Candidates, weight: float) -> np.ndarray:
        if self.lexical is None:
            return cand.dense
        return weight * cand.dense + (1.0 - weight) * cand.lexical

    def search(
        self, query_vectors: np.ndarray, queries: Sequence[str], k: int = 5, candidates: int = 50
    ) -> list[list[Hit]]:
        """The ``k`` best entries for each query, best first (empty lists for an empty knowledge base)."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        results: list[list[Hit]] = []
        for cand in self._candidates(query_vectors, queries, max(candidates, k)):
            score = self._hybrid(cand, self.weight)
            entries = self.kb.entries
            results.append(
                [
                    Hit(entries[int(cand.entries[p])], float(score[p]), float(cand.dense[p]), float(cand.lexical[p]))
                    for p in self._rank(cand, self.weight, k)
                ]
            )
        return results

    # ------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write the retriever into ``directory`` (replaced as a whole, atomically)."""
        directory = Path(directory)
        with atomic_directory(directory) as staging:
            self.kb.to_jsonl(staging / ENTRIES_FILE)
            with open(staging / ROW_ENTRY_FILE, "wb") as handle:
                np.save(handle, self.row_entry, allow_pickle=False)
            self.vectors.save(staging / VECTORS_DIR)
            if self.lexical is not None:
                self.lexical.save(staging / LEXICAL_DIR)
            meta = {
                "format": FORMAT_VERSION,
                "weight": self.weight,
                "entries": len(self.kb),
                "rows": len(self.vectors),
                "dim": self.vectors.dim,
                "vector_kind": self.vectors.kind,
                "lexical": self.lexical is not None,
                "stopwords": self.lexical.stopwords if self.lexical is not None else None,
            }
            write_json_atomic(staging / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Retriever:
        """A retriever written by :meth:`save`; BundleError when anything is missing or inconsistent."""
        directory = Path(directory)
        meta = read_json_object(directory / META_FILE, "retrieval")
        if meta.get("format") != FORMAT_VERSION:
            raise BundleError(f"retrieval {directory} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        kb = KnowledgeBase.from_jsonl(directory / ENTRIES_FILE)
        try:
            row_entry = np.load(directory / ROW_ENTRY_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"retrieval file {directory / ROW_ENTRY_FILE} is missing or corrupt") from exc
        vectors = VectorIndex.load(directory / VECTORS_DIR)
        lexical = LexicalIndex.load(directory / LEXICAL_DIR) if meta.get("lexical") else None
        if (len(kb), len(vectors)) != (meta.get("entries"), meta.get("rows")):
            raise BundleError(f"retrieval {directory} does not match its {META_FILE} (entry or row counts differ)")
        try:
            return cls(kb, vectors, row_entry, lexical, meta.get("weight", DEFAULT_WEIGHT))
        except (ConfigError, TypeError, ValueError) as exc:
            raise BundleError(f"retrieval {directory} is inconsistent: {exc}") from exc


# ---------------------------------------------------------------- choosing the weight


def _gold_sets(retriever: Retriever, gold: Sequence[str | Collection[str]]) -> list[set[str]]:
    known = {entry.id for entry in retriever.kb.entries}
    sets = [{g} if isinstance(g, str) else set(g) for g in gold]
    unknown = next((g for s in sets for g in sorted(s) if g not in known), None)
    if unknown is not None:
        raise ConfigError(f"gold id {unknown!r} is not an entry of the knowledge base")
    return sets


def weight_curve(
    retriever: Retriever,
    query_vectors: np.ndarray,
    queries: Sequence[str],
    gold: Sequence[str | Collection[str]],
    *,
    grid: Sequence[float] = WEIGHT_GRID,
    k: int = 10,
    candidates: int = 50,
) -> dict[float, float]:
    """MRR@k of the validation queries for every dense weight in ``grid``."""
    sets = _gold_sets(retriever, gold)
    cands = retriever._candidates(query_vectors, queries, max(candidates, k))
    ids = [entry.id for entry in retriever.kb.entries]
    curve: dict[float, float] = {}
    for weight in grid:
        weight = _check_weight(weight)
        ranked = [[ids[int(c.entries[p])] for p in retriever._rank(c, weight, k)] for c in cands]
        curve[weight] = mrr(ranked, sets, k)
    return curve


def choose_weight(
    retriever: Retriever,
    query_vectors: np.ndarray,
    queries: Sequence[str],
    gold: Sequence[str | Collection[str]],
    *,
    grid: Sequence[float] = WEIGHT_GRID,
    k: int = 10,
    candidates: int = 50,
) -> float:
    """The weight of ``grid`` with the best validation MRR@k (ties: nearest 0.5); 1.0 without a lexical index.

    ``gold`` gives each query's correct entry id (or set of ids).
    """
    if retriever.lexical is None:
        return 1.0
    curve = weight_curve(retriever, query_vectors, queries, gold, grid=grid, k=k, candidates=candidates)
    best = max(curve.values())
    return min((w for w, v in curve.items() if v == best), key=lambda w: (abs(w - DEFAULT_WEIGHT), -w))
