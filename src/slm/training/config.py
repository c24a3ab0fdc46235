"""Training hyper-parameters, validated up front."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from slm.errors import ConfigError
from slm.extras import require

METHODS = ("auto", "full", "lora", "adalora", "fewshot", "head")
# Differentially private training (--dp-epsilon): "auto" is the measured default (slm.training.private).
DP_RECIPES = ("auto", "head", "lora", "full")


@dataclass
class TrainConfig:
    """Everything that changes how a model is trained. Defaults are tuned for a 2-core CPU."""

    # "auto": chosen from the training texts' language before training (slm.models.auto.resolve_auto):
    # minilm-l6 for English, e5-small-multi for other languages or a mix. Or a registry name, directory, hub id.
    base_model: str = "auto"
    # full fine-tuning, LoRA/AdaLoRA adapters (merged before saving), few-shot contrastive
    # encoder tuning + a linear head, a linear head on the frozen encoder, or "auto" to choose.
    method: str = "full"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    dropout: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    patience: int = 2
    seed: int = 42
    max_minutes: float | None = None
    freeze_embeddings: bool = True
    class_weight: str = "none"  # "none" or "balanced"
    label_smoothing: float = 0.0
    ensemble: bool = True
    # The report's robustness section (slm.reports.robustness): perturbed copies of at most 500 evaluation texts
    # and per-slice scores. Off: --no-robustness.
    robustness: bool = True
    checkpoint_minutes: float = 5.0
    threads: int | None = None
    # An industry dictionary (slm.lexicon format): its multi-piece terms become whole tokens.
    lexicon: str | None = None
    # LoRA / AdaLoRA: rank, scaling and learning rate of the adapters (the head uses head_learning_rate).
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_learning_rate: float = 1e-3
    # Few-shot contrastive tuning: class-balanced batches of classes_per_batch x examples_per_class texts.
    contrastive_epochs: int = 20
    contrastive_learning_rate: float = 2e-5
    classes_per_batch: int = 16
    examples_per_class: int = 4
    temperature: float = 0.05
    # Self-training with unlabelled text: rounds of pseudo-labelling, each kept only if validation improves.
    self_training_rounds: int = 2
    # Differentially private training (DP-SGD with Opacus; slm.training.private): the privacy budget epsilon
    # (None: not private), delta (None: 1/n of the training rows), the per-example gradient clipping norm, the
    # recipe, and the DP run's own epochs, logical batch size and learning rate (DP needs large batches).
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_max_grad_norm: float = 1.0
    dp_recipe: str = "auto"
    dp_epochs: int | None = None
    dp_batch_size: int | None = None
    dp_learning_rate: float | None = None

    @property
    def private(self) -> bool:
        """Whether this run trains with differential privacy."""
        return self.dp_epsilon is not None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values that cannot train."""
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.learning_rate > 0 and self.head_learning_rate > 0, "learning rates must be positive"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (0 <= self.warmup_ratio < 1, "warm-up ratio must be in [0, 1)"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.max_length >= 8, "max length must be at least 8 tokens"),
            (self.patience >= 1, "patience must be at least 1"),
            (self.max_minutes is None or self.max_minutes > 0, "max minutes must be positive"),
            (self.class_weight in ("none", "balanced"), "class weight must be 'none' or 'balanced'"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (self.checkpoint_minutes > 0, "checkpoint interval must be positive"),
            (self.threads is None or self.threads >= 1, "threads must be at least 1"),
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}"),
            (self.lora_r >= 1 and self.lora_alpha >= 1, "LoRA rank and alpha must be at least 1"),
            (0 <= self.lora_dropout < 1, "LoRA dropout must be in [0, 1)"),
            (self.lora_learning_rate > 0 and self.contrastive_learning_rate > 0, "learning rates must be positive"),
            (self.contrastive_epochs >= 0, "contrastive epochs must be >= 0"),
            (self.classes_per_batch >= 2, "classes per batch must be at least 2"),
            (self.examples_per_class >= 2, "examples per class must be at least 2"),
            (self.temperature > 0, "temperature must be positive"),
            (self.self_training_rounds >= 1, "self-training rounds must be at least 1"),
            (self.lexicon is None or Path(self.lexicon).is_file(), f"lexicon file not found: {self.lexicon}"),
            *self._dp_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def _dp_checks(self) -> list[tuple[bool, str]]:
        def finite_positive(value: float | None) -> bool:
            return value is None or (isinstance(value, int | float) and 0 < value < float("inf"))

        return [
            (finite_positive(self.dp_epsilon), "--dp-epsilon must be a positive number (e.g. 8)"),
            (
                self.dp_delta is None or (isinstance(self.dp_delta, int | float) and 0 < self.dp_delta < 1),
                "--dp-delta must be between 0 and 1 (default 1/n of the training rows)",
            ),
            (finite_positive(self.dp_max_grad_norm), "--dp-max-grad-norm must be a positive number"),
            (self.dp_recipe in DP_RECIPES, f"--dp-recipe must be one of {', '.join(DP_RECIPES)}"),
            (self.dp_epochs is None or self.dp_epochs >= 1, "DP epochs must be at least 1"),
            (self.dp_batch_size is None or self.dp_batch_size >= 1, "DP batch size must be at least 1"),
            (finite_positive(self.dp_learning_rate), "DP learning rate must be positive"),
            (
                self.private or (self.dp_delta is None and self.dp_recipe == "auto"),
                "--dp-delta and --dp-recipe need --dp-epsilon",
            ),
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a value of the wrong type, e.g. "epochs": "three"
            raise ConfigError(f"invalid training configuration: {exc}") from None

    def resume_key(self) -> str:
        """Hash of the settings that must not change between an interrupted run and its resume."""
        volatile = {"max_minutes", "checkpoint_minutes", "threads", "robustness"}  # none changes the weights
        stable = {k: v for k, v in self.to_dict().items() if k not in volatile}
        return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def check_private_run(config: TrainConfig, *, unlabeled: bool, resume: bool, distributed: bool) -> None:
    """Refuse, in one line and before any data is read, what a private run cannot do."""
    if not config.private:
        return
    refusals = [
        (unlabeled, "--dp-epsilon cannot self-train on --unlabeled texts (pseudo-labels are not private)"),
        (resume, "--dp-epsilon cannot --resume: the privacy accounting restarts; train again from the start"),
        (distributed, "--dp-epsilon trains in one process: drop --nproc/--nnodes"),
        (
            config.method in ("fewshot", "adalora"),
            f"--dp-epsilon does not train --method {config.method}: use --dp-recipe head, lora or full",
        ),
    ]
    for refused, message in refusals:
        if refused:
            raise ConfigError(message)
    require("opacus", "privacy", what="--dp-epsilon")
