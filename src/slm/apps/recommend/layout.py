"""What a recommender bundle holds, by name (shared by training, adding items and the run-time code)."""

from pathlib import Path

TASK = "recommendation"
ENCODER_DIR = "item_encoder"  # model.onnx (int8 when it agrees with fp32), tokenizer/, pytorch/ (safetensors)
ITEMS_FILE = "items.json"  # the catalogue: ids, texts, numeric features
EMBEDDINGS_FILE = "item_embeddings.npy"  # (items, dim) float32, row order of items.json
INDEX_DIR = "index"  # ANN index over the item embeddings
STATS_FILE = "item_stats.npz"  # each item's positive-event times, for popularity/recency features
USER_TOWER_FILE = "user_tower.npy"  # (dim, dim) float32
USERS_FILE = "users.json"  # user id -> recent liked item ids and every item id seen
RANKER_FILE = "ranker.txt"  # LightGBM LambdaRank model
EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.md"


def is_recommender(path: Path) -> bool:
    """Whether ``path`` holds a recommender bundle (read from its manifest; anything unreadable: no)."""
    from slm.bundle.manifest import peek_task

    return peek_task(path) == TASK
