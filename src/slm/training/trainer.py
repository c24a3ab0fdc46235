"""Fine-tuning loop: AdamW, warm-up/decay, clipping, early stopping, checkpoints, time budget."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from sklearn.metrics import f1_score
from torch import nn

from slm.errors import SlmError
from slm.models.encoder import EncoderClassifier
from slm.training import distributed
from slm.training.batching import Encoded, collate, inference_batches, length_bucketed_batches
from slm.training.checkpoint import TrainState, has_checkpoint, load_checkpoint, save_checkpoint
from slm.training.config import TrainConfig

log = logging.getLogger(__name__)


class TrainingInterrupted(SlmError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a resumable checkpoint."""

    exit_code = 130


@dataclass
class TrainResult:
    """The trained model (best validation weights loaded) and how training went."""

    model: EncoderClassifier
    state: TrainState
    stopped_early: bool
    stopped_by_budget: bool

    @property
    def examples_per_s(self) -> float:
        return self.state.examples_seen / max(self.state.train_seconds, 1e-9)


def set_threads(threads: int | None) -> int:
    """Use every core by default; returns the thread count in force."""
    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    return count


def predict_logits(
    model: EncoderClassifier,
    encoded: Encoded,
    pad_id: int,
    batch_size: int = 128,
    show_progress: bool = False,
) -> np.ndarray:
    """Logits for every encoded text, batched by length; rows in input order."""
    return _batched(model, model, model.head.out_features, encoded, pad_id, batch_size, show_progress, "predicting")


def predict_embeddings(
    model: EncoderClassifier,
    encoded: Encoded,
    pad_id: int,
    batch_size: int = 128,
    show_progress: bool = False,
) -> np.ndarray:
    """Pooled sentence embeddings (what the head sees) for every encoded text, in input order."""
    width = model.head.in_features
    return _batched(model, model.embed, width, encoded, pad_id, batch_size, show_progress, "embedding")


def _batched(
    model: EncoderClassifier,
    fn,
    width: int,
    encoded: Encoded,
    pad_id: int,
    batch_size: int,
    show_progress: bool,
    label: str,
) -> np.ndarray:
    """``fn(input_ids, mask)`` over length-sorted batches of ``encoded``, in eval mode, no grad."""
    model.eval()
    lengths = np.array([len(row) for row in encoded.ids])
    out = np.zeros((len(encoded), width), dtype=np.float32)
    batches = inference_batches(lengths, batch_size)
    with (
        torch.inference_mode(),
        Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not show_progress,
            transient=True,
        ) as progress,
    ):
        for batch in progress.track(batches, total=len(batches)):
            input_ids, mask = collate([encoded.ids[i] for i in batch], pad_id)
            out[batch] = fn(input_ids, mask).float().numpy()
    return out


def validation_macro_f1(logits: np.ndarray, targets: np.ndarray, multi_label: bool) -> float:
    """Macro-F1 used for early stopping (argmax, or sigmoid > 0.5 for multi-label)."""
    if multi_label:
        predicted = (logits > 0).astype(int)
        return float(f1_score(targets.astype(int), predicted, average="macro", zero_division=0))
    labels = np.arange(logits.shape[1])
    return float(f1_score(targets, logits.argmax(1), labels=labels, average="macro", zero_division=0))


