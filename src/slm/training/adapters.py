"""Parameter-efficient fine-tuning with peft: LoRA / AdaLoRA adapters on every linear layer.

Adapters train a low-rank update of each weight while the pretrained weights stay frozen; the
classification head trains fully. Before the model is saved, the adapters are merged into the
weights (``merge_and_unload``), so the bundle has exactly the shape of a fully fine-tuned model
and runs at the same speed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from slm.errors import ConfigError
from slm.models.encoder import EncoderClassifier
from slm.training.config import TrainConfig

if TYPE_CHECKING:
    from peft import AdaLoraModel

# AdaLoRA starts every adapter at this multiple of the target rank and prunes down to lora_r.
ADALORA_INITIAL_RANK_FACTOR = 1.5


@dataclass
class ParameterCount:
    """Trainable parameters (adapters + head) against all parameters of the training model."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / max(self.total, 1)

    def to_dict(self) -> dict:
        return {"trainable": self.trainable, "total": self.total, "trainable_share": round(self.share, 5)}


def count_parameters(model: EncoderClassifier) -> ParameterCount:
    params = list(model.parameters())
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def add_adapters(
    model: EncoderClassifier, method: str, config: TrainConfig, total_steps: int
) -> Callable[[int], None] | None:
    """Wrap ``model.encoder`` with LoRA or AdaLoRA adapters in place.

    Returns the per-step hook AdaLoRA needs to re-allocate ranks (None for LoRA).
    """
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    common: dict[str, Any] = {
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": "all-linear",
    }
    if method == "lora":
        peft_config = LoraConfig(r=config.lora_r, **common)
    elif method == "adalora":
        if total_steps < 10:
            raise ConfigError(f"AdaLoRA needs at least 10 training steps to allocate ranks, got {total_steps}")
        peft_config = AdaLoraConfig(
            init_r=max(config.lora_r, round(config.lora_r * ADALORA_INITIAL_RANK_FACTOR)),
            target_r=config.lora_r,
            total_step=total_steps,
            tinit=int(total_steps * 0.1),
            tfinal=int(total_steps * 0.2),
            deltaT=max(1, total_steps // 50),
            **common,
        )
    else:
        raise ConfigError(f"unknown adapter method {method!r}")
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*gradient_checkpointing.*")
        wrapped = get_peft_model(model.encoder, peft_config)
        model.encoder = wrapped
    if method == "adalora":
        # the tuner peft chose for an AdaLoraConfig (PeftModel types base_model as any tuner)
        allocator = cast("AdaLoraModel", wrapped.base_model)
        return lambda step: allocator.update_and_allocate(step)
    return None


def merge_adapters(model: EncoderClassifier) -> None:
    """Fold the adapters into the encoder weights and drop the peft wrapper, in place."""
    from peft import PeftModel

    if isinstance(model.encoder, PeftModel):
        model.encoder = model.encoder.merge_and_unload()
