"""Active learning: pick the unlabelled texts whose labels would teach a bundle the most.

Every strategy runs the same three steps, so memory stays bounded whatever the size of the file:

1. A hashing pass (no model): each row's text is normalised (case folded, whitespace collapsed) and
   hashed to 8 bytes. Empty texts, exact repeats of an earlier row and texts already in the bundle's
   recorded training file are unusable; ``n`` above the usable count is refused before the model loads.
2. A model pass, a chunk of rows at a time (:mod:`slm.data.stream`): the bundle's transformer embeds the
   usable rows (mean pooled, what its head reads) and the shipped component's probabilities give each
   a priority (margin, entropy or a seeded random key). Only the ``pool`` best candidates are kept:
   their embeddings, texts and scores.
3. Selection among the candidates: near-duplicates (cosine >= ``near_duplicate``) of a labelled
   training text or of an already chosen text are skipped. ``auto`` clusters the candidates with
   k-means weighted by uncertainty and takes the text nearest each centre (Zhdanov 2019, "Diverse
   mini-batch active learning": pre-filter the ``beta * n`` most uncertain by margin, beta = 10);
   ``margin`` and ``entropy`` take the most uncertain; ``random`` (the baseline) takes a seeded
   uniform sample.

Memory bound: 9 bytes per input row (hash and a usable flag; ``np.unique`` briefly needs about three
times that), one chunk of at most 4,096 rows in flight, and ``pool`` candidates' embeddings (4 bytes
by hidden size: 6 MB for 4,000 MiniLM candidates) and texts. The labelled texts are embedded a chunk
at a time and only their highest similarity to each candidate is kept.

Why not small-text (1.4.1) or modAL: both need the whole pool's probabilities and embeddings in
memory at once, through their own classifier and dataset wrappers; modAL's batch uncertainty sampling
returns redundant near-identical texts (modAL issue #11) and its ranked batch mode computes distances
from every pool text to every labelled one. small-text's EmbeddingKMeans is the same Zhdanov
sampler written here in ~30 lines over scikit-learn's KMeans, which keeps the streaming bound, the
duplicate rules and the per-text reason the annotator sees. Measured in bench/active_learning.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from slm.bundle.textlimit import cut_texts
from slm.data.stream import Table
from slm.errors import BundleError, ConfigError, DataError
from slm.models.ensemble import ensemble_probabilities, probabilities
from slm.runtime.bundle import Bundle

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "margin", "entropy", "random")
# Candidates kept per text asked for: Zhdanov (2019) pre-filters the 10 * n most uncertain before k-means.
AUTO_BETA = 10
# margin/entropy/random keep a few spare candidates per pick for the near-duplicates they skip.
SPARE_FACTOR = 3
SPARE_MIN = 100
NEAR_DUPLICATE = 0.95
LABELLED_CHUNK = 4096


@dataclass(frozen=True)
class SuggestConfig:
    """How to pick: ``n`` texts by ``strategy``; ``seed`` for k-means and the random baseline."""

    n: int
    strategy: str = "auto"
    seed: int = 0
    near_duplicate: float = NEAR_DUPLICATE
    batch_size: int = 64
    beta: int = AUTO_BETA

    def check(self) -> None:
        if self.n < 1:
            raise ConfigError(f"-n must be at least 1 (got {self.n})")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy '{self.strategy}': choose from {', '.join(STRATEGIES)}")
        if not 0.0 < self.near_duplicate <= 1.0:
            raise ConfigError(f"the near-duplicate threshold must be in (0, 1] (got {self.near_duplicate})")
        if self.batch_size < 1:
            raise ConfigError("batch size must be at least 1")

    @property
    def pool(self) -> int:
        """Candidates kept through the model pass."""
        if self.strategy == "auto":
            return self.beta * self.n
        return SPARE_FACTOR * self.n + SPARE_MIN


@dataclass
class Suggestion:
    """One picked text: its row in the input (1 = first data row), the model's answer and why it was picked."""

    row: int
    text: str
    predicted_label: str
    score: float
    margin: float
    entropy: float
    second_label: str
    cluster: int | None = None
    cluster_size: int | None = None

    @property
    def reason(self) -> str:
        why = f"margin {self.margin:.3f} between {self.predicted_label} and {self.second_label}"
        if self.cluster is None:
            return why
        return f"{why}; nearest the centre of cluster {self.cluster} ({self.cluster_size} candidates)"


