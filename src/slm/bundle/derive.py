"""Derive a new bundle from an existing one: copy, change, re-hash, swap in atomically."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm.bundle.manifest import now_iso, read_manifest, write_manifest
from slm.bundle.schema import ComponentSpec, LineageStep, Manifest
from slm.errors import ConfigError
from slm.fileio import atomic_directory

if TYPE_CHECKING:
    from slm.data.dataset import TextDataset


def derive_bundle(
    parent: str | Path,
    output: str | Path,
    change: Callable[[Path, Manifest], Manifest],
    *,
    drop: Iterable[str] = (),
    step: str,
) -> Manifest:
    """Copy ``parent`` into a staging directory, let ``change(staging, manifest)`` edit it, then swap.

    ``drop`` lists top-level files or folders of the parent not to copy (e.g. ``"model"``). ``change``
    returns the new manifest; file hashes are recomputed and ``lineage`` gains ``step``. The
    previous bundle at ``output`` survives any failure, and a folder there holding files slm did not write is
    refused (:func:`slm.fileio.claim_output_folder`; commands check it before their long work).
    """
    parent, output = Path(parent), Path(output)
    manifest = read_manifest(parent)
    if output.resolve() == parent.resolve():
        raise ConfigError(f"output {output} is the input bundle: choose a new directory")
    dropped = set(drop)
    with atomic_directory(output) as staging:
        for rel in manifest.files:  # the parent's verified files only: nothing a user put beside them
            if Path(rel).parts[0] in dropped:
                continue
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(parent / rel, staging / rel)
        digest = manifest.manifest_digest.value if manifest.manifest_digest is not None else None
        step_record = LineageStep(
            step=step, parent=str(parent.resolve()), parent_created=manifest.created, parent_digest=digest
        )
        manifest = replace(manifest, lineage=[*(manifest.lineage or []), step_record], created=now_iso())
        manifest = change(staging, manifest)
        return write_manifest(staging, manifest)


def _roots(spec: ComponentSpec) -> set[str]:
    """Top-level files or folders a component spec points into."""
    return {Path(p).parts[0] for p in spec.paths() if not Path(p).is_absolute()}


def drop_components(staging: Path, manifest: Manifest, *, keep: set[str]) -> list[str]:
    """Remove every component not in ``keep`` from ``manifest`` and its files from ``staging``.

    A derived model replaces its parent's: a component left over from the parent (an ONNX export,
    the PyTorch weights) would silently serve the old model. Files a kept component still uses
    (such as a shared ``tokenizer/``) stay.
    """
    components = manifest.components
    in_use = set().union(*(_roots(spec) for name, spec in components.items() if name in keep))
    dropped = sorted(name for name in components.names() if name not in keep)
    for name in dropped:
        spec = components.remove(name)
        for root in (_roots(spec) if spec is not None else set()) - in_use - {"manifest.json"}:
            target = staging / root
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return dropped


def replace_metrics(manifest: Manifest, validation: dict[str, Any]) -> None:
    """Make ``validation`` the derived model's metrics; keep the parent's under ``parent_<split>``.

    The parent's recommendation judged the parent, so it goes (``slm evaluate`` makes a fresh one).
    """
    old = manifest.metrics or {}
    metrics = {"evaluated_on": "validation", "validation": validation}
    evaluated = old.get("evaluated_on")
    if evaluated and isinstance(old.get(evaluated), dict):
        metrics[f"parent_{evaluated}"] = old[evaluated]
    manifest.metrics = metrics
    manifest.recommendation = None


def training_data_record(
    source: str | Path, train: TextDataset, validation: TextDataset, val_size: float, seed: int
) -> dict[str, Any]:
    """Where a derived model's training data came from: path, fingerprint, split sizes and seed."""
    return {
        "source": str(source),
        "fingerprint": train.fingerprint(),
        "n_train": len(train),
        "n_validation": len(validation),
        "val_size": val_size,
        "seed": seed,
    }
