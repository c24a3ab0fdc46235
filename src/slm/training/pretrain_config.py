"""What ``slm pretrain`` is asked to do and what it did; torch-free, so ``slm --help`` imports it cheaply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from slm.errors import ConfigError

OBJECTIVES = ("mlm", "simcse")


@dataclass
class PretrainConfig:
    """How a pre-training run goes. Defaults fit a few minutes on a 2-core CPU."""

    objective: str = "mlm"
    max_minutes: float | None = 8.0
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    mask_probability: float = 0.15
    max_length: int = 128
    warmup_ratio: float = 0.06
    head_warmup_ratio: float = 0.1
    temperature: float = 0.05
    seed: int = 42
    threads: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}"),
            (self.max_minutes is None or self.max_minutes > 0, "max minutes must be positive"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 2, "batch size must be at least 2"),
            (self.learning_rate > 0 and self.head_learning_rate > 0, "learning rates must be positive"),
            (0 < self.mask_probability < 1, "mask probability must be between 0 and 1"),
            (self.max_length >= 8, "max length must be at least 8 tokens"),
            (0 <= self.warmup_ratio < 1 and 0 <= self.head_warmup_ratio < 1, "warm-up ratios must be in [0, 1)"),
            (self.temperature > 0, "temperature must be positive"),
            (self.threads is None or self.threads >= 1, "threads must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class PretrainResult:
    """What a run did, recorded as ``slm_pretrain.json`` in the written directory."""

    objective: str
    base_model: str
    texts: int
    held_out: int
    steps: int
    epochs: float
    seconds: float
    held_out_loss_before: float
    held_out_loss_after: float
    head_initialised: bool
    stopped_by_budget: bool
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
