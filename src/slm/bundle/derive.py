"""Derive a new bundle from an existing one: copy, change, re-hash, swap in atomically."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm.bundle.manifest import now_iso, read_manifest, write_manifest
from slm.errors import ConfigError
from slm.fileio import atomic_directory

if TYPE_CHECKING:
    from slm.data.dataset import TextDataset


def derive_bundle(
    parent: str | Path,
    output: str | Path,
    change: Callable[[Path, dict[str, Any]], dict[str, Any]],
    *,
    drop: Iterable[str] = (),
    step: str,
) -> dict[str, Any]:
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
        for rel in manifest["files"]:  # the parent's verified files only: nothing a user put beside them
            if Path(rel).parts[0] in dropped:
                continue
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(parent / rel, staging / rel)
        manifest = {k: v for k, v in manifest.items() if k not in {"files", "format", "format_version"}}
        lineage = list(manifest.get("lineage", []))
        lineage.append({"step": step, "parent": str(parent.resolve()), "parent_created": manifest.get("created")})
        manifest["lineage"] = lineage
        manifest["created"] = now_iso()
        manifest = change(staging, manifest)
        return write_manifest(staging, manifest)


def _roots(spec: object) -> set[str]:
    """Top-level files or folders a component spec points into."""
    values = spec.values() if isinstance(spec, dict) else [spec]
    return {Path(v).parts[0] for v in values if isinstance(v, str) and v and not Path(v).is_absolute()}


def drop_components(staging: Path, manifest: dict[str, Any], *, keep: set[str]) -> list[str]:
    """Remove every component not in ``keep`` from ``manifest`` and its files from ``staging``.

    A derived model replaces its parent's: a component left over from the parent (an ONNX export,
    the PyTorch weights) would silently serve the old model. Files a kept component still uses
    (such as a shared ``tokenizer/``) stay.
    """
    components = manifest.get("components", {})
    in_use = set().union(*(_roots(spec) for name, spec in components.items() if name in keep))
    dropped = sorted(name for name in components if name not in keep)
    for name in dropped:
        for root in _roots(components.pop(name)) - in_use - {"manifest.json"}:
            target = staging / root
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return dropped


def replace_metrics(manifest: dict[str, Any], validation: dict[str, Any]) -> None:
    """Make ``validation`` the derived model's metrics; keep the parent's under ``parent_<split>``.

    The parent's recommendation judged the parent, so it goes (``slm evaluate`` makes a fresh one).
    """
    old = manifest.get("metrics") or {}
    metrics = {"evaluated_on": "validation", "validation": validation}
    evaluated = old.get("evaluated_on")
    if evaluated and isinstance(old.get(evaluated), dict):
        metrics[f"parent_{evaluated}"] = old[evaluated]
    manifest["metrics"] = metrics
    manifest.pop("recommendation", None)


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
