"""Train one EncoderClassifier with the chosen method: full, LoRA/AdaLoRA, few-shot or head-only."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slm.models.encoder import EncoderClassifier, add_term_embedding, build_classifier, merge_term_embedding
from slm.training.adapters import add_adapters, count_parameters, merge_adapters
from slm.training.batching import Encoded
from slm.training.config import TrainConfig
from slm.training.fewshot import fit_fewshot
from slm.training.trainer import Trainer


@dataclass
class Fitted:
    """A trained classifier (adapters merged) and the facts about its training for the manifest."""

    model: EncoderClassifier
    info: dict


def fit_transformer(
    method: str,
    base_path: Path,
    n_labels: int,
    train: Encoded,
    train_targets: np.ndarray,
    val: Encoded,
    val_targets: np.ndarray,
    config: TrainConfig,
    *,
    pad_id: int,
    multi_label: bool,
    checkpoint_dir: Path,
    data_fingerprint: str,
    resume: bool = False,
    show_progress: bool = True,
    epoch_hook: Callable[[int, float], None] | None = None,
    warm_start: EncoderClassifier | None = None,
) -> Fitted:
    """Build a classifier from the base weights and train it with ``method`` (not "auto").

    ``warm_start``: train this classifier further instead (``slm update``: a bundle's model, its head
    already grown to ``n_labels``).
    """
    torch.manual_seed(config.seed)  # the head's initialisation, so that a run is reproducible
    model = warm_start if warm_start is not None else build_classifier(base_path, n_labels, dropout=config.dropout)
    if config.freeze_embeddings:  # added domain terms (--lexicon) still train, as their own small parameter
        add_term_embedding(model.encoder)
    started = time.perf_counter()
    if method in ("fewshot", "head"):
        return _fit_fewshot(
            model, method, train, train_targets, val, val_targets, config, pad_id, show_progress, started
        )
    step_hook = None
    encoder_lr = None
    if method in ("lora", "adalora"):
        steps = math.ceil(len(train) / config.batch_size) * config.epochs
        step_hook = add_adapters(model, method, config, steps)
        encoder_lr = config.lora_learning_rate
    trainer = Trainer(
        config,
        model,
        pad_id=pad_id,
        multi_label=multi_label,
        checkpoint_dir=checkpoint_dir,
        show_progress=show_progress,
        encoder_learning_rate=encoder_lr,
        step_hook=step_hook,
        epoch_hook=epoch_hook,
    )
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    parameters = count_parameters(model)
    result = trainer.fit(train, train_targets, val, val_targets, data_fingerprint=data_fingerprint, resume=resume)
    merge_adapters(model)
    merge_term_embedding(model.encoder)
    return Fitted(
        model,
        {
            "method": method,
            "wall_time_s": round(time.perf_counter() - started, 1),
            "train_seconds": round(result.state.train_seconds, 1),
            "examples_per_s": round(result.examples_per_s, 1),
            "epochs_run": result.state.epoch,
            "best_epoch": result.state.best_epoch,
            "stopped_early": result.stopped_early,
            "stopped_by_budget": result.stopped_by_budget,
            "history": result.state.history,
            "parameters": parameters.to_dict(),
        },
    )


def _fit_fewshot(
    model: EncoderClassifier,
    method: str,
    train: Encoded,
    train_targets: np.ndarray,
    val: Encoded,
    val_targets: np.ndarray,
    config: TrainConfig,
    pad_id: int,
    show_progress: bool,
    started: float,
) -> Fitted:
    """Few-shot (contrastive encoder tuning, then a linear head) or head-only training, started at ``started``."""
    if method == "head":
        model.encoder.requires_grad_(False)
    info = fit_fewshot(
        model,
        train,
        train_targets,
        val,
        val_targets,
        config,
        pad_id=pad_id,
        contrastive=method == "fewshot",
        show_progress=show_progress,
    )
    parameters = count_parameters(model)  # what was trained: the head, plus the encoder for few-shot
    merge_term_embedding(model.encoder)
    seconds = time.perf_counter() - started
    return Fitted(
        model,
        {
            "method": method,
            "wall_time_s": round(seconds, 1),
            "train_seconds": info["seconds"],
            "examples_per_s": None,
            "epochs_run": len(info["contrastive_loss"]),
            "best_epoch": None,
            "stopped_early": False,
            "stopped_by_budget": info["stopped_by_budget"],
            "history": [{"epoch": i + 1, "contrastive_loss": v} for i, v in enumerate(info["contrastive_loss"])],
            "parameters": parameters.to_dict(),
            "fewshot": {k: v for k, v in info.items() if k not in ("contrastive_loss", "stopped_by_budget")},
        },
    )
