"""Knowledge-distillation recovery: fine-tune a pruned student towards its teacher's logits.

The loss mixes a soft term (the teacher's temperature-softened distribution) with the usual hard-label
loss::

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard_loss

The ``T^2`` factor keeps the soft term's gradients on the same scale as the hard term's whatever the
temperature (Hinton et al., 2015). Multi-label models distil each label's Bernoulli distribution
(``sigmoid(logit / T)``) the same way.

The fine-tuning loop is the project's :class:`~slm.training.trainer.Trainer` (AdamW with warm-up and
linear decay, gradient clipping, length-bucketed batches, early stopping on validation macro-F1 keeping
the best weights, a time budget and a rich progress bar). Only its loss differs: the trainer is handed
*row indices* as its targets, and :class:`DistillationLoss` looks up each row's hard label and
precomputed teacher logits.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slm.errors import ConfigError
from slm.models.encoder import EncoderClassifier
from slm.training.batching import Encoded
from slm.training.config import TrainConfig
from slm.training.trainer import Trainer, TrainingInterrupted, TrainResult


def check_distillation_settings(temperature: float, alpha: float) -> None:
    """ConfigError for a temperature or soft-loss weight that cannot train."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive (got {temperature})")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha (weight of the distillation loss) must be in [0, 1] (got {alpha})")


def _bernoulli_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over labels and rows of KL(Bernoulli(teacher) || Bernoulli(sigmoid(student)))."""
    cross = F.binary_cross_entropy_with_logits(student_logits, teacher_probs, reduction="none")
    eps = 1e-7
    p = teacher_probs.clamp(eps, 1 - eps)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    return (cross - entropy).mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    multi_label: bool,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard loss`` for one batch.

    Single-label: KL between softmax distributions (batch mean) and cross-entropy on class ids.
    Multi-label: per-label Bernoulli KL with soft targets ``sigmoid(teacher / T)`` and BCE on the 0/1
    target matrix. Both soft terms are 0 exactly when the student's logits equal the teacher's.
    """
    t = temperature
    teacher_logits = teacher_logits.to(student_logits.dtype)
    if multi_label:
        soft = _bernoulli_kl(student_logits / t, torch.sigmoid(teacher_logits / t))
    else:
        soft = F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    loss = alpha * t * t * soft
    if alpha < 1.0:
        if multi_label:
            hard = F.binary_cross_entropy_with_logits(student_logits, targets.to(student_logits.dtype))
        else:
            hard = F.cross_entropy(student_logits, targets)
        loss = loss + (1.0 - alpha) * hard
    return loss


class DistillationLoss(nn.Module):
    """The distillation loss keyed by training-row index: ``loss(student_logits, rows)``.

    Holds the teacher's logits and the hard targets of every training row, so the trainer only
    needs to pass which rows a batch holds.
    """

    def __init__(
        self,
        teacher_logits: np.ndarray,
        targets: np.ndarray,
        *,
        multi_label: bool,
        temperature: float,
        alpha: float,
    ) -> None:
        super().__init__()
        check_distillation_settings(temperature, alpha)
        if len(teacher_logits) != len(targets):
            raise ValueError("teacher logits and targets differ in length")
        self.teacher_logits = torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32))
        self.targets = torch.as_tensor(targets)
        self.multi_label = multi_label
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, student_logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return distillation_loss(
            student_logits,
            self.teacher_logits[rows],
            self.targets[rows],
            multi_label=self.multi_label,
            temperature=self.temperature,
            alpha=self.alpha,
        )


class DistillTrainer(Trainer):
    """The project's Trainer with the distillation loss in place of the hard-label loss.

    Call :meth:`Trainer.fit` with ``train_targets=np.arange(len(train))`` (row indices); validation
    targets are the real labels, so early stopping still follows validation macro-F1.
    """

    def __init__(self, config: TrainConfig, model: EncoderClassifier, *, loss: DistillationLoss, **kwargs) -> None:
        super().__init__(config, model, **kwargs)
        self.distillation = loss

    def _loss(self, train_targets: np.ndarray, num_labels: int) -> nn.Module:  # noqa: ARG002
        return self.distillation


def agreement(a_logits: np.ndarray, b_logits: np.ndarray, multi_label: bool) -> float:
    """How often two models decide the same: top-1 match, or per-label ``logit > 0`` match (multi-label)."""
    if len(a_logits) == 0:
        return float("nan")
    if multi_label:
        return float(((a_logits > 0) == (b_logits > 0)).mean())
    return float((a_logits.argmax(1) == b_logits.argmax(1)).mean())


def recover(
    student: EncoderClassifier,
    train: Encoded,
    train_targets: np.ndarray,
    teacher_logits: np.ndarray,
    val: Encoded,
    val_targets: np.ndarray,
    *,
    config: TrainConfig,
    multi_label: bool,
    pad_id: int,
    temperature: float,
    alpha: float,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune ``student`` in place with the distillation loss; returns the best-on-validation model.

    ``teacher_logits`` are the teacher's logits for ``train`` (row-aligned), computed once up front.
    The trainer's checkpoints go to a temporary directory that is removed afterwards: a recovery is
    short and is simply rerun if interrupted.
    """
    loss = DistillationLoss(
        teacher_logits, train_targets, multi_label=multi_label, temperature=temperature, alpha=alpha
    )
    scratch = Path(tempfile.mkdtemp(prefix="slm-distill-"))
    trainer = DistillTrainer(
        config,
        student,
        loss=loss,
        pad_id=pad_id,
        multi_label=multi_label,
        checkpoint_dir=scratch / "checkpoint",
        show_progress=show_progress,
    )
    try:
        return trainer.fit(
            train,
            np.arange(len(train)),
            val,
            val_targets,
            data_fingerprint="distillation",
            resume=False,
        )
    except TrainingInterrupted:
        raise TrainingInterrupted("distillation interrupted: nothing was written") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
