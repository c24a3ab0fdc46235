"""The Python API: every ``slm`` command is one call here, and the CLI is a thin layer over these.

``train``, ``tune``, ``evaluate`` and ``load`` (training extra), ``predict_file`` (any install that
can load the bundle), ``export``, ``export_ort`` (ONNX Runtime's mobile format), ``compress`` and ``suggest``
(training extra), ``export_web`` (a static web folder: the runtime extra, node and npm; no PyTorch), ``bench``
and ``serve`` (serve extra), ``import_feedback`` and ``export_feedback`` (serve extra), ``update`` (training
extra: learn from feedback), ``pretrain`` (training extra: domain-adaptive pre-training), ``audit_privacy``
(training extra; no PyTorch for an exported bundle), ``promote``, ``rollback`` and ``redact_file`` (core
install). Each is imported on first use from its own module, so
``import slm.api`` stays cheap and an install without PyTorch can still call ``predict_file`` or ``serve``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slm.api.auditing import audit_privacy
    from slm.api.benchmarking import bench
    from slm.api.compressing import compress, export, export_ort
    from slm.api.feedback import export_feedback, import_feedback
    from slm.api.predicting import PredictionRun, predict_file
    from slm.api.pretraining import pretrain
    from slm.api.redacting import RedactionRun, redact_file
    from slm.api.rollout import Rollout, promote, rollback
    from slm.api.serving import serve
    from slm.api.suggesting import SuggestRun, suggest
    from slm.api.training import Bundle, evaluate, load, train, tune
    from slm.api.updating import UpdateOutcome, update
    from slm.api.web import export_web

__all__ = [
    "Bundle", "PredictionRun", "RedactionRun", "Rollout", "SuggestRun", "UpdateOutcome", "audit_privacy", "bench",
    "compress", "evaluate", "export", "export_feedback", "export_ort", "export_web", "import_feedback", "load",
    "predict_file", "pretrain", "promote", "redact_file", "rollback", "serve", "suggest", "train", "tune", "update",
]  # fmt: skip

_HOMES = {
    "audit_privacy": "auditing",
    "update": "updating", "UpdateOutcome": "updating",
    "Bundle": "training", "evaluate": "training", "load": "training", "train": "training", "tune": "training",
    "PredictionRun": "predicting", "predict_file": "predicting", "export": "compressing", "compress": "compressing",
    "bench": "benchmarking", "serve": "serving", "import_feedback": "feedback", "export_feedback": "feedback",
    "Rollout": "rollout", "promote": "rollout", "rollback": "rollout", "suggest": "suggesting",
    "export_ort": "compressing", "SuggestRun": "suggesting", "redact_file": "redacting", "RedactionRun": "redacting",
    "export_web": "web", "pretrain": "pretraining",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'slm.api' has no attribute {name!r}")
    return getattr(importlib.import_module(f"slm.api.{home}"), name)
