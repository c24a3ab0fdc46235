"""The two-tower model: an item tower that reads item text, a user tower that pools liked items.

* **Item tower**: the encoder's mean-pooled, unit-length embedding of the item text (the same
  graph as the support retriever, exported to ONNX and quantized to int8 for serving).
* **User tower**: the recency-weighted mean of the embeddings of the user's last
  ``max_history`` liked items (weight halves every ``half_life`` items back), times a learned
  (dim x dim) matrix initialised to the identity, normalised. At run time it is numpy alone.
* **Training**: each positive event is an example whose user side pools only the user's
  positives strictly earlier in time (no future leakage). Target items are encoded live; the
  other targets of the batch and ``sampled_negatives`` random items encoded with them are the
  negatives (softmax over cosine x ``scale``). A user's own history is never a negative. History
  embeddings come from a cache of the item tower, refreshed every ``refresh_every`` steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class TowerTraining:
    """How the two towers are fine-tuned."""

    steps: int = 800
    batch_size: int = 64
    sampled_negatives: int = 32
    learning_rate: float = 3e-5
    user_learning_rate: float = 1e-3
    scale: float = 20.0
    max_length: int = 32
    max_history: int = 50
    half_life: float = 10.0
    refresh_every: int = 200
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_minutes: float | None = None
    seed: int = 42


def recency_weights(length: int, half_life: float) -> np.ndarray:
    """Weights of a history of ``length`` items, oldest first: the newest gets 1, ``half_life`` back gets 0.5."""
    return 0.5 ** (np.arange(length - 1, -1, -1, dtype=np.float64) / half_life)


def user_vectors(
    histories: list[np.ndarray], embeddings: np.ndarray, matrix: np.ndarray, *, max_history: int, half_life: float
) -> np.ndarray:
    """Unit-length user vectors (users, dim) from item-row histories (oldest first); zero for an empty history."""
    out = np.zeros((len(histories), embeddings.shape[1]), dtype=np.float32)
    for i, rows in enumerate(histories):
        rows = np.asarray(rows, dtype=np.int64)[-max_history:]
        if not len(rows):
            continue
        weights = recency_weights(len(rows), half_life)
        pooled = (weights @ embeddings[rows]) / weights.sum()
        vector = pooled @ matrix
        out[i] = vector / max(np.linalg.norm(vector), 1e-12)
    return out


def training_examples(events: pd.DataFrame, max_history: int) -> list[tuple[np.ndarray, int]]:
    """(history item rows, target item row) for every positive event that has an earlier positive."""
    examples = []
    positives = events[events.positive]
    for _, group in positives.groupby("user", sort=True):
        times = group.timestamp.to_numpy()
        items = group.item.to_numpy()
        for j in range(1, len(items)):
            earlier = int(np.searchsorted(times, times[j], side="left"))
            if earlier:
                examples.append((items[max(0, earlier - max_history) : earlier], int(items[j])))
    return examples


def train_towers(
    encoder,
    tokenizer,
    texts: list[str],
    events: pd.DataFrame,
    pool: np.ndarray,
    settings: TowerTraining,
    *,
    show_progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Fine-tune ``encoder`` in place on ``events``; returns the user-tower matrix and a report.

    ``texts`` are the catalogue's item texts by row; ``pool`` the item rows negatives are drawn from.
    """
    import torch

    from slm.apps.common.embedding import embed_with_torch, loss_progress, warmup_then_linear_decay

    examples = training_examples(events, settings.max_history)
    report: dict = {"examples": len(examples), "steps": 0}
    dim = encoder.config.hidden_size
    if not examples or settings.steps <= 0:
        report["reason"] = "no training examples" if not examples else "training switched off"
        return np.eye(dim, dtype=np.float32), report
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    needed = np.unique(np.concatenate([h for h, _ in examples]))
    matrix = torch.nn.Parameter(torch.eye(dim))
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = _optimizer(params, matrix, settings)
    total = settings.steps
    scheduler = warmup_then_linear_decay(optimizer, total, settings.warmup_ratio)
    cache = np.zeros((len(texts), dim), dtype=np.float32)

    def refresh() -> None:
        encoder.eval()
        cache[needed] = embed_with_torch(encoder, tokenizer, [texts[i] for i in needed], settings.max_length, 128)
        encoder.train()

    log.info(f"two-tower training: {len(examples):,} examples, caching {len(needed):,} item embeddings…")
    refresh()
    losses: list[float] = []
    started, stopped = time.perf_counter(), False
    progress = loss_progress("two-tower", show_progress)
    with progress:
        task = progress.add_task("two-tower", total=total, loss="-")
        for step in range(total):
            loss = _batch_loss(encoder, tokenizer, texts, examples, pool, cache, matrix, settings, rng)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*params, matrix], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            report["steps"] = step + 1
            progress.update(task, advance=1, loss=f"{np.mean(losses[-50:]):.3f}")
            if settings.max_minutes is not None and time.perf_counter() - started >= settings.max_minutes * 60:
                stopped = True
                log.warning("note: two-tower training stopped by the time budget")
                break
            if (step + 1) % settings.refresh_every == 0 and step + 1 < total:
                refresh()
    encoder.eval()
    report.update(
        planned_steps=total,
        seconds=round(time.perf_counter() - started, 1),
        first_loss=round(float(np.mean(losses[:20])), 4),
        final_loss=round(float(np.mean(losses[-50:])), 4),
        stopped_by_budget=stopped,
        **{k: v for k, v in settings.__dict__.items() if k != "seed"},
    )
    return matrix.detach().numpy().astype(np.float32), report


