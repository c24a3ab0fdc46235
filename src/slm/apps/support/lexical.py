"""BM25 keyword index (``bm25s``) with a language-agnostic tokeniser.

Tokens are the lower-cased ``\\w+`` runs of the NFKC-normalised text, except that CJK ideographs and
kana become one token per character (Chinese and Japanese are written without spaces). English
stopwords are removed when ``stopwords="en"``; no stemming. The same tokeniser is stored with the
index, so a loaded index tokenises queries exactly as the texts were.

An index needs at least one text: ``LexicalIndex.build([])`` raises ConfigError (a caller with an
empty knowledge base builds no lexical index).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slm.errors import BundleError, ConfigError
from slm.fileio import atomic_directory, write_json_atomic

if TYPE_CHECKING:
    import bm25s

# bm25s logs every build at DEBUG; some onnxruntime tools configure the root logger, which would print it.
logging.getLogger("bm25s").setLevel(logging.WARNING)
STOPWORD_SETS = ("en",)
META_FILE = "lexical.json"
FORMAT_VERSION = 1
# bm25s' own file names (BM25.save defaults); nothing else is written by it without a corpus.
BM25_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.index.json",
              "params.index.json")  # fmt: skip

_WORD = re.compile(r"\w+")
# CJK Unified Ideographs (+ extension A, compatibility), Hiragana and Katakana, and the supplementary
# ideograph planes: each character is a token of its own.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_CJK_OR_RUN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
    r"|[^\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+"
)


def _stopword_set(stopwords: str | None) -> frozenset[str]:
    if stopwords is None:
        return frozenset()
    if stopwords != "en":
        raise ConfigError(f"unknown stopword list {stopwords!r}; choose one of {', '.join(STOPWORD_SETS)} or None")
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str, stopwords: str | None = "en") -> list[str]:
    """The BM25 tokens of ``text`` (deterministic; see the module docstring)."""
    return _tokenize(text, _stopword_set(stopwords))


def _tokenize(text: str, stop: frozenset[str]) -> list[str]:
    tokens: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        if _CJK.search(word):
            tokens.extend(part for part in _CJK_OR_RUN.findall(word) if part not in stop)
        elif word not in stop:
            tokens.append(word)
    return tokens


class LexicalIndex:
    """BM25 (Lucene variant, k1=1.5, b=0.75) scores of a query against every indexed text."""

    def __init__(self, bm25: bm25s.BM25, size: int, stopwords: str | None) -> None:
        self._bm25 = bm25
        self.size = size
        self.stopwords = stopwords
        self._stop = _stopword_set(stopwords)

    def __len__(self) -> int:
        return self.size

    @classmethod
    def build(cls, texts: list[str], *, stopwords: str | None = "en") -> LexicalIndex:
        """Index ``texts``; ConfigError when there are none."""
        import bm25s

        if not texts:
            raise ConfigError("a lexical index needs at least one text (build none for an empty knowledge base)")
        stop = _stopword_set(stopwords)
        # bm25s' empty token "" comes first, so a corpus without a single token still indexes.
        vocab: dict[str, int] = {"": 0}
        ids = [[vocab.setdefault(token, len(vocab)) for token in _tokenize(text, stop)] for text in texts]
        bm25 = bm25s.BM25()
        with np.errstate(divide="ignore", invalid="ignore"):  # average length 0 when no text has a token
            bm25.index((ids, vocab), show_progress=False)
        return cls(bm25, len(texts), stopwords)

    def tokens(self, text: str) -> list[str]:
        """``text`` tokenised as this index tokenises."""
        return _tokenize(text, self._stop)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every text, shape (size,), float32; zeros when no token is known."""
        vocab = self._bm25.vocab_dict
        known = [vocab[t] for t in self.tokens(query) if t in vocab and t != ""]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(known), dtype=np.float32)

    def save(self, directory: str | Path) -> Path:
        """Write the index into ``directory`` (replaced as a whole, atomically)."""
        directory = Path(directory)
        with atomic_directory(directory) as staging:
            self._bm25.save(staging, show_progress=False)
            meta = {"format": FORMAT_VERSION, "size": self.size, "stopwords": self.stopwords, "tokenizer": "words+cjk"}
            write_json_atomic(staging / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> LexicalIndex:
        """An index written by :meth:`save`; BundleError when files are missing or inconsistent."""
        import bm25s

        directory = Path(directory)
        meta_path = directory / META_FILE
        missing = [name for name in (META_FILE, *BM25_FILES) if not (directory / name).is_file()]
        if missing:
            raise BundleError(f"lexical index {directory} is incomplete: missing {', '.join(missing)}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            size, stopwords = int(meta["size"]), meta["stopwords"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"lexical index file {meta_path} is unreadable or corrupt") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise BundleError(f"lexical index {directory} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        try:
            bm25 = bm25s.BM25.load(directory, show_progress=False)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"lexical index {directory} cannot be loaded ({exc})") from exc
        if int(bm25.scores["num_docs"]) != size:
            raise BundleError(f"lexical index {directory} holds {bm25.scores['num_docs']} texts, expected {size}")
        try:
            return cls(bm25, size, stopwords)
        except ConfigError as exc:
            raise BundleError(f"lexical index {directory}: {exc}") from exc
