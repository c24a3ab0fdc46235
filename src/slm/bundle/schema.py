"""The structure of ``manifest.json``: one hand-written check, so a malformed manifest is refused in one line.

Loading code indexes the manifest directly (``manifest["components"]["onnx"]["file"]``); without this
check a wrong type or a missing key surfaces later as a KeyError or TypeError ("internal error", or a
500 from the server). The check is deliberately small and in one place (no schema library: the core
install stays numpy, tokenizers, safetensors, typer and rich) so it can be swapped for a typed schema.
It covers what loading, predicting, serving and ``slm info`` read; unknown keys are allowed, since
other bundle kinds (support assistant, recommender) add their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slm.errors import BundleError

DIGEST_KEY = "manifest_digest"
DIGEST_ALGORITHMS = ("sha256", "hmac-sha256")
CLASSIFIER_TASKS = ("single_label", "multi_label")
# Component spec keys that name a file or folder. In a spec with a "dir", the others are relative to it
# (the static tier: dir "static", tokenizer "tokenizer.json"); otherwise relative to the bundle folder.
DIR_KEY = "dir"
FILE_KEYS = ("file", "tokenizer", "config", "weights", "embeddings", "head")
# What the loaders of each known component read without a default.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "transformer": ("tokenizer", "config", "weights", "max_length"),
    "onnx": ("file", "tokenizer", "max_length"),
    "ngram": ("dir",),
    "static": ("dir",),
    "intent": ("file", "tokenizer", "max_length", "outputs", "dim"),
    "retriever": ("file", "tokenizer", "max_length", "outputs", "dim"),
    "item_encoder": ("file", "tokenizer", "max_length", "outputs", "dim"),
    "scope": ("file",),
    "knowledge": ("dir",),
}
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# Optional top-level fields and the JSON types they may have.
OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "created": (str,),
    "slm_version": (str,),
    "default_component": (str,),
    "base_model": (dict, str, type(None)),
    "metrics": (dict, type(None)),
    "training": (dict, type(None)),
    "data": (dict, type(None)),
    "compression": (dict, type(None)),
    "recommendation": (dict, str, type(None)),
    "lineage": (list,),
    "thresholds": (dict,),
    "ensemble": (dict,),
}
JSON_TYPE: dict[type, str] = {dict: "an object", list: "a list", str: "a string", type(None): "null", int: "an integer"}


class Malformed(Exception):
    """One structural problem, described for the user (turned into a BundleError by :func:`validate`)."""


def validate(root: Path, manifest: Mapping[str, Any]) -> None:
    """Raise BundleError naming the first structural problem of ``manifest`` (read from bundle ``root``)."""
    try:
        check(manifest)
    except Malformed as exc:
        raise BundleError(
            f"{root}: manifest.json is malformed: {exc} (restore the bundle from its source or rebuild it)"
        ) from None


def check(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`Malformed` for the first field with a wrong type, a missing key or an impossible value."""
    _expect(manifest, "task", (str,), required=True)
    if not manifest["task"]:
        raise Malformed("'task' is empty")
    _check_files(manifest.get("files"))
    _check_components(manifest.get("components"))
    for key, types in OPTIONAL_TYPES.items():
        _expect(manifest, key, types)
    labels = _check_labels(manifest)
    _check_lineage(manifest.get("lineage", []))
    if labels is not None:
        _check_ensemble(manifest.get("ensemble"), len(labels))
        _check_thresholds(manifest.get("thresholds", {}), len(labels))
    if manifest.get("format_version", 1) >= 2 or DIGEST_KEY in manifest:
        _check_digest(manifest.get(DIGEST_KEY))


def component_paths(spec: Mapping[str, Any]) -> list[str]:
    """The bundle-relative paths a (checked) component spec names: its folder and the files in it."""
    folder = spec.get(DIR_KEY)
    paths = [folder] if folder is not None else []
    prefix = f"{folder}/" if folder is not None else ""
    paths += [prefix + spec[key] for key in FILE_KEYS if key in spec]
    return paths