@dataclass
class Selection:
    """What :func:`select` picked, and what it counted on the way (for the report and the log)."""

    suggestions: list[Suggestion]
    rows: int
    usable: int
    empty: int
    repeated: int
    in_training: int
    near_duplicates: int
    labelled_compared: int
    strategy: str
    component: str


@dataclass
class _Candidates:
    """The best ``limit`` rows so far by priority (higher first), with what the selection needs of them."""

    limit: int
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    priority: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    embeddings: np.ndarray | None = None
    proba_top: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    margin: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    entropy: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    texts: list[str] = field(default_factory=list)

    def add(self, rows: np.ndarray, priority: np.ndarray, embeddings: np.ndarray, proba: np.ndarray,
            texts: list[str]) -> None:  # fmt: skip
        top = np.argsort(-proba, axis=1)[:, :2]
        ordered = np.take_along_axis(proba, top, axis=1)
        clipped = np.clip(proba, 1e-12, 1.0)
        entropy = -(proba * np.log(clipped)).sum(axis=1)
        emb = embeddings if self.embeddings is None else np.concatenate([self.embeddings, embeddings])
        merged = {
            "rows": np.concatenate([self.rows, rows]),
            "priority": np.concatenate([self.priority, priority]),
            "proba_top": np.concatenate([self.proba_top, top]),
            "margin": np.concatenate([self.margin, (ordered[:, 0] - ordered[:, 1]).astype(np.float32)]),
            "entropy": np.concatenate([self.entropy, entropy.astype(np.float32)]),
            "score": np.concatenate([self.score, ordered[:, 0].astype(np.float32)]),
        }
        all_texts = self.texts + texts
        keep = np.arange(len(all_texts))
        if len(keep) > self.limit:  # ties broken by row order, so a run is reproducible
            keep = np.lexsort((merged["rows"], -merged["priority"]))[: self.limit]
            keep.sort()
        for name, values in merged.items():
            setattr(self, name, values[keep])
        self.embeddings = emb[keep]
        self.texts = [all_texts[i] for i in keep]