@dataclass
class _Step:
    """What an optimiser step needs besides its batch."""

    forward: nn.Module  # the model, or its DistributedDataParallel wrapper
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    targets: torch.Tensor


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):  # noqa: ARG001
            self.requested = True

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class Trainer:
    """Fine-tunes an EncoderClassifier on pre-tokenised data."""

    def __init__(
        self,
        config: TrainConfig,
        model: EncoderClassifier,
        *,
        pad_id: int,
        multi_label: bool,
        checkpoint_dir: Path,
        show_progress: bool = True,
        encoder_learning_rate: float | None = None,
        step_hook: Callable[[int], None] | None = None,
        epoch_hook: Callable[[int, float], None] | None = None,
    ) -> None:
        """``step_hook(global_step)`` runs after each optimiser step (AdaLoRA's rank allocation);
        ``epoch_hook(epoch, validation_macro_f1)`` after each epoch (it may raise to stop, e.g. to
        prune a hyper-parameter trial)."""
        self.config = config
        self.encoder_learning_rate = encoder_learning_rate or config.learning_rate
        self.step_hook = step_hook
        self.epoch_hook = epoch_hook
        self.model = model
        self.pad_id = pad_id
        self.multi_label = multi_label
        self.checkpoint_dir = Path(checkpoint_dir)
        self.show_progress = show_progress
        self.stop = _StopFlag()
        self._last_save = time.monotonic()

    # -- setup ---------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.freeze_embeddings:
            self.model.encoder.get_input_embeddings().weight.requires_grad_(False)
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in self.model.encoder.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name else decay).append(param)
        lr = self.encoder_learning_rate
        groups = [
            {"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            {
                "params": list(self.model.head.parameters()),
                "lr": cfg.head_learning_rate,
                "weight_decay": cfg.weight_decay,
            },
        ]
        return torch.optim.AdamW(groups)

    def _scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        warmup = max(1, int(total_steps * self.config.warmup_ratio))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def _loss(self, train_targets: np.ndarray, num_labels: int) -> nn.Module:
        if self.multi_label:
            return nn.BCEWithLogitsLoss()
        weight = None
        if self.config.class_weight == "balanced":
            counts = np.bincount(train_targets, minlength=num_labels).astype(np.float64)
            w = len(train_targets) / (num_labels * np.maximum(counts, 1.0))
            weight = torch.tensor(w, dtype=torch.float32)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.config.label_smoothing)

    # -- loop ----------------------------------------------------------------------------
    def fit(
        self,
        train: Encoded,
        train_targets: np.ndarray,
        val: Encoded,
        val_targets: np.ndarray,
        *,
        data_fingerprint: str,
        resume: bool = False,
    ) -> TrainResult:
        """Train with early stopping on validation macro-F1; returns the best model."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        lengths = np.array([len(row) for row in train.ids])
        n_batches = math.ceil(len(train) / cfg.batch_size)
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer, n_batches * cfg.epochs)
        loss_fn = self._loss(train_targets, self.model.head.out_features)
        state, best = self._initial_state(data_fingerprint, resume, optimizer, scheduler)
        step = _Step(self._forward(), loss_fn, optimizer, scheduler, torch.as_tensor(train_targets))
        stopped_by_budget = False
        self._last_save = time.monotonic()
        with self.stop.installed(), self._progress() as progress:
            log.info(
                f"fine-tuning: {len(train):,} examples, {n_batches:,} steps per epoch, up to {cfg.epochs} epochs"
                + (f" (resuming at epoch {state.epoch + 1}, step {state.next_batch})" if state.global_step else "")
            )
            task = progress.add_task(
                "epoch",
                total=n_batches * cfg.epochs,
                loss="-",
                rate="-",
                completed=state.epoch * n_batches + state.next_batch,
            )
            while not state.finished and state.epoch < cfg.epochs:
                batches = length_bucketed_batches(lengths, cfg.batch_size, seed=cfg.seed + state.epoch)
                progress.update(task, description=f"epoch {state.epoch + 1}/{cfg.epochs}")
                stopped_by_budget, running = self._train_epoch(train, batches, step, state, best, progress, task)
                best = self._end_epoch(state, val, val_targets, best, running)
                if stopped_by_budget or state.bad_epochs >= cfg.patience:
                    state.finished = True
                self._save(state, optimizer, scheduler, best)
                self._last_save = time.monotonic()
        if best is not None:
            self.model.load_state_dict(best)
        stopped_early = state.bad_epochs >= cfg.patience
        return TrainResult(self.model, state, stopped_early, stopped_by_budget)

    def _initial_state(
        self, data_fingerprint: str, resume: bool, optimizer: torch.optim.Optimizer, scheduler
    ) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
        """A fresh state, or with ``resume`` the checkpoint's (model, optimiser and scheduler restored in place)."""
        state = TrainState(resume_key=self.config.resume_key(), data_fingerprint=data_fingerprint)
        if resume and not has_checkpoint(self.checkpoint_dir):
            log.warning(f"note: no checkpoint in {self.checkpoint_dir}; starting from the beginning")
        if resume and has_checkpoint(self.checkpoint_dir):
            return load_checkpoint(
                self.checkpoint_dir,
                resume_key=state.resume_key,
                data_fingerprint=data_fingerprint,
                model=self.model,
                optimizer=optimizer,
                scheduler=scheduler,
            )
        return state, None

    def _forward(self) -> nn.Module:
        if distributed.active():  # gradients averaged across ranks; each rank trains on its share of a batch
            # Added domain-term rows (--lexicon) get no gradient in batches without a term.
            return nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=bool(self.config.lexicon))
        return self.model

    def _train_epoch(
        self,
        train: Encoded,
        batches: list[np.ndarray],
        step: _Step,
        state: TrainState,
        best: dict[str, torch.Tensor] | None,
        progress: Progress,
        task: TaskID,
    ) -> tuple[bool, float]:
        """The epoch's batches from ``state.next_batch`` on: ``(stopped by the time budget, running loss)``."""
        self.model.train()
        running = 0.0
        for index in range(state.next_batch, len(batches)):
            whole = batches[index]
            if len(whole) < distributed.world_size():  # a rank would get no rows: the same skip on all
                continue
            loss = self._step(train, whole, step, state)
            state.next_batch = index + 1
            running = 0.9 * running + 0.1 * loss if index else loss
            progress.update(
                task,
                advance=1,
                loss=f"{running:.3f}",
                rate=f"{state.examples_seen / max(state.train_seconds, 1e-9):.0f}",
            )
            if self._out_of_time(state, step, best):
                return True, running
        return False, running

    def _step(self, train: Encoded, whole: np.ndarray, step: _Step, state: TrainState) -> float:
        """One optimiser step on this rank's share of the batch ``whole``; returns its loss."""
        started = time.perf_counter()
        batch = distributed.shard(list(whole))
        input_ids, mask = collate([train.ids[i] for i in batch], self.pad_id)
        logits = step.forward(input_ids, mask)
        loss = step.loss_fn(logits, step.targets[batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        step.optimizer.step()
        if self.step_hook is not None:
            self.step_hook(state.global_step)
        step.scheduler.step()
        step.optimizer.zero_grad(set_to_none=True)
        state.train_seconds += time.perf_counter() - started
        state.examples_seen += len(whole)
        state.global_step += 1
        return loss.item()

    def _out_of_time(self, state: TrainState, step: _Step, best: dict[str, torch.Tensor] | None) -> bool:
        """After a step, on every rank alike: checkpoint and raise on a stop signal; True when over the time
        budget; a checkpoint every ``checkpoint_minutes``."""
        stop = distributed.any_rank(self.stop.requested)
        over = distributed.any_rank(self._over_budget(state))
        if stop:
            self._save(state, step.optimizer, step.scheduler, best)
            raise TrainingInterrupted(
                f"training interrupted at epoch {state.epoch + 1}, batch {state.next_batch}: "
                "checkpoint saved; run the same command with --resume to continue"
            )
        if over:
            return True
        if distributed.any_rank(time.monotonic() - self._last_save > self.config.checkpoint_minutes * 60):
            self._save(state, step.optimizer, step.scheduler, best)
            self._last_save = time.monotonic()
        return False

    def _save(self, state: TrainState, optimizer, scheduler, best) -> None:
        """Checkpoint from rank 0 only (the single writer); every rank waits until it is on disk."""
        if distributed.is_main():
            save_checkpoint(self.checkpoint_dir, state, self.model, optimizer, scheduler, best)
        distributed.barrier()

    def _over_budget(self, state: TrainState) -> bool:
        limit = self.config.max_minutes
        return limit is not None and state.train_seconds >= limit * 60

    def _end_epoch(
        self,
        state: TrainState,
        val: Encoded,
        val_targets: np.ndarray,
        best: dict[str, torch.Tensor] | None,
        train_loss: float,
    ) -> dict[str, torch.Tensor] | None:
        started = time.perf_counter()
        # Each rank predicts its share of the validation texts; every rank scores the gathered logits.
        logits = distributed.gather_rows(
            len(val), lambda rows: predict_logits(self.model, Encoded([val.ids[i] for i in rows], 0), self.pad_id)
        )
        metric = validation_macro_f1(logits, val_targets, self.multi_label)
        state.history.append(
            {
                "epoch": state.epoch + 1,
                "train_loss": round(train_loss, 5),
                "val_macro_f1": round(metric, 5),
                "seconds": round(state.train_seconds, 1),
                "eval_seconds": round(time.perf_counter() - started, 1),
            }
        )
        improved = metric > state.best_metric + 1e-4
        if self.show_progress and distributed.is_main():
            log.info(
                f"epoch {state.epoch + 1}: train loss {train_loss:.4f} · validation macro-F1 "
                f"{metric:.4f}{' (best)' if improved else ''} · {state.train_seconds / 60:.1f} min"
            )
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = metric, state.epoch + 1, 0
            best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch += 1
        state.next_batch = 0
        if self.epoch_hook is not None:
            self.epoch_hook(state.epoch, metric)
        return best

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} ex/s"),
            TimeRemainingColumn(),
            disable=not self.show_progress or not distributed.is_main(),
            transient=False,
        )
