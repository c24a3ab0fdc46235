"""A trained recommender bundle at run time: rank candidates for a user, add new items.

Ranking needs numpy, LightGBM and (for whole-catalogue retrieval) faiss: item embeddings are
precomputed, so no encoder runs per request. The int8 ONNX item encoder runs only when items are
added, one item at a time, exactly as the catalogue was embedded (dynamic-int8 activations are
scaled per batch, so batching would make an item's vector depend on its neighbours).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from slm.apps.common.index import VectorIndex
from slm.apps.recommend import layout
from slm.apps.recommend.catalogue import Catalogue
from slm.apps.recommend.features import ItemStats
from slm.apps.recommend.ranker import HybridRanker
from slm.apps.recommend.retrieval import DEFAULT_POPULAR, DEFAULT_RETRIEVE, shortlist
from slm.apps.recommend.scorer import Scorer
from slm.bundle.manifest import now_iso, read_manifest, write_manifest
from slm.bundle.schema import Manifest
from slm.errors import BundleError, ConfigError
from slm.fileio import atomic_directory, read_json_object, write_json_atomic

MAX_K = 1000
MAX_CANDIDATES = 10_000


def write_items(staging: Path, catalogue: Catalogue, embeddings: np.ndarray, stats: ItemStats, index_kind: str) -> None:
    """The catalogue, its embeddings, their ANN index and the item statistics, into a bundle being written."""
    write_json_atomic(staging / layout.ITEMS_FILE, catalogue.to_dict())
    with open(staging / layout.EMBEDDINGS_FILE, "wb") as handle:
        np.save(handle, embeddings.astype(np.float32), allow_pickle=False)
    VectorIndex.build(embeddings, kind=index_kind).save(staging / layout.INDEX_DIR)
    with open(staging / layout.STATS_FILE, "wb") as handle:
        np.savez(handle, allow_pickle=False, **stats.arrays())


class Recommender:
    """Load a bundle written by :func:`slm.apps.recommend.train_recommender` (verified against its manifest)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        manifest = read_manifest(self.path)
        if manifest.task != layout.TASK:
            raise BundleError(f"{self.path} is a {manifest.task} bundle, not a recommender")
        self.manifest = manifest
        settings = manifest.extra["recommender"]  # the recommender's own section
        self.settings = settings
        try:
            self.catalogue = Catalogue.from_dict(read_json_object(self.path / layout.ITEMS_FILE, "item catalogue"))
            embeddings = np.load(self.path / layout.EMBEDDINGS_FILE, allow_pickle=False)
            matrix = np.load(self.path / layout.USER_TOWER_FILE, allow_pickle=False)
            with np.load(self.path / layout.STATS_FILE, allow_pickle=False) as arrays:
                stats = ItemStats.from_arrays(arrays)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{self.path}: a recommender file is unreadable: {exc}") from None
        if embeddings.shape[0] != len(self.catalogue) or stats.items != len(self.catalogue):
            raise BundleError(
                f"{self.path}: {len(self.catalogue)} items but {embeddings.shape[0]} embeddings "
                f"and statistics of {stats.items}"
            )
        self.index = VectorIndex.load(self.path / layout.INDEX_DIR)
        if self.index.rows != len(self.catalogue):
            raise BundleError(
                f"{self.path}: the index holds {self.index.rows} items, the catalogue {len(self.catalogue)}"
            )
        ranker = HybridRanker.load(self.path / layout.RANKER_FILE, settings["feature_names"])
        self.scorer = Scorer(
            embeddings,
            matrix,
            int(settings["max_history"]),
            float(settings["half_life"]),
            stats,
            self.catalogue.numeric,
            ranker,
        )
        self.position = self.catalogue.position()
        users = read_json_object(self.path / layout.USERS_FILE, "user histories")
        self.users = {
            user: (self._rows(value["history"], "history"), set(self._rows(value["seen"], "seen").tolist()))
            for user, value in users.items()
        }
        self.reference_time = float(settings["reference_time"])
        self.everything = np.arange(len(self.catalogue), dtype=np.int64)

    def _rows(self, ids, what: str) -> np.ndarray:
        unknown = [str(i) for i in ids if str(i) not in self.position]
        if unknown:
            shown = ", ".join(unknown[:5])
            raise ConfigError(f"{len(unknown)} {what} item ids are not in the catalogue: {shown}")
        return np.array([self.position[str(i)] for i in ids], dtype=np.int64)

    @property
    def labels(self) -> list[str]:  # the served-model listing shows labels; a recommender has none
        return []

    def rank(
        self,
        *,
        user: str | None = None,
        liked: list[str] | None = None,
        candidates: list[str] | None = None,
        k: int = 10,
        at: float | None = None,
        exclude_seen: bool = True,
    ) -> dict:
        """The top ``k`` items for a known ``user`` or a list of ``liked`` item ids (oldest first).

        Ranks ``candidates`` (item ids) when given, else the whole catalogue (ANN shortlist + popular
        items, re-ranked). ``at`` is the time of the request (default: the training data's last event).
        """
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"k must lie in 1..{MAX_K}, got {k}")
        if user is None and liked is None:
            raise ConfigError("give a user id or a list of liked item ids")
        seen: set[int] = set()
        if liked is not None:
            history = self._rows(liked, "liked")
            seen = set(history.tolist())
        elif str(user) in self.users:
            history, seen = self.users[str(user)]
        else:
            raise ConfigError(f"unknown user '{user}': send the items they liked instead (liked)")
        when = self.reference_time if at is None else float(at)
        excluded = seen if exclude_seen else set()
        if candidates is not None:
            if not candidates:
                raise ConfigError("candidates is empty")
            if len(candidates) > MAX_CANDIDATES:
                raise ConfigError(f"at most {MAX_CANDIDATES} candidates per request, got {len(candidates)}")
            rows = np.array(list(dict.fromkeys(self._rows(candidates, "candidate").tolist())), dtype=np.int64)
            rows = rows[~np.isin(rows, list(excluded))] if excluded else rows
            source = "candidates"
        else:
            rows = shortlist(
                self.scorer,
                self.index,
                history,
                when,
                exclude=excluded,
                pool=self.everything,
                retrieve=max(DEFAULT_RETRIEVE, 3 * k),
                popular=DEFAULT_POPULAR,
            )
            source = "catalogue"
        if not len(rows):
            return {"items": [], "source": source, "candidates": 0, "history": len(history)}
        features = self.scorer.features(history, rows, when)
        ranker = self.scorer.ranker
        assert ranker is not None  # a loaded recommender always has one
        scores = ranker.predict(features)
        order = np.argsort(-scores, kind="stable")[:k]
        text_column = ranker.feature_names.index("text_score")
        items = [
            {
                "item": self.catalogue.ids[rows[j]],
                "score": round(float(scores[j]), 6),
                "text_score": round(float(features[j, text_column]), 6),
                "text": self.catalogue.texts[rows[j]],
            }
            for j in order
        ]
        return {"items": items, "source": source, "candidates": int(len(rows)), "history": int(len(history))}

    def encoder(self):
        """The bundle's ONNX item encoder (loaded on first use)."""
        if not hasattr(self, "_encoder"):
            from slm.apps.common.encoders import Encoder

            spec = self.manifest.components.item_encoder
            if spec is None:
                raise BundleError(f"{self.path} has no item encoder")
            self._encoder = Encoder(self.path, spec, threads=self.threads)
        return self._encoder

    def embed_items(self, texts: list[str]) -> np.ndarray:
        """Item-tower embeddings of ``texts``, one text per run (as the catalogue was embedded)."""
        return self.encoder().embed(texts, batch_size=1)

    def add_items(self, catalogue: Catalogue, output: str | Path | None = None) -> Manifest:
        """Write a bundle (``output``, default this one, replaced atomically) that also holds ``catalogue``'s items."""
        if not len(catalogue):
            raise ConfigError("no new items to add")
        merged = self.catalogue.extended(catalogue)
        vectors = self.embed_items(catalogue.texts)
        embeddings = np.vstack([self.scorer.embeddings, vectors])
        assert self.scorer.stats is not None  # a loaded recommender always has them
        stats = self.scorer.stats.extended(len(merged))
        target = Path(output) if output is not None else self.path
        with atomic_directory(target) as staging:
            shutil.copytree(self.path, staging, dirs_exist_ok=True)
            (staging / "manifest.json").unlink()
            shutil.rmtree(staging / layout.INDEX_DIR)
            write_items(staging, merged, embeddings, stats, self.index.kind)
            extra = dict(self.manifest.extra)
            extra["items"] = len(merged)
            extra["added_items"] = [*extra.get("added_items", []), {"items": len(catalogue), "at": now_iso()}]
            manifest = write_manifest(staging, replace(self.manifest, extra=extra))
        return manifest