# ---------------------------------------------------------------------- the parts
def _expect(
    record: Mapping[str, Any], key: str, types: tuple[type, ...], *, required: bool = False, where: str = ""
) -> None:
    if key not in record:
        if required:
            raise Malformed(f"'{where}{key}' is missing")
        return
    value = record[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        wanted = " or ".join(JSON_TYPE.get(t, t.__name__) for t in types)
        raise Malformed(f"'{where}{key}' must be {wanted}, not {_describe(value)}")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    for kind, name in JSON_TYPE.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _check_files(files: object) -> None:
    if not isinstance(files, dict):
        raise Malformed(f"'files' must be an object listing every file's sha256, not {_describe(files)}")
    if not files:
        raise Malformed("'files' lists no files")
    for rel, digest in files.items():
        if not rel:
            raise Malformed("'files' lists an empty path")
        if not isinstance(digest, str) or not HEX_SHA256.fullmatch(digest):
            raise Malformed(f"'files' gives {rel} a hash that is not a sha256 (64 lowercase hex digits)")


def _check_components(components: object) -> None:
    if not isinstance(components, dict):
        raise Malformed(f"'components' must be an object, not {_describe(components)}")
    for name, spec in components.items():
        if not isinstance(spec, dict):
            raise Malformed(f"component '{name}' must be an object, not {_describe(spec)}")
        where = f"components.{name}."
        for key in REQUIRED_KEYS.get(name, ()):
            if key not in spec:
                raise Malformed(f"'{where}{key}' is missing")
        for key in (DIR_KEY, *FILE_KEYS):
            _expect(spec, key, (str,), where=where)
            if spec.get(key) == "":
                raise Malformed(f"'{where}{key}' is empty")
        if "max_length" in spec:
            _expect(spec, "max_length", (int,), where=where)
            if spec["max_length"] < 1:
                raise Malformed(f"'{where}max_length' must be at least 1")
        if "outputs" in spec and not (
            isinstance(spec["outputs"], list) and spec["outputs"] and all(isinstance(o, str) for o in spec["outputs"])
        ):
            raise Malformed(f"'{where}outputs' must be a non-empty list of output names")
        if "dim" in spec:
            _expect(spec, "dim", (int,), where=where)


def _check_labels(manifest: Mapping[str, Any]) -> list[str] | None:
    if "labels" not in manifest:
        if manifest["task"] in CLASSIFIER_TASKS:
            raise Malformed("'labels' is missing")
        return None
    labels = manifest["labels"]
    if not isinstance(labels, list) or not labels:
        raise Malformed(f"'labels' must be a non-empty list of names, not {_describe(labels)}")
    if not all(isinstance(label, str) and label for label in labels):
        raise Malformed("'labels' must hold non-empty strings only")
    if len(set(labels)) != len(labels):
        duplicate = next(label for label in labels if labels.count(label) > 1)
        raise Malformed(f"'labels' names '{duplicate}' twice")
    return labels


def _check_lineage(lineage: list[Any]) -> None:
    for step in lineage:
        if not isinstance(step, dict) or not isinstance(step.get("step"), str):
            raise Malformed("every 'lineage' entry must be an object with a 'step' name")


def _numbers(values: object, count: int) -> bool:
    """A list of ``count`` finite numbers."""
    return (
        isinstance(values, list)
        and len(values) == count
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )


def _check_ensemble(ensemble: object, n_labels: int) -> None:
    if not isinstance(ensemble, dict):
        return  # absent (None) or already refused by its type check
    weight = ensemble.get("transformer_weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
        raise Malformed("'ensemble.transformer_weight' must be a number from 0 to 1")
    shift = ensemble.get("log_prior_shift")
    if shift is not None and not _numbers(shift, n_labels):
        raise Malformed(f"'ensemble.log_prior_shift' must be null or {n_labels} numbers, one per label")


def _check_thresholds(thresholds: dict[str, Any], n_labels: int) -> None:
    for component, values in thresholds.items():
        if values is not None and not _numbers(values, n_labels):
            raise Malformed(f"'thresholds.{component}' must be {n_labels} numbers, one per label")


def _check_digest(digest: object) -> None:
    if not isinstance(digest, dict):
        raise Malformed(f"'{DIGEST_KEY}' must be an object with 'algorithm' and 'value', not {_describe(digest)}")
    if digest.get("algorithm") not in DIGEST_ALGORITHMS:
        raise Malformed(f"'{DIGEST_KEY}.algorithm' must be one of {', '.join(DIGEST_ALGORITHMS)}")
    value = digest.get("value")
    if not isinstance(value, str) or not HEX_SHA256.fullmatch(value):
        raise Malformed(f"'{DIGEST_KEY}.value' must be 64 lowercase hex digits")
