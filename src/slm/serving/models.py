"""The bundles a server answers for: loading, warming, summarising, reloading and decoding."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from slm.bundle.schema import Digest
from slm.errors import BundleError
from slm.runtime import Bundle
from slm.runtime import load as load_runtime

WARMUP_TEXT = "warm up the model with a sentence of ordinary length, about as long as a question"


@dataclass(frozen=True)
class LoadedBundle:
    """One loaded version of a bundle: what predicted a batch, so its rows are read with its labels."""

    bundle: Bundle
    signature: tuple[int, int, int] | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @cached_property
    def version(self) -> str:
        """A short id of this version: the start of its manifest digest (every answer names the version)."""
        return model_version(self.bundle.path, self.bundle.manifest.manifest_digest)

    @cached_property
    def thresholds(self) -> np.ndarray | None:
        """Per-label decision thresholds of a multi-label bundle (read once, not per request)."""
        return self.bundle.thresholds() if self.bundle.multi_label else None


def model_version(root: Path, digest: Digest | None) -> str:
    """12 hex digits naming a bundle version: its manifest digest's, else the manifest file's sha256 (version 1)."""
    if digest is not None:
        return digest.value[:12]
    return hashlib.sha256((Path(root) / "manifest.json").read_bytes()).hexdigest()[:12]


def manifest_signature(path: Path) -> tuple[int, int, int] | None:
    """Identity of a bundle's manifest on disk (inode, mtime, size); None while it is absent."""
    try:
        stat = os.stat(Path(path) / "manifest.json")
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def load_bundle(path: Path, *, threads: int, max_batch: int, backend: str | None = None) -> LoadedBundle:
    """Open and verify ``path`` for torch-free serving and run it once, so load errors surface now."""
    signature = manifest_signature(path)
    bundle = load_runtime(path, threads=threads, backend=backend)
    loaded = LoadedBundle(bundle, signature)
    warm_up(loaded, max_batch)
    _ = loaded.version  # now, while the folder holds this version (a version-1 bundle reads its manifest file)
    return loaded


def warm_up(loaded: LoadedBundle, max_batch: int) -> None:
    """Run one text and one full batch, so the first requests pay no allocation or lazy-load cost."""
    try:
        loaded.bundle.predict_proba([WARMUP_TEXT])
        loaded.bundle.predict_proba([WARMUP_TEXT] * max_batch, batch_size=max_batch)
    except BundleError:
        raise
    except Exception as exc:  # onnxruntime / tokenizers raise their own types
        raise BundleError(f"{loaded.bundle.path}: the model fails to run: {type(exc).__name__}: {exc}") from None


def summary(name: str, loaded: LoadedBundle) -> dict[str, Any]:
    """What ``GET /v1/models`` says about a model: the manifest's facts, never its paths."""
    manifest = loaded.bundle.manifest
    onnx = manifest.components.onnx
    # Inside the free-form compression record, read defensively: never a 500.
    quantization = (manifest.compression or {}).get("quantization")
    recipe = quantization.get("recipe") if isinstance(quantization, dict) else None
    recipe = recipe if isinstance(recipe, dict) else {}
    component = loaded.bundle.default_component
    return {
        "name": name,
        "version": loaded.version,
        "task": loaded.bundle.task,
        "labels": loaded.labels,
        "num_labels": len(loaded.labels),
        "component": component,
        "backend": "static" if component == "static" else loaded.bundle.backend,
        "precision": onnx.precision if onnx is not None else None,
        "quantization": recipe.get("name"),
        "base_model": manifest.base_model_name or None,
        "lineage": [step.step for step in manifest.lineage or []],
        "created": manifest.created,
        "metrics": manifest.metrics,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded.loaded_at)),
    }


def decode_rows(
    proba: np.ndarray, loaded: LoadedBundle, *, top_k: int, with_probabilities: bool
) -> list[dict[str, Any]]:
    """Predictions for rows of probabilities: label(s), score, the top-k labels and optionally all."""
    labels = loaded.labels
    thresholds = loaded.thresholds
    k = min(top_k, len(labels))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    out = []
    for row, best in zip(proba, order, strict=True):
        top = [{"label": labels[i], "score": round(float(row[i]), 6)} for i in best]
        if thresholds is None:
            label: str | list[str] = top[0]["label"]
        else:
            label = [labels[i] for i in np.flatnonzero(row >= thresholds)]
        item: dict[str, Any] = {"label": label, "score": top[0]["score"], "top_k": top}
        if with_probabilities:
            item["probabilities"] = {name: round(float(p), 6) for name, p in zip(labels, row, strict=True)}
        out.append(item)
    return out
