"""Few-shot training (the SetFit recipe): contrastive encoder tuning, then a linear head.

The encoder is tuned with a supervised contrastive loss on class-balanced batches: every batch
holds ``classes_per_batch`` classes x ``examples_per_class`` texts, and every same-class pair in
it is a positive, every other pair a negative. Pairs exist only inside a batch, so memory is
O(batch^2) whatever the number of classes or texts (SetFit's pair lists grow with both), and an
epoch is one pass over the classes, so its cost does not grow with the data either.

The head is a logistic regression on unit-length embeddings whose strength is chosen on the
validation split; its weights become the classifier's linear head, so the result is an ordinary
EncoderClassifier that exports to ONNX like any other.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from slm.console import status
from slm.models.encoder import EncoderClassifier
from slm.training.batching import Encoded, collate
from slm.training.config import TrainConfig
from slm.training.trainer import predict_embeddings, validation_macro_f1

log = logging.getLogger(__name__)

# Inverse L2 strengths tried for the head; the best on validation macro-F1 is kept.
HEAD_C_GRID = (1.0, 10.0, 100.0)
DEFAULT_HEAD_C = 10.0
HEAD_MAX_ITER = 2000
# Logit scales tried when calibrating the head on validation (a regularised LR on unit vectors
# has small logits, i.e. flat, under-confident probabilities; argmax is unchanged by scaling).
SCALE_GRID = np.geomspace(0.25, 64.0, 33)
SCALE_TOLERANCE = 0.01


class ClassBalancedSampler:
    """Index batches of ``classes_per_batch`` classes x ``examples_per_class`` examples.

    Single-label targets are class ids ``(n,)``; multi-label targets are 0/1 rows ``(n, labels)``
    and a class's members are the rows carrying that label. Classes with fewer members than
    ``examples_per_class`` are sampled with replacement (dropout makes repeated texts differ).
    With fewer classes than ``classes_per_batch``, every batch holds all classes and more
    examples of each, so the batch size stays ``classes_per_batch * examples_per_class``.
    ``examples_per_class`` (attribute) is the per-class count, before any remainder.
    """

    def __init__(self, targets: np.ndarray, classes_per_batch: int, examples_per_class: int, seed: int) -> None:
        members = (
            [np.flatnonzero(targets[:, k]) for k in range(targets.shape[1])]
            if targets.ndim == 2
            else [np.flatnonzero(targets == k) for k in range(int(targets.max()) + 1)]
        )
        self.members = [m for m in members if len(m)]
        n_classes = len(self.members)
        batch = classes_per_batch * examples_per_class
        self.classes_per_batch = min(classes_per_batch, n_classes)
        # Texts per class in a batch: examples_per_class, or more when there are fewer classes than
        # classes_per_batch (the remainder of the division goes one each to the first classes).
        base, extra = divmod(batch, max(self.classes_per_batch, 1))
        self.per_class = [base + (i < extra) for i in range(self.classes_per_batch)]
        self.examples_per_class = base
        self.rng = np.random.default_rng(seed)

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.members) / self.classes_per_batch)

    def epoch(self) -> list[np.ndarray]:
        """One pass over the classes in random order, each batch a flat index array."""
        order = self.rng.permutation(len(self.members))
        out = []
        for start in range(0, len(order), self.classes_per_batch):
            chosen = order[start : start + self.classes_per_batch]
            if len(chosen) < self.classes_per_batch:  # top up the last batch with other classes
                others = np.setdiff1d(order, chosen)
                extra = self.rng.choice(others, self.classes_per_batch - len(chosen), replace=False)
                chosen = np.concatenate([chosen, extra])
            parts = []
            for k, count in zip(chosen, self.per_class, strict=True):
                pool = self.members[k]
                parts.append(self.rng.choice(pool, count, replace=len(pool) < count))
            out.append(np.concatenate(parts))
        return out


def positive_weights(targets: torch.Tensor) -> torch.Tensor:
    """Pair weights ``(b, b)``: 1 for same class (single-label) or the label sets' Jaccard overlap."""
    if targets.ndim == 1:
        return (targets[:, None] == targets[None, :]).float()
    t = targets.float()
    inter = t @ t.T
    union = t.sum(1, keepdim=True) + t.sum(1)[None, :] - inter
    return inter / union.clamp(min=1.0)