def _optimizer(params: list, matrix, settings: TowerTraining):
    """AdamW over the encoder and the user-tower matrix, each at its own learning rate."""
    import torch

    return torch.optim.AdamW(
        [
            {"params": params, "lr": settings.learning_rate},
            {"params": [matrix], "lr": settings.user_learning_rate, "weight_decay": 0.0},
        ],
        weight_decay=settings.weight_decay,
    )


def _batch_loss(
    encoder,
    tokenizer,
    texts: list[str],
    examples: list[tuple[np.ndarray, int]],
    pool: np.ndarray,
    cache: np.ndarray,
    matrix,
    settings: TowerTraining,
    rng: np.random.Generator,
):
    """In-batch softmax loss of a random batch of examples: each user (its history's cached embeddings, recency
    weighted, through the user tower) against every target in the batch plus sampled negatives."""
    import torch

    from slm.apps.common.embedding import mean_pool

    chosen = [
        examples[i] for i in rng.choice(len(examples), size=min(settings.batch_size, len(examples)), replace=False)
    ]
    users = []
    for history, _ in chosen:
        weights = torch.tensor(recency_weights(len(history), settings.half_life), dtype=torch.float32)
        users.append((weights @ torch.from_numpy(cache[history])) / weights.sum())
    user = torch.nn.functional.normalize(torch.stack(users) @ matrix, dim=-1)
    targets = [t for _, t in chosen]
    extra = rng.choice(pool, size=min(settings.sampled_negatives, len(pool)), replace=False).tolist()
    columns = targets + extra
    batch = tokenizer(
        [texts[i] for i in columns], padding=True, truncation=True, max_length=settings.max_length, return_tensors="pt"
    )
    items = mean_pool(encoder, batch["input_ids"], batch["attention_mask"])
    scores = user @ items.T * settings.scale
    # A user's own liked items and other copies of their target are not negatives.
    column_items = np.array(columns)
    blocked = np.array([np.isin(column_items, h) | (column_items == t) for h, t in chosen])
    np.fill_diagonal(blocked, False)
    scores = scores.masked_fill(torch.from_numpy(blocked), float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(chosen)))
