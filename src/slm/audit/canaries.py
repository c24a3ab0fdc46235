"""Canaries (Carlini et al., "The Secret Sharer", 2019): secrets planted in training data, and their exposure.

A canary is a text made from a template and a random secret ("my account pin is 402913"), given a label
and repeated ``repetitions`` times in the training frame. After training, the model's loss on the
canary's text with its true secret is ranked among the losses of the same template filled with other
secrets from the candidate space: a model that memorised the secret gives it a lower loss than almost
every other candidate. Exposure = log2(|candidates|) - log2(rank). The rank is estimated from a uniform
sample of candidates: scoring a 10,000 sample took 90-140 s with MiniLM on 2 busy cores (bench/privacy_audit.py),
so all 10^6 six-digit secrets would take hours. The exposure a sample can show is at most log2(sample size + 1):
:func:`exposure` says so.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slm.errors import ConfigError

DEFAULT_TEMPLATE = "my account pin is {secret}"
SPEC_FORMAT = "slm-canaries"


@dataclass(frozen=True)
class Canary:
    """One planted secret: its text is ``template.format(secret=secret)``, trained as ``label``."""

    secret: str
    label: str
    repetitions: int


@dataclass(frozen=True)
class CanarySpec:
    """What was planted, as saved to a JSON file for ``slm audit privacy --canaries``."""

    template: str
    alphabet: str
    length: int
    canaries: list[Canary] = field(default_factory=list)
    seed: int = 0

    @property
    def candidate_space(self) -> int:
        """Number of possible secrets: |alphabet| ** length."""
        return len(self.alphabet) ** self.length

    def text(self, secret: str) -> str:
        return self.template.format(secret=secret)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "template": self.template,
            "alphabet": self.alphabet,
            "length": self.length,
            "candidate_space": self.candidate_space,
            "seed": self.seed,
            "canaries": [asdict(c) for c in self.canaries],
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "canary spec") -> CanarySpec:
        """A spec from its JSON form; ConfigError (one line) naming what is wrong."""
        try:
            if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
                raise ValueError(f'not an slm canary spec (no "format": "{SPEC_FORMAT}")')
            canaries = [
                Canary(secret=str(c["secret"]), label=str(c["label"]), repetitions=int(c["repetitions"]))
                for c in data["canaries"]
            ]
            spec = cls(
                template=str(data["template"]),
                alphabet=str(data["alphabet"]),
                length=int(data["length"]),
                canaries=canaries,
                seed=int(data.get("seed", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            problem = exc if isinstance(exc, ValueError) else f"missing or bad field {exc}"
            raise ConfigError(f"{source}: {problem}") from None
        _check_template(spec.template)
        if not spec.canaries:
            raise ConfigError(f"{source}: it lists no canaries")
        return spec

    def save(self, path: str | Path) -> Path:
        from slm.fileio import write_text_atomic

        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path


def load_spec(path: str | Path) -> CanarySpec:
    """Read a canary spec file written by :meth:`CanarySpec.save`; ConfigError if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"canary spec {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"canary spec {path} is not readable JSON: {exc}") from None
    return CanarySpec.from_json(data, source=f"canary spec {path}")


def _check_template(template: str) -> None:
    if template.count("{secret}") != 1 or template.replace("{secret}", "").count("{") > 0:
        raise ConfigError(f"a canary template holds '{{secret}}' once and no other braces, got {template!r}")


def random_secrets(rng: np.random.Generator, n: int, alphabet: str, length: int) -> list[str]:
    """``n`` secrets drawn uniformly (with replacement) from the candidate space."""
    picks = rng.integers(0, len(alphabet), size=(n, length))
    return ["".join(alphabet[i] for i in row) for row in picks]