def supervised_contrastive_loss(embeddings: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon loss (Khosla et al., 2020) over unit-length ``embeddings``; self-pairs excluded."""
    n = embeddings.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    sim = (embeddings @ embeddings.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    weights = positive_weights(targets).masked_fill(eye, 0.0)
    has_pos = weights.sum(1) > 0
    if not has_pos.any():
        return embeddings.sum() * 0.0
    per_row = -(log_prob.masked_fill(eye, 0.0) * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return per_row[has_pos].mean()


def _untuned() -> dict:
    """The training record of an encoder that was not tuned."""
    return {"contrastive_steps": 0, "contrastive_seconds": 0.0, "contrastive_loss": [], "stopped_by_budget": False}


def tune_encoder(
    model: EncoderClassifier,
    train: Encoded,
    targets: np.ndarray,
    config: TrainConfig,
    *,
    pad_id: int,
    show_progress: bool = True,
) -> dict:
    """Contrastive tuning of ``model.encoder`` in place; returns what happened (for the manifest)."""
    model.normalize = True
    if config.contrastive_epochs == 0:
        return _untuned()
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.contrastive_learning_rate, weight_decay=config.weight_decay)
    sampler = ClassBalancedSampler(targets, config.classes_per_batch, config.examples_per_class, config.seed)
    total = sampler.batches_per_epoch() * config.contrastive_epochs
    warmup = max(1, int(total * config.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    targets_t = torch.as_tensor(targets)
    losses: list[float] = []
    seconds, steps, stopped = 0.0, 0, False
    log.info(
        f"contrastive tuning: {total:,} batches of {sampler.classes_per_batch} classes x "
        f"{sampler.examples_per_class} texts ({config.contrastive_epochs} passes over the classes)"
    )
    model.train()
    progress = Progress(
        TextColumn("[bold]contrastive"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task("contrastive", total=total, loss="-")
        for _ in range(config.contrastive_epochs):
            epoch_loss = []
            for batch in sampler.epoch():
                started = time.perf_counter()
                input_ids, mask = collate([train.ids[i] for i in batch], pad_id)
                loss = supervised_contrastive_loss(model.embed(input_ids, mask), targets_t[batch], config.temperature)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                seconds += time.perf_counter() - started
                steps += 1
                epoch_loss.append(loss.item())
                progress.update(task, advance=1, loss=f"{np.mean(epoch_loss):.3f}")
            losses.append(round(float(np.mean(epoch_loss)), 5))
            if config.max_minutes is not None and seconds >= config.max_minutes * 60:
                log.warning("note: contrastive tuning stopped by the time budget (--max-minutes)")
                stopped = True
                break
    model.eval()
    return {
        "contrastive_steps": steps,
        "contrastive_seconds": round(seconds, 1),
        "contrastive_loss": losses,
        "stopped_by_budget": stopped,
    }


@dataclass
class LinearHead:
    """Weights ``(labels, dim)`` and bias ``(labels,)`` for ``EncoderClassifier.head``."""

    weight: np.ndarray
    bias: np.ndarray
    c: float
    scale: float = 1.0


def _fit_logistic(x: np.ndarray, targets: np.ndarray, n_labels: int, c: float, seed: int) -> LinearHead:
    """Multinomial LR (single-label) or one binary LR per label (multi-label) as logit weights."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if targets.ndim == 1:
            lr = LogisticRegression(C=c, max_iter=HEAD_MAX_ITER, random_state=seed).fit(x, targets)
            weight = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
            bias = np.full(n_labels, -100.0, dtype=np.float32)  # classes never seen in training
            if len(lr.classes_) == 2:  # sklearn's binary form: one logit for the second class
                weight[lr.classes_] = np.stack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
                bias[lr.classes_] = [-lr.intercept_[0] / 2, lr.intercept_[0] / 2]
            else:
                weight[lr.classes_] = lr.coef_
                bias[lr.classes_] = lr.intercept_
            return LinearHead(weight, bias, c)
        weight = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
        bias = np.zeros(n_labels, dtype=np.float32)
        for k in range(n_labels):
            column = targets[:, k]
            if column.min() == column.max():  # a label always (or never) present
                bias[k] = 10.0 if column[0] else -10.0
                continue
            lr = LogisticRegression(C=c, max_iter=HEAD_MAX_ITER, random_state=seed).fit(x, column)
            weight[k], bias[k] = lr.coef_[0], lr.intercept_[0]
        return LinearHead(weight, bias, c)


def _head_logits(head: LinearHead, x: np.ndarray) -> np.ndarray:
    return x @ head.weight.T + head.bias


def fit_head(
    x_train: np.ndarray,
    train_targets: np.ndarray,
    x_val: np.ndarray,
    val_targets: np.ndarray,
    *,
    n_labels: int,
    seed: int,
) -> tuple[LinearHead, list[dict]]:
    """The best logistic-regression head over ``HEAD_C_GRID`` on validation macro-F1 (C=10 without one),
    its logits scaled for calibrated probabilities on validation."""
    multi = train_targets.ndim == 2
    if len(x_val) == 0:
        return _fit_logistic(x_train, train_targets, n_labels, DEFAULT_HEAD_C, seed), []
    best, best_score, tried = None, -1.0, []
    for c in HEAD_C_GRID:
        head = _fit_logistic(x_train, train_targets, n_labels, c, seed)
        score = validation_macro_f1(_head_logits(head, x_val), val_targets, multi)
        tried.append({"C": c, "val_macro_f1": round(score, 5)})
        if score > best_score + 1e-9:
            best, best_score = head, score
    assert best is not None  # a macro-F1 (>= 0) beats the initial -1
    return calibrate_scale(best, x_val, val_targets), tried


def _log_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    if targets.ndim == 2:
        p = np.clip(1.0 / (1.0 + np.exp(-logits)), 1e-7, 1 - 1e-7)
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(targets)), targets].mean())


