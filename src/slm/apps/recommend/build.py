"""Train a recommender bundle: split, two-tower fine-tuning, ONNX int8 item encoder, ranker, evaluation.

Steps (each recorded in the manifest):
1. leave-last-out + cold-start split (:mod:`slm.apps.recommend.split`);
2. fine-tune the two towers on the events before each user's validation item;
3. export the item tower to ONNX (int8 when its embeddings agree with fp32) and embed every item;
4. fit the LambdaRank ranker on the validation items (features as of their time);
5. evaluate on the test and cold cases beside the baselines (skipped with ``evaluate=False``);
6. write the bundle with every user's full history for serving.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from slm.apps.recommend import layout
from slm.apps.recommend.baselines import ItemKNN
from slm.apps.recommend.data import RecData
from slm.apps.recommend.evaluate import evaluate
from slm.apps.recommend.features import ItemStats, feature_names
from slm.apps.recommend.ranker import DEFAULT_ROUNDS, HybridRanker
from slm.apps.recommend.recommender import write_items
from slm.apps.recommend.scorer import Ranker, Scorer, ranker_queries
from slm.apps.recommend.split import DEFAULT_COLD_FRACTION, DEFAULT_NEGATIVES, Split, leave_last_out
from slm.apps.recommend.towers import TowerTraining, train_towers
from slm.bundle.manifest import now_iso, write_manifest
from slm.bundle.schema import Components, EncoderSpec, Manifest
from slm.errors import BundleError, ConfigError
from slm.fileio import atomic_directory, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

INT8_CHECK_ITEMS = 300


@dataclass
class RecommendConfig:
    """Everything that shapes a recommender bundle."""

    base_model: str = "minilm-l6"
    towers: TowerTraining = field(default_factory=TowerTraining)
    cold_fraction: float = DEFAULT_COLD_FRACTION
    negatives: int = DEFAULT_NEGATIVES
    ranker_rounds: int = DEFAULT_ROUNDS
    index_kind: str = "hnsw"
    int8: bool = True
    evaluate: bool = True
    full_catalogue: bool = True
    seed: int = 42

    def validate(self) -> None:
        if self.towers.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.towers.steps}")
        if self.towers.batch_size < 2:
            raise ConfigError(f"batch size must be at least 2, got {self.towers.batch_size}")
        if self.negatives < 1:
            raise ConfigError(f"negatives must be at least 1, got {self.negatives}")
        if self.index_kind not in ("exact", "hnsw", "auto"):
            raise ConfigError(f"index kind must be exact, hnsw or auto, got {self.index_kind!r}")


def user_histories(data: RecData, max_history: int) -> dict[str, dict[str, list[str]]]:
    """Every user's last ``max_history`` liked item ids (oldest first) and every item id they interacted with."""
    ids = data.catalogue.ids
    out = {}
    for user, group in data.events.groupby("user", sort=True):
        liked = group.item[group.positive].to_numpy()[-max_history:]
        out[str(user)] = {"history": [ids[i] for i in liked], "seen": [ids[i] for i in np.unique(group.item)]}
    return out


def split_scorers(
    split: Split,
    data: RecData,
    embeddings,
    untuned_embeddings,
    matrix,
    settings: TowerTraining,
    ranker: Ranker | None,
) -> tuple[Scorer, Scorer, ItemKNN]:
    """The trained scorer, the un-tuned encoder's scorer and item-kNN, all fitted on the split's training events."""
    items = len(data.catalogue)
    stats = ItemStats.from_events(split.train_events, items)
    scorer = Scorer(embeddings, matrix, settings.max_history, settings.half_life, stats, data.catalogue.numeric, ranker)
    untuned = Scorer(
        untuned_embeddings, np.eye(matrix.shape[0], dtype=np.float32), settings.max_history, settings.half_life
    )
    return scorer, untuned, ItemKNN(split.train_events, items)


