"""Confusion-matrix plot that stays readable with many classes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from slm.fileio import write_bytes_atomic  # noqa: E402
from slm.reports.fonts import use_cjk_fallback  # noqa: E402

MAX_TICK_LABELS = 100


def _row_normalise(confusion: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row divided by its sum (rows of zeros stay zero)."""
    cm = np.asarray(confusion, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def _layout(k: int) -> tuple[float, float]:
    """(figure side in inches, tick font size) for k classes."""
    side = float(np.clip(4.0 + 0.16 * k, 6.0, 26.0))
    font = float(np.clip(360.0 / max(k, 1), 3.0, 10.0))
    return side, font


def _draw(cm: np.ndarray, label_names: list[str], title: str):
    k = cm.shape[0]
    side, font = _layout(k)
    use_cjk_fallback([title, *map(str, label_names)])
    fig, ax = plt.subplots(figsize=(side, side * 0.92), constrained_layout=True)
    image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class")
    ax.set_title(title)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if k <= MAX_TICK_LABELS and len(label_names) == k:
        ax.set_xticks(range(k), [str(x) for x in label_names], rotation=90, fontsize=font)
        ax.set_yticks(range(k), [str(x) for x in label_names], fontsize=font)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if k <= 20:
        for (i, j), v in np.ndenumerate(cm):
            if v > 0:
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if v > 0.6 else "black",
                )
    return fig


def plot_confusion(confusion: Sequence[Sequence[int]], label_names: list[str], path: Path, title: str) -> Path:
    """Save a row-normalised confusion matrix as PNG at ``path`` (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _draw(_row_normalise(confusion), list(label_names), title)
    return _save_png(fig, path)


def plot_roc(curves: dict[str, tuple[Sequence[float], Sequence[float], float]], path: Path, title: str) -> Path:
    """Save ROC curves ``{name: (fpr, tpr, auc)}`` on linear and log-FPR axes as PNG at ``path`` (atomically).

    The log axis shows the low-FPR region where a membership attack's few confident hits live
    (Carlini et al. 2022); the linear one is what the AUC integrates.
    """
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    for ax, log_scale in zip(axes, (False, True), strict=True):
        for name, (fpr, tpr, auc) in curves.items():
            x, y = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
            if log_scale:
                keep = x > 0
                x, y = x[keep], y[keep]
            ax.plot(x, y, label=f"{name} (AUC {auc:.3f})", linewidth=1.4)
        grid = np.logspace(-4, 0, 50) if log_scale else np.linspace(0, 1, 50)
        ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlabel("false-positive rate (non-members called members)")
        ax.set_ylabel("true-positive rate (members found)")
        if log_scale:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
            ax.set_title("low false-positive region (log-log)")
        else:
            ax.set_title(title)
        ax.legend(fontsize=8, loc="lower right")
    return _save_png(fig, path)


def _save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to PNG in memory, close it, then write it to ``path`` atomically (no half-written file)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path