def normalise(text: str) -> str:
    """The form two texts are compared in for exact duplicates: case folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def text_hash(text: str) -> int:
    """8 bytes of BLAKE2b of the normalised text, as a signed integer (a numpy int64)."""
    digest = hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def check_bundle(bundle: Bundle) -> None:
    """Suggest needs a single-label bundle with a PyTorch transformer (its embeddings)."""
    if bundle.multi_label:
        raise BundleError(f"{bundle.path} is a multi-label bundle; slm suggest ranks single-label bundles only")
    components = bundle.manifest.components
    if components.transformer is None:
        have = ", ".join(bundle.components) or "none"
        hint = " (an ONNX export: run slm suggest on the PyTorch bundle it was exported from)" if (
            components.onnx is not None) else ""  # fmt: skip
        raise BundleError(
            f"{bundle.path} has no PyTorch transformer component (it has: {have}){hint}; slm suggest needs the "
            "transformer's embeddings"
        )


def _usable_rows(table: Table, labelled: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """A flag per row: non-empty, the first of its normalised text, and not a labelled training text."""
    hashes: list[np.ndarray] = []
    empty: list[np.ndarray] = []
    for chunk in table.chunks():
        hashes.append(np.fromiter((text_hash(t) for t in chunk.texts), dtype=np.int64, count=len(chunk.texts)))
        empty.append(np.fromiter((not t.strip() for t in chunk.texts), dtype=bool, count=len(chunk.texts)))
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int64)
    is_empty = np.concatenate(empty) if empty else np.zeros(0, dtype=bool)
    del hashes, empty
    first = np.zeros(len(all_hashes), dtype=bool)
    _, first_index = np.unique(all_hashes, return_index=True)
    first[first_index] = True
    known = np.isin(all_hashes, labelled) if len(labelled) else np.zeros(len(all_hashes), dtype=bool)
    usable = first & ~is_empty & ~known
    counts = {
        "empty": int(is_empty.sum()),
        "repeated": int((~first & ~is_empty).sum()),
        "in_training": int((first & ~is_empty & known).sum()),
    }
    return usable, counts


class _Scorer:
    """Embeddings (mean pooled, what the head reads) and the shipped component's probabilities of texts."""

    def __init__(self, bundle: Bundle, batch_size: int) -> None:
        from slm.training.component import TransformerComponent  # PyTorch: only once the input is known good

        spec = bundle.manifest.components.transformer
        assert spec is not None  # check_bundle
        self.bundle = bundle
        self.transformer = TransformerComponent(bundle.path, spec, len(bundle.labels), manifest=bundle.manifest)
        head = self.transformer.model.head
        self.weight = head.weight.detach().numpy().T.astype(np.float32)
        self.bias = head.bias.detach().numpy().astype(np.float32)
        self.component = bundle.default_component
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        from slm.training.batching import encode_texts
        from slm.training.trainer import predict_embeddings

        texts = cut_texts(texts, self.bundle.text_limit)
        encoded = encode_texts(self.transformer.tokenizer, texts, self.transformer.max_length)
        return predict_embeddings(self.transformer.model, encoded, self.transformer.pad_id, self.batch_size)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings, probabilities)``: one transformer pass gives both (the head is linear on the
        embeddings; dropout is off at inference)."""
        embeddings = self.embed(texts)
        transformer = probabilities(embeddings @ self.weight + self.bias, False)
        if self.component == "transformer":
            return embeddings, transformer
        if self.component == "ensemble":
            ensemble = self.bundle.manifest.ensemble
            assert ensemble is not None  # the bundle lists "ensemble" only with its settings
            weight = float(ensemble.transformer_weight)
            ngram = None if weight >= 1.0 else self.bundle.predict_proba(texts, component="ngram")
            return embeddings, ensemble_probabilities(transformer, ngram, weight, ensemble.log_prior_shift)
        return embeddings, self.bundle.predict_proba(texts, component=self.component)


def _priority(strategy: str, proba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Higher first: small margin (auto, margin), high entropy, or a uniform key (random)."""
    if strategy == "random":
        return rng.random(len(proba))
    if strategy == "entropy":
        return -(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(axis=1)
    top = np.sort(proba, axis=1)[:, -2:]
    return -(top[:, 1] - top[:, 0])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def labelled_similarity(scorer: _Scorer, candidates: np.ndarray, texts: list[str]) -> np.ndarray:
    """Each candidate's highest cosine similarity to a labelled text (-1 without any), a chunk at a time."""
    best = np.full(len(candidates), -1.0, dtype=np.float32)
    for start in range(0, len(texts), LABELLED_CHUNK):
        embedded = _unit(scorer.embed(texts[start : start + LABELLED_CHUNK]))
        best = np.maximum(best, (candidates @ embedded.T).max(axis=1))
    return best


def select(
    bundle: Bundle,
    table: Table,
    config: SuggestConfig,
    *,
    labelled: list[str] | None = None,
    on_rows: Callable[[int, int], None] | None = None,
) -> Selection:
    """Pick ``config.n`` rows of ``table`` for annotation (see the module docstring for how)."""
    config.check()
    check_bundle(bundle)
    labelled = labelled or []
    labelled_hashes = np.unique(np.fromiter((text_hash(t) for t in labelled), dtype=np.int64, count=len(labelled)))
    usable, counts = _usable_rows(table, labelled_hashes)
    n_usable = int(usable.sum())
    if config.n > n_usable:
        raise DataError(_too_few(table, config.n, n_usable, counts))
    scorer = _Scorer(bundle, config.batch_size)
    candidates = _Candidates(limit=config.pool)
    rng = np.random.default_rng(config.seed)
    if on_rows is not None:
        on_rows(0, table.rows)
    for size, rows, texts in _usable_chunks(table, usable):
        if texts:
            embeddings, proba = scorer(texts)
            candidates.add(rows, _priority(config.strategy, proba, rng), _unit(embeddings), proba, texts)
        if on_rows is not None:
            on_rows(size, table.rows)
    assert candidates.embeddings is not None  # n_usable >= n >= 1
    near_labelled = labelled_similarity(scorer, candidates.embeddings, labelled) >= config.near_duplicate
    picked, clusters = _pick(candidates, near_labelled, config)
    if len(picked) < config.n:
        raise DataError(
            f"only {len(picked)} of the {n_usable:,} usable texts are not near-duplicates (cosine >= "
            f"{config.near_duplicate:g}) of a training text or of one another; ask for -n {len(picked)} or fewer"
        )
    suggestions = [_suggestion(candidates, i, bundle.labels, clusters.get(i)) for i in picked]
    skipped = int(near_labelled.sum())
    return Selection(suggestions, rows=table.rows, usable=n_usable, near_duplicates=skipped,
                     labelled_compared=len(labelled), strategy=config.strategy, component=scorer.component,
                     **counts)  # fmt: skip


def _too_few(table: Table, n: int, usable: int, counts: dict[str, int]) -> str:
    parts = [f"{counts['empty']:,} empty", f"{counts['repeated']:,} repeated",
             f"{counts['in_training']:,} already in the training data"]  # fmt: skip
    return (
        f"{table.name}: -n {n:,} asks for more texts than the {usable:,} usable ones (of {table.rows:,} rows: "
        f"{', '.join(parts)}); ask for -n {usable:,} or fewer"
    )


def _usable_chunks(table: Table, usable: np.ndarray) -> Iterator[tuple[int, np.ndarray, list[str]]]:
    """A chunk of the file at a time: its size, and the row numbers (0-based) and texts of its usable rows."""
    start = 0
    for chunk in table.chunks():
        size = len(chunk.texts)
        keep = np.flatnonzero(usable[start : start + size])
        yield size, keep + start, [chunk.texts[i] for i in keep]
        start += size


def _pick(candidates: _Candidates, blocked: np.ndarray, config: SuggestConfig) -> tuple[list[int], dict[int, tuple]]:
    """Indices into ``candidates``, best first; for ``auto``, each pick's cluster (number, size)."""
    assert candidates.embeddings is not None
    order = np.lexsort((candidates.rows, -candidates.priority))
    order = order[~blocked[order]]
    chosen: list[int] = []
    clusters: dict[int, tuple] = {}
    if config.strategy == "auto" and len(order):
        for index, cluster in _cluster_picks(candidates, order, config):
            if _novel(candidates.embeddings, chosen, index, config.near_duplicate):
                chosen.append(index)
                clusters[index] = cluster
    for index in order:  # margin/entropy/random; for auto, fills what clusters of near-duplicates left
        if len(chosen) >= config.n:
            break
        if index not in clusters and _novel(candidates.embeddings, chosen, int(index), config.near_duplicate):
            chosen.append(int(index))
    return chosen[: config.n], clusters


def _novel(embeddings: np.ndarray, chosen: list[int], index: int, threshold: float) -> bool:
    return not chosen or float((embeddings[chosen] @ embeddings[index]).max()) < threshold


def _cluster_picks(candidates: _Candidates, order: np.ndarray, config: SuggestConfig) -> Iterator[tuple[int, tuple]]:
    """k-means (k = n) over the candidates weighted by uncertainty (1 - margin); for each cluster, heaviest
    first, its members from the nearest to the centre out (the caller takes the first that is no near-duplicate)."""
    from sklearn.cluster import KMeans

    assert candidates.embeddings is not None
    points = candidates.embeddings[order]
    weights = np.clip(1.0 - candidates.margin[order], 1e-3, None)
    k = min(config.n, len(order))
    kmeans = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=config.seed)
    assignment = kmeans.fit_predict(points, sample_weight=weights)
    distance = np.linalg.norm(points - kmeans.cluster_centers_[assignment], axis=1)
    mass = np.bincount(assignment, weights=weights, minlength=k)
    sizes = np.bincount(assignment, minlength=k)
    for number, cluster in enumerate(np.argsort(-mass, kind="stable"), start=1):
        members = np.flatnonzero(assignment == cluster)
        nearest = members[np.argmin(distance[members])]  # one per cluster; a near-duplicate is replaced in the fill-up
        yield int(order[nearest]), (number, int(sizes[cluster]))


def _suggestion(candidates: _Candidates, i: int, labels: list[str], cluster: tuple | None) -> Suggestion:
    first, second = (int(x) for x in candidates.proba_top[i])
    return Suggestion(
        row=int(candidates.rows[i]) + 1,
        text=candidates.texts[i],
        predicted_label=labels[first],
        score=round(float(candidates.score[i]), 6),
        margin=round(float(candidates.margin[i]), 6),
        entropy=round(float(candidates.entropy[i]), 6),
        second_label=labels[second] if second != first else "",
        cluster=None if cluster is None else cluster[0],
        cluster_size=None if cluster is None else cluster[1],
    )


def labelled_texts(bundle: Bundle) -> list[str]:
    """The texts of the training file the bundle's manifest records (empty when it is gone)."""
    from slm.pipeline import recorded_source

    source = recorded_source(bundle.manifest)
    if source is None:
        log.info("note: the bundle's training file is not at its recorded path; texts are not compared with it")
        return []
    try:
        dataset, _ = source.load(min_classes=1)
    except (DataError, ConfigError) as exc:
        log.warning(f"warning: cannot read the bundle's training file {source.path} ({exc}); not compared with it")
        return []
    return list(dataset.texts)
