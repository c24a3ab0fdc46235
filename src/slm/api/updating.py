"""``slm update``: learn from feedback after deployment, promoting the new bundle only when it earns it."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Manifest
from slm.errors import BundleError, ConfigError
from slm.fileio import claim_output_folder, remove_output_folder

if TYPE_CHECKING:
    from slm.data.dataset import TextDataset
    from slm.training.gate import Comparison, UpdateOptions

__all__ = ["UpdateOutcome", "update"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateOutcome:
    """A promoted update: where it is, the comparison that let it through, and what it learnt."""

    path: Path
    manifest: Manifest
    comparison: Comparison
    new_labels: list[str]
    feedback_rows: int
    seconds: float
    previous: Path | None  # where the replaced bundle was kept (``slm rollback`` restores it)


def update(
    bundle: str | Path,
    *,
    feedback: str | Path,
    output: str | Path,
    data: str | Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    model: str | None = None,
    options: UpdateOptions | None = None,
    show_progress: bool = True,
) -> UpdateOutcome:
    """Train ``bundle`` further on ``feedback`` (a feedback database URL or a corrections file) and promote it.

    ``data``: more labelled texts to learn from. New labels grow the model. The candidate is compared with
    ``bundle`` on its original test split and on a held-out slice of the feedback, and promoted to
    ``output`` only when the feedback slice improves and the test split loses at most
    ``options.tolerance`` points; otherwise :class:`slm.training.update.GateRefused` (one line, both
    numbers) and nothing changes. When ``bundle`` was exported to ONNX (and quantized to int8), the
    candidate is exported (and quantized, behind ``slm compress``'s gate) the same way. ``output`` may be
    ``bundle`` itself: the bundle a server watches is then replaced in one step and the old one kept beside
    it (``<output>.previous``) for ``slm rollback``.
    """
    from slm.training.gate import UpdateOptions

    options = (options or UpdateOptions()).validated()  # before any file is read
    bundle, output = Path(bundle), Path(output)
    parent = read_manifest(bundle)
    if parent.privacy is not None:
        raise ConfigError(
            f"{bundle} was trained with differential privacy and slm update trains without it (the replayed "
            "original data would lose its guarantee): train again with --dp-epsilon on the new data"
        )
    if output.resolve() != bundle.resolve():
        claim_output_folder(output)
    labelled = _feedback_dataset(feedback, model)
    more = _more_data(data, text_col, label_col)
    weights = trainable_source(bundle, parent)
    output.resolve().parent.mkdir(parents=True, exist_ok=True)
    from slm.pipeline import checkpoint_dir_for
    from slm.training.update import run_update  # PyTorch: only once the input is known to be good

    with tempfile.TemporaryDirectory(prefix=".slm-update-", dir=output.resolve().parent) as tmp:
        candidate = Path(tmp) / "candidate"
        result = run_update(
            bundle, labelled, candidate, more=more, weights=weights, options=options,
            show_progress=show_progress,
        )  # fmt: skip
        remove_output_folder(checkpoint_dir_for(candidate))
        final = _derive_like_parent(candidate, parent, Path(tmp))
        previous = _promote(final, output)
    log.info(f"promoted to {output}" + (f" (the replaced bundle is kept at {previous})" if previous else ""))
    return UpdateOutcome(
        output, read_manifest(output), result.comparison, result.new_labels, len(labelled), result.seconds, previous
    )


def _feedback_dataset(source: str | Path, model: str | None) -> TextDataset:
    from slm.data.dataset import TextDataset
    from slm.feedback import read_feedback

    records = read_feedback(source, model=model)
    if not records:
        raise ConfigError(f"no usable feedback in {source}: rows need a text and its correct label")
    return TextDataset(texts=[r.text for r in records], labels=[r.label for r in records])


def _more_data(data: str | Path | None, text_col: str | None, label_col: str | None) -> TextDataset | None:
    if data is None:
        return None
    from slm.pipeline import DataSource

    ds, _ = DataSource(data, text_col, label_col, None, None).load(min_classes=1)
    if ds.multi_label:
        raise ConfigError(f"{data}: slm update learns single-label data (one label per row)")
    return ds


def trainable_source(bundle: Path, manifest: Manifest) -> Path:
    """The bundle whose PyTorch weights the update starts from: ``bundle``, or for an ONNX-only bundle
    (int8) the nearest ancestor in its lineage that still has them."""
    spec = manifest.components.transformer
    if spec is not None and (bundle / spec.weights).is_file():
        return bundle
    for step in reversed(manifest.lineage or []):
        ancestor = Path(step.parent) if step.parent else None
        if ancestor is None or not (ancestor / "manifest.json").is_file():
            continue
        found = read_manifest(ancestor).components.transformer
        if found is not None and (ancestor / found.weights).is_file():
            return ancestor
    raise BundleError(
        f"{bundle} has no PyTorch weights and none of the bundles it was derived from is still there: "
        "update the bundle it was derived from"
    )


def _derive_like_parent(candidate: Path, parent: Manifest, tmp: Path) -> Path:
    """Export (and quantize) the PyTorch candidate as the parent was, so the runtime serves it the same way."""
    onnx = parent.components.onnx
    if onnx is None:
        return candidate
    from slm.api.compressing import QUANTIZE_MODES, compress, export

    if onnx.precision not in ("int8", "int4"):
        return export(candidate, tmp / "exported").path
    quantization = (parent.compression or {}).get("quantization")
    mode = quantization.get("mode") if isinstance(quantization, dict) else None
    if mode not in QUANTIZE_MODES:
        mode = onnx.precision
    return compress(candidate, tmp / "quantized", quantize=mode).path


def _promote(final: Path, output: Path) -> Path | None:
    from slm.bundle.rollout import promote

    return promote(final, output)