def train_recommender(
    data: RecData,
    output: str | Path,
    config: RecommendConfig | None = None,
    *,
    source: dict | None = None,
    show_progress: bool = True,
) -> Manifest:
    """Train and evaluate a recommender on ``data``, write the bundle to ``output`` atomically; returns its manifest."""
    from transformers import AutoModel, AutoTokenizer

    from slm.apps.common.embedding import embed_with_torch
    from slm.apps.common.encoders import Encoder
    from slm.models.registry import resolve_base_model

    config = config or RecommendConfig()
    config.validate()
    started = time.perf_counter()
    output = Path(output)
    split = _split(data, config)
    base = resolve_base_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    encoder = AutoModel.from_pretrained(base.path, add_pooling_layer=False).eval()
    texts = data.catalogue.texts
    settings = config.towers
    untuned_embeddings = None
    if config.evaluate:
        log.info(f"embedding {len(texts):,} items with the un-tuned encoder (baseline)…")
        untuned_embeddings = embed_with_torch(encoder, tokenizer, texts, settings.max_length, 128)
    matrix, training = train_towers(
        encoder, tokenizer, texts, split.tower_events, split.warm_items, settings, show_progress=show_progress
    )
    with atomic_directory(output) as staging:
        spec = _export_item_encoder(encoder, tokenizer, texts, staging, config)
        log.info(f"embedding {len(texts):,} items with the {spec.precision} ONNX item encoder…")
        embeddings = Encoder(staging, spec).embed(texts, batch_size=1, show_progress=show_progress)
        scorer, untuned, knn = split_scorers(
            split,
            data,
            embeddings,
            untuned_embeddings if untuned_embeddings is not None else embeddings,
            matrix,
            settings,
            None,
        )
        names = feature_names(data.catalogue.numeric_names)
        queries, labels = ranker_queries(split.validation, scorer, config.seed)
        ranker, ranker_report = HybridRanker.fit(queries, labels, names, rounds=config.ranker_rounds, seed=config.seed)
        scorer.ranker = ranker
        evaluation = None
        if config.evaluate:
            evaluation = evaluate(
                split, scorer, untuned, knn, seed=config.seed, index_kind=config.index_kind, full=config.full_catalogue,
                show_progress=show_progress,
            )  # fmt: skip
            _write_evaluation(staging, evaluation, data)
        _write_serving_files(staging, data, ranker, matrix, embeddings, config)
        training_record = {
            "towers": training,
            "ranker": ranker_report,
            "config": {k: v for k, v in asdict(config).items() if k != "towers"},
            "seconds": round(time.perf_counter() - started, 1),
        }
        manifest = write_manifest(
            staging, _manifest(data, config, base, spec, names, split, source, training_record, evaluation)
        )
    return manifest


def _split(data: RecData, config: RecommendConfig) -> Split:
    """The leave-last-out split, refused when too few users are left to fit the ranker on."""
    split = leave_last_out(data, cold_fraction=config.cold_fraction, negatives=config.negatives, seed=config.seed)
    log.info(f"split: {split.summary()}")
    if len(split.validation) < 10:
        raise ConfigError(
            f"only {len(split.validation)} users have three positive events at different times; "
            "the ranker needs at least 10"
        )
    return split


def _export_item_encoder(encoder, tokenizer, texts: list[str], staging: Path, config: RecommendConfig) -> EncoderSpec:
    """The item tower as ONNX (int8 when it agrees with fp32 on a sample of items) and as PyTorch weights."""
    from slm.apps.common.encoders import RETRIEVER_OUTPUTS, embedding_graph, export_encoder

    with tempfile.TemporaryDirectory(prefix="slm-recommend-") as tmp:
        tokenizer.save_pretrained(tmp)
        sample = [texts[i] for i in np.random.default_rng(config.seed).permutation(len(texts))[:INT8_CHECK_ITEMS]]
        spec = export_encoder(
            embedding_graph(encoder),
            encoder.config,
            Path(tmp),
            staging,
            layout.ENCODER_DIR,
            RETRIEVER_OUTPUTS,
            max_length=config.towers.max_length,
            check_texts=sample,
            int8=config.int8,
        )
    encoder.save_pretrained(staging / layout.ENCODER_DIR / "pytorch", safe_serialization=True)
    tokenizer.save_pretrained(staging / layout.ENCODER_DIR / "pytorch")
    return spec


def _write_evaluation(staging: Path, evaluation: dict, data: RecData) -> None:
    from slm.apps.recommend.report import markdown_report

    write_json_atomic(staging / layout.EVALUATION_FILE, evaluation)
    write_text_atomic(staging / layout.REPORT_FILE, markdown_report(evaluation, data.summary()))