def calibrate_scale(head: LinearHead, x_val: np.ndarray, val_targets: np.ndarray) -> LinearHead:
    """Scale the head's logits by the factor with the lowest validation log-loss (temperature scaling)."""
    logits = _head_logits(head, x_val).astype(np.float64)
    losses = [_log_loss(logits * s, val_targets) for s in SCALE_GRID]
    # The smallest scale within SCALE_TOLERANCE nats of the best: on a validation split the head
    # gets entirely right the loss falls forever with the scale, and probabilities of exactly 1.0
    # would make every later confidence ranking (self-training) meaningless.
    best = min(losses)
    scale = next(s for s, loss in zip(SCALE_GRID, losses, strict=True) if loss <= best + SCALE_TOLERANCE)
    return LinearHead(head.weight * scale, head.bias * scale, head.c, float(scale))


def set_head(model: EncoderClassifier, head: LinearHead) -> None:
    """Copy a fitted linear head into the classifier."""
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(head.weight))
        model.head.bias.copy_(torch.from_numpy(head.bias))


def fit_fewshot(
    model: EncoderClassifier,
    train: Encoded,
    train_targets: np.ndarray,
    val: Encoded,
    val_targets: np.ndarray,
    config: TrainConfig,
    *,
    pad_id: int,
    contrastive: bool,
    show_progress: bool = True,
) -> dict:
    """Few-shot (``contrastive``) or head-only training of ``model`` in place; returns training facts."""
    started = time.perf_counter()
    model.normalize = True
    info = (
        tune_encoder(model, train, train_targets, config, pad_id=pad_id, show_progress=show_progress)
        if contrastive
        else _untuned()
    )
    with status("fitting the linear head on sentence embeddings…", enabled=show_progress):
        x_train = predict_embeddings(model, train, pad_id)
        x_val = predict_embeddings(model, val, pad_id) if len(val) else np.zeros((0, x_train.shape[1]), np.float32)
        head, tried = fit_head(
            x_train, train_targets, x_val, val_targets, n_labels=model.head.out_features, seed=config.seed
        )
    set_head(model, head)
    seconds = time.perf_counter() - started
    kind = "few-shot" if contrastive else "head-only"
    log.info(f"head fitted (C={head.c:g}); {kind} training took {seconds:.0f}s")
    return {
        **info,
        "head_C": head.c,
        "head_scale": round(head.scale, 3),
        "head_grid": tried,
        "seconds": round(seconds, 1),
    }