def plant(
    frame: pd.DataFrame,
    n_canaries: int,
    *,
    repetitions: int | Sequence[int] = 10,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
    alphabet: str = string.digits,
    length: int = 6,
    text_col: str = "text",
    label_col: str = "label",
    seed: int = 0,
) -> tuple[pd.DataFrame, CanarySpec]:
    """``frame`` with ``n_canaries`` secret texts added (each ``repetitions`` times), and their spec.

    Each canary gets a distinct random secret and a label drawn from ``labels`` (default: the frame's
    labels), so that only memorising the secret can tie the text to its label: the template alone
    points at no label. ``repetitions`` is one count for all, or one per canary (exposure grows with
    it). The rows are shuffled into the frame, so batches mix them with real data. Same seed, same
    frame: same result.
    """
    _check_template(template)
    if n_canaries < 1:
        raise ConfigError(f"plant at least one canary, got {n_canaries}")
    reps = [int(repetitions)] * n_canaries if isinstance(repetitions, int) else [int(r) for r in repetitions]
    if len(reps) != n_canaries or min(reps) < 1:
        raise ConfigError("give one repetition count (>= 1) for all canaries or one per canary")
    for col in (text_col, label_col):
        if col not in frame.columns:
            raise ConfigError(f"the frame has no column {col!r} (it has: {', '.join(map(str, frame.columns))})")
    if len(alphabet) ** length < 100 * n_canaries:
        raise ConfigError(f"a candidate space of {len(alphabet) ** length:,} secrets is too small for canaries")
    rng = np.random.default_rng(seed)
    pool = sorted(map(str, pd.unique(frame[label_col]))) if labels is None else [str(x) for x in labels]
    if not pool:
        raise ConfigError("no labels to give the canaries")
    secrets: list[str] = []
    while len(secrets) < n_canaries:  # distinct secrets
        secrets.extend(s for s in random_secrets(rng, n_canaries, alphabet, length) if s not in secrets)
    chosen = [pool[i] for i in rng.integers(0, len(pool), size=n_canaries)]
    canaries = [Canary(s, lab, r) for s, lab, r in zip(secrets[:n_canaries], chosen, reps, strict=True)]
    rows = [
        {text_col: template.format(secret=c.secret), label_col: c.label} for c in canaries for _ in range(c.repetitions)
    ]
    planted = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
    planted = planted.iloc[rng.permutation(len(planted))].reset_index(drop=True)
    spec = CanarySpec(template=template, alphabet=alphabet, length=length, canaries=canaries, seed=seed)
    return planted, spec


@dataclass(frozen=True)
class Exposure:
    """A canary's exposure, estimated from ``sampled`` candidates of a space of ``space`` secrets."""

    exposure: float
    rank: float  # estimated rank of the true secret in the whole candidate space (1 = lowest loss)
    rank_in_sample: float  # 1 + candidates with a lower loss (+ half the ties)
    sampled: int
    space: int
    loss: float  # the true secret's loss

    @property
    def ceiling(self) -> float:
        """The largest exposure a sample of this size can show: log2(sampled + 1)."""
        return math.log2(self.sampled + 1)


def exposure(secret_loss: float, candidate_losses: Sequence[float] | np.ndarray, space: int) -> Exposure:
    """Exposure of a secret with loss ``secret_loss`` among a uniform sample of other candidates' losses.

    Its rank among the sample plus itself is 1 + (candidates with lower loss) + half the ties; scaled to the
    whole space, rank ~ rank_in_sample * space / (sampled + 1), so exposure = log2(space) - log2(rank)
    = log2((sampled + 1) / rank_in_sample): 0 when every candidate beats the secret, log2(sampled + 1)
    when none does (the estimate cannot resolve more).
    """
    losses = np.asarray(candidate_losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError("exposure needs a non-empty 1-D sample of candidate losses")
    lower = float(np.sum(losses < secret_loss))
    ties = float(np.sum(losses == secret_loss))
    rank_in_sample = 1.0 + lower + 0.5 * ties
    value = math.log2((losses.size + 1) / rank_in_sample)
    rank = rank_in_sample * space / (losses.size + 1)
    return Exposure(value, rank, rank_in_sample, int(losses.size), int(space), float(secret_loss))