def _write_serving_files(
    staging: Path, data: RecData, ranker: HybridRanker, matrix: np.ndarray, embeddings: np.ndarray, config
) -> None:
    """What serving reads besides the item encoder: the ranker, the user tower, the items and every user's history."""
    ranker.save(staging / layout.RANKER_FILE)
    with open(staging / layout.USER_TOWER_FILE, "wb") as handle:
        np.save(handle, matrix, allow_pickle=False)
    texts = data.catalogue.texts
    write_items(staging, data.catalogue, embeddings, ItemStats.from_events(data.events, len(texts)), config.index_kind)
    write_json_atomic(staging / layout.USERS_FILE, user_histories(data, config.towers.max_history))


def _manifest(
    data: RecData,
    config: RecommendConfig,
    base,
    spec: EncoderSpec,
    names: list[str],
    split: Split,
    source: dict | None,
    training: dict,
    evaluation: dict | None,
) -> Manifest:
    settings = config.towers
    return Manifest(
        task=layout.TASK,
        created=now_iso(),
        base_model=base.name,
        components=Components(item_encoder=spec),
        data={**data.summary(), **(source or {})},
        training=training,
        metrics=evaluation["acceptance"] if evaluation else None,
        extra={  # the recommender's own sections
            "base_model_sha256": base.sha256,
            "items": len(data.catalogue.texts),
            "recommender": {
                "max_history": settings.max_history,
                "half_life": settings.half_life,
                "feature_names": names,
                "reference_time": int(data.events.timestamp.max()),
                "index_kind": config.index_kind,
                "positive_rule": data.positive_rule,
            },
            "split": {
                "cold_fraction": config.cold_fraction,
                "negatives": config.negatives,
                "seed": config.seed,
                **split.summary(),
            },
        },
    )


def evaluate_bundle(path: str | Path, data: RecData, *, full_catalogue: bool = True) -> dict:
    """Re-run the bundle's evaluation on ``data`` (the same split settings as its training), baselines included.

    ``data`` should be the training data: on other data the held-out items may have been trained on,
    which the split summary check warns about.
    """
    from transformers import AutoModel, AutoTokenizer

    from slm.apps.common.embedding import embed_with_torch
    from slm.apps.recommend.recommender import Recommender
    from slm.models.registry import resolve_base_model

    bundle = Recommender(path)
    recorded = bundle.manifest.extra["split"]  # the recommender's own section
    rows = [bundle.position.get(item) for item in data.catalogue.ids]
    missing = [item for item, row in zip(data.catalogue.ids, rows, strict=True) if row is None]
    if missing:
        raise ConfigError(
            f"{len(missing)} catalogue items are not in the bundle (e.g. {', '.join(missing[:3])}); "
            "add them with 'slm app recommend add-items' first"
        )
    split = leave_last_out(
        data, cold_fraction=recorded["cold_fraction"], negatives=recorded["negatives"], seed=recorded["seed"]
    )
    differs = {k: (recorded.get(k), v) for k, v in split.summary().items() if recorded.get(k) != v}
    if differs:
        log.warning(
            f"warning: this split differs from the bundle's training split {differs}: "
            "held-out items may have been trained on"
        )
    embeddings = bundle.scorer.embeddings[np.array(rows, dtype=np.int64)]
    item_encoder = bundle.manifest.components.item_encoder
    base_name = bundle.manifest.base_model_name
    if item_encoder is None or base_name is None:
        raise BundleError(f"{path} records no item encoder or base model")
    settings = TowerTraining(
        max_history=bundle.scorer.max_history, half_life=bundle.scorer.half_life, max_length=item_encoder.max_length
    )
    base = resolve_base_model(base_name)
    encoder = AutoModel.from_pretrained(base.path, add_pooling_layer=False).eval()
    log.info(f"embedding {len(data.catalogue):,} items with the un-tuned encoder (baseline)…")
    untuned_embeddings = embed_with_torch(
        encoder, AutoTokenizer.from_pretrained(base.path), data.catalogue.texts, settings.max_length, 128
    )
    scorer, untuned, knn = split_scorers(
        split, data, embeddings, untuned_embeddings, bundle.scorer.matrix, settings, bundle.scorer.ranker
    )
    return evaluate(
        split, scorer, untuned, knn, seed=recorded["seed"], index_kind=bundle.index.kind, full=full_catalogue
    )
