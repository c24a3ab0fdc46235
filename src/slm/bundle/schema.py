"""The schema of ``manifest.json``: typed records, and the check that refuses a malformed manifest in one line.

Every part of slm reads the manifest through these records (``manifest.components.onnx.file``,
``manifest.labels``), never through dict keys, so a renamed field is a type error rather than a
KeyError at run time. The records are plain dataclasses (no schema library: the core install stays
numpy, tokenizers, safetensors, typer and rich). :func:`check` runs on the parsed JSON before any
record is built: the structural checks that name the problem as users see it, then a type check of
every typed field against its annotation, so a record's attributes hold the types they declare.

Open-ended parts stay JSON: free-form fields (``training``, ``metrics``, ``data``, ``compression``)
are ``dict[str, Any]``, and keys a record has no field for (the support and recommender apps'
sections, components of unknown kinds) are kept in its ``extra``. Serialising gives back what was
read: the same keys in the same order, explicit nulls kept; see :meth:`Record.to_json`.

:mod:`slm.bundle.manifest` reads and writes the file (digest, signature and file hashes).
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from slm.errors import BundleError

FORMAT = "slm-bundle"
# Version 2 added manifest_digest; version 1 bundles (no digest) still load, with a warning, unless a key is set.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DIGEST_KEY = "manifest_digest"
DIGEST_ALGORITHMS = ("sha256", "hmac-sha256")
CLASSIFIER_TASKS = ("single_label", "multi_label")
# Component spec keys that name a file or folder. In a spec with a "dir", the others are relative to it
# (the static tier: dir "static", tokenizer "tokenizer.json"); otherwise relative to the bundle folder.
DIR_KEY = "dir"
FILE_KEYS = ("file", "tokenizer", "config", "weights", "embeddings", "head", "openvino_ir")
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# Top-level fields with checks of their own, which run before the type check of the others (their
# messages say more); the format fields are checked by slm.bundle.manifest before this check runs.
CHECKED_APART = frozenset({"task", "files", "components", "labels", DIGEST_KEY, "format", "format_version"})
JSON_TYPE: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    type(None): "null",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
}


# ---------------------------------------------------------------------- the base record
@dataclass(kw_only=True)
class Record:
    """A JSON object with typed fields; keys without a field are kept in ``extra``.

    A field set to None is not written, unless the object was read with that key null (kept as
    read) or, for an object built in code, the field is in ``WRITE_NULL``. ``_layout`` is the
    keys' order as read (and which were null): :meth:`to_json` writes them in that order, then new
    fields in declaration order, then new ``extra`` keys. ``dataclasses.replace`` carries it over.
    """

    extra: dict[str, Any] = field(default_factory=dict)
    _layout: tuple[tuple[str, bool], ...] = field(default=(), repr=False, compare=False)

    # Optional fields a JSON null is allowed for (otherwise None means only "absent").
    NULLABLE: ClassVar[frozenset[str]] = frozenset()
    # Optional fields written as null when None, in objects built in code.
    WRITE_NULL: ClassVar[frozenset[str]] = frozenset()
    # Keys written first and last (the manifest's format fields, its file hashes and digest).
    FIRST: ClassVar[tuple[str, ...]] = ()
    LAST: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The record of a JSON object that :func:`check` accepted (nested records are built too)."""
        declared = _declared(cls)
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in declared:
                values[key] = _build(value, declared[key])
            else:
                extra[key] = cls._extra_from_json(value)
        return cls(**values, extra=extra, _layout=tuple((key, value is None) for key, value in data.items()))

    @classmethod
    def _extra_from_json(cls, value: Any) -> Any:
        return value

    def to_json(self) -> dict[str, Any]:
        """The JSON object: read keys in their order, then new fields, then new ``extra`` keys."""
        values = {name: getattr(self, name) for name in _declared(type(self))}
        was_null = dict(self._layout)
        order = dict.fromkeys([*self.FIRST, *was_null, *values, *self.extra])
        for key in self.LAST:
            order.pop(key, None)
            order[key] = None
        out: dict[str, Any] = {}
        for key in order:
            if key in values:
                value = values[key]
                if value is None and not (was_null.get(key) or (not self._layout and key in self.WRITE_NULL)):
                    continue
            elif key in self.extra:
                value = self.extra[key]
            else:
                continue  # read, then removed from extra
            out[key] = _to_json(value)
        return out


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


_DECLARED: dict[type[Record], dict[str, Any]] = {}


def _declared(cls: type[Record]) -> dict[str, Any]:
    """A record class's typed fields and their (resolved) annotations, in declaration order."""
    if cls not in _DECLARED:
        hints = typing.get_type_hints(cls)
        _DECLARED[cls] = {f.name: hints[f.name] for f in fields(cls) if f.name not in ("extra", "_layout")}
    return _DECLARED[cls]


def _required(cls: type[Record]) -> tuple[str, ...]:
    """The fields a record of ``cls`` must have (no default)."""
    declared = _declared(cls)
    return tuple(
        f.name for f in fields(cls) if f.name in declared and f.default is MISSING and f.default_factory is MISSING
    )


def _build(value: Any, annotation: Any) -> Any:
    """``value`` (checked JSON) with the records its annotation names built from their objects."""
    if value is None:
        return None
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, Record) and isinstance(value, dict):
            return member.from_json(value)
        origin = typing.get_origin(member)
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(member) or (Any,)
            return [_build(v, item) for v in value]
        if origin is dict and isinstance(value, dict) and _holds_record(member):
            _, item = typing.get_args(member)
            return {k: _build(v, item) for k, v in value.items()}
    return value


def _holds_record(annotation: Any) -> bool:
    """A ``dict[str, X]`` whose values are records (``DriftReference.confidence``): built, not kept as JSON."""
    _, item = typing.get_args(annotation) or (None, Any)
    return any(isinstance(m, type) and issubclass(m, Record) for m in _members(item))


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union annotation (``X | None`` -> ``(X, None)``), else the annotation alone."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


# ---------------------------------------------------------------------- components
@dataclass(kw_only=True)
class ComponentSpec(Record):
    """A component's entry in ``components``: the files it loads and its settings.

    This base class holds components of kinds this slm does not know (everything in ``extra``).
    """

    def value(self, key: str) -> Any:
        """A typed field, else an ``extra`` key, else None: for code that handles every kind alike."""
        if key in _declared(type(self)):
            return getattr(self, key)
        return self.extra.get(key)

    def paths(self) -> list[str]:
        """The bundle-relative paths the spec names: its folder and the files in it."""
        folder = self.value(DIR_KEY)
        paths = [folder] if folder is not None else []
        prefix = f"{folder}/" if folder is not None else ""
        return paths + [prefix + name for name in map(self.value, FILE_KEYS) if name is not None]

    def token_limit(self) -> int:
        """The component's ``max_length`` in tokens, 0 when it has none."""
        limit = self.value("max_length")
        return limit if isinstance(limit, int) else 0


@dataclass(kw_only=True)
class TransformerSpec(ComponentSpec):
    """The fine-tuned classifier's PyTorch weights (``components.transformer``)."""

    tokenizer: str
    config: str
    weights: str
    max_length: int
    pooling: str | None = None
    normalize: bool | None = None
    architecture: str | None = None
    trim_vocab: dict[str, Any] | None = None  # slm compress --trim-vocab: what was kept


@dataclass(kw_only=True)
class OnnxSpec(ComponentSpec):
    """The classifier exported to ONNX, run without PyTorch (``components.onnx``)."""

    file: str
    tokenizer: str
    max_length: int
    precision: str | None = None  # "fp32", "int8" or "int4"
    opset: int | None = None
    inputs: list[str] | None = None
    output: str | None = None
    fused_operators: dict[str, int] | None = None
    parity: dict[str, Any] | None = None  # the export's check against PyTorch
    vocabulary: dict[str, Any] | None = None  # unreachable vocabulary rows removed
    trim_vocab: dict[str, Any] | None = None
    # The engine the model was quantized for: None for ONNX Runtime, "openvino" for `slm compress --quantize
    # int8-openvino`, whose NNCF int8 model is ``openvino_ir`` (OpenVINO IR: the .xml, its weights in the .bin
    # beside it) next to the fp32 ``file``, which ONNX Runtime runs when OpenVINO is not installed.
    engine: str | None = None
    openvino_ir: str | None = None


@dataclass(kw_only=True)
class NgramSpec(ComponentSpec):
    """The TF-IDF + logistic-regression baseline (``components.ngram``)."""

    dir: str


@dataclass(kw_only=True)
class StaticSpec(ComponentSpec):
    """The static-embedding tier: model2vec embeddings and a linear head (``components.static``).

    The file names are relative to ``dir``; absent ones default to the names the static tier writes.
    """

    dir: str
    embeddings: str | None = None
    tokenizer: str | None = None
    config: str | None = None
    head: str | None = None
    dims: int | None = None
    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None


@dataclass(kw_only=True)
class EncoderSpec(ComponentSpec):
    """An app's ONNX encoder with named outputs (``intent``, ``retriever``, ``item_encoder``)."""

    file: str
    tokenizer: str
    max_length: int
    outputs: list[str]
    dim: int
    precision: str | None = None
    fused_operators: dict[str, int] | None = None
    int8_check: dict[str, Any] | None = None  # how the int8 graph compared with fp32
    base_model: str | None = None


@dataclass(kw_only=True)
class ScopeSpec(ComponentSpec):
    """The support assistant's in-scope model (``components.scope``)."""

    file: str


@dataclass(kw_only=True)
class KnowledgeSpec(ComponentSpec):
    """The support assistant's knowledge base and its index (``components.knowledge``)."""

    dir: str
    entries: int | None = None


@dataclass(kw_only=True)
class Components(Record):
    """Where each part of the bundle is. Components of other kinds are ``ComponentSpec`` in ``extra``."""

    transformer: TransformerSpec | None = None
    ngram: NgramSpec | None = None
    onnx: OnnxSpec | None = None
    static: StaticSpec | None = None
    intent: EncoderSpec | None = None
    scope: ScopeSpec | None = None
    retriever: EncoderSpec | None = None
    knowledge: KnowledgeSpec | None = None
    item_encoder: EncoderSpec | None = None

    @classmethod
    def _extra_from_json(cls, value: Any) -> Any:
        return ComponentSpec.from_json(value)

    def items(self) -> Iterator[tuple[str, ComponentSpec]]:
        """Every component present, by name (typed kinds in declaration order, then others)."""
        for name in _declared(type(self)):
            spec = getattr(self, name)
            if spec is not None:
                yield name, spec
        for name, spec in self.extra.items():
            if isinstance(spec, ComponentSpec):
                yield name, spec

    def names(self) -> list[str]:
        """The names of the components present."""
        return [name for name, _ in self.items()]

    def get(self, name: str) -> ComponentSpec | None:
        """The component ``name`` (for code that picks one by name), None if absent."""
        if name in _declared(type(self)):
            spec: ComponentSpec | None = getattr(self, name)
            return spec
        found = self.extra.get(name)
        return found if isinstance(found, ComponentSpec) else None

    def remove(self, name: str) -> ComponentSpec | None:
        """Take component ``name`` out; returns it (None if absent)."""
        spec = self.get(name)
        if name in _declared(type(self)):
            setattr(self, name, None)
        else:
            self.extra.pop(name, None)
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


# The known component kinds and the keys their loaders need (a spec class's fields without a default).
KINDS: dict[str, type[ComponentSpec]] = {
    name: next(m for m in _members(annotation) if m is not type(None))
    for name, annotation in _declared(Components).items()
}


def required_keys(kind: str) -> tuple[str, ...]:
    """The keys a component of ``kind`` must have (none for kinds this slm does not know)."""
    spec = KINDS.get(kind)
    return _required(spec) if spec is not None else ()


# ---------------------------------------------------------------------- the other parts
@dataclass(kw_only=True)
class BaseModelRef(Record):
    """The pretrained model a classifier was fine-tuned from."""

    name: str | None = None
    source: str | None = None  # "package", "directory" or "hub"
    sha256: dict[str, str] | None = None  # of its weight files


@dataclass(kw_only=True)
class Ensemble(Record):
    """How the transformer's and the n-gram baseline's probabilities are combined."""

    transformer_weight: float
    log_prior_shift: list[float] | None = None  # per label, added to the combined log-probabilities
    chosen_on: str | None = None

    NULLABLE = frozenset({"log_prior_shift"})
    WRITE_NULL = frozenset({"log_prior_shift"})


@dataclass(kw_only=True)
class LineageStep(Record):
    """One derivation step (``export``, ``quantize``, ``prune``, ``static``...) and the bundle it started from."""

    step: str
    parent: str | None = None
    parent_created: str | None = None
    # The parent's manifest_digest value: a path can be reused, the digest names exactly one version (what
    # `slm rollback` restores). Absent in manifests written before it was recorded.
    parent_digest: str | None = None

    NULLABLE = frozenset({"parent_created", "parent_digest"})
    WRITE_NULL = frozenset({"parent_created"})


@dataclass(kw_only=True)
class ConfidenceProfile(Record):
    """How sure one component was of its top label on the validation split (the server's drift reference).

    ``quantiles`` holds the top probability at percentiles 0, 1, ..., 100, so the share of texts under any
    threshold can be read back (:func:`slm.bundle.drift_reference.rate_below`).
    """

    texts: int
    mean: float
    std: float
    quantiles: list[float]
    low_threshold: float
    low_rate: float


@dataclass(kw_only=True)
class DriftReference(Record):
    """What "in distribution" looks like for this model: the training label counts and, per component, the
    confidence profile on validation (written by training and ``slm update``; copied by export and compress)."""

    label_counts: dict[str, int]
    confidence: dict[str, ConfidenceProfile]
    source: str | None = None  # "training", "update", ...


@dataclass(kw_only=True)
class Privacy(Record):
    """The differential-privacy guarantee of the training run (``slm train --dp-epsilon``), as accounted.

    ``epsilon_spent`` (at ``delta``) is what the accountant measured over the ``steps`` noisy steps actually
    taken; it is at most ``epsilon_target``. Absent for bundles trained without differential privacy.
    """

    dp: bool
    epsilon_target: float
    epsilon_spent: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str
    recipe: str
    mechanism: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    n_train: int | None = None
    not_private: list[str] | None = None  # what the bundle holds that the guarantee does not cover


@dataclass(kw_only=True)
class Digest(Record):
    """``manifest_digest``: sha256 of the canonical manifest, or its HMAC-SHA256 with the bundle key."""

    algorithm: str
    value: str


@dataclass(kw_only=True)
class Manifest(Record):
    """A bundle's ``manifest.json``.

    Classifier bundles have ``labels``; app bundles (support assistant, recommender) keep their own
    sections in ``extra``. ``files`` and ``manifest_digest`` are set by
    :func:`slm.bundle.manifest.write_manifest`.
    """

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    slm_version: str | None = None
    created: str | None = None
    task: str
    labels: list[str] | None = None
    base_model: BaseModelRef | str | None = None  # a string in recommender bundles
    components: Components = field(default_factory=Components)
    default_component: str | None = None
    ensemble: Ensemble | None = None
    thresholds: dict[str, list[float] | None] | None = None  # per component, one per label (multi-label)
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    recommendation: dict[str, Any] | str | None = None
    data: dict[str, Any] | None = None
    lineage: list[LineageStep] | None = None
    compression: dict[str, Any] | None = None
    drift_reference: DriftReference | None = None  # absent in bundles from before slm 0.1's drift monitor
    privacy: Privacy | None = None  # differentially private training only (absent otherwise and in older bundles)
    files: dict[str, str] = field(default_factory=dict)  # sha256 of every file, by POSIX relative path
    manifest_digest: Digest | None = None

    NULLABLE = frozenset({"base_model", "metrics", "training", "data", "compression", "recommendation"})
    FIRST = ("format", "format_version")
    LAST = ("files", DIGEST_KEY)

    @property
    def multi_label(self) -> bool:
        """A multi-label classifier: each text gets every label whose probability passes its threshold."""
        return self.task == "multi_label"

    @property
    def base_model_name(self) -> str | None:
        """The base model's registry name, whether recorded as an object or a plain string."""
        if isinstance(self.base_model, BaseModelRef):
            return self.base_model.name
        return self.base_model


def parse(root: Path, data: Mapping[str, Any]) -> Manifest:
    """The typed manifest of bundle ``root``; BundleError naming the first problem of ``data``."""
    validate(root, data)
    return Manifest.from_json(data)


# ---------------------------------------------------------------------- the check
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
    _check_fields(Manifest, manifest, "", deep=False, skip=CHECKED_APART)
    labels = _check_labels(manifest)
    _check_lineage(manifest.get("lineage", []))
    if labels is not None:
        _check_ensemble(manifest.get("ensemble"), len(labels))
        _check_thresholds(manifest.get("thresholds", {}), len(labels))
    if manifest.get("format_version", 1) >= 2 or DIGEST_KEY in manifest:
        _check_digest(manifest.get(DIGEST_KEY))
    _check_fields(Manifest, manifest, "", deep=True)


def _expect(
    record: Mapping[str, Any], key: str, types_: tuple[type, ...], *, required: bool = False, where: str = ""
) -> None:
    if key not in record:
        if required:
            raise Malformed(f"'{where}{key}' is missing")
        return
    value = record[key]
    if not isinstance(value, types_) or (isinstance(value, bool) and bool not in types_):
        wanted = " or ".join(JSON_TYPE.get(t, t.__name__) for t in types_)
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


# ---------------------------------------------------------------------- types from the annotations
def _check_fields(
    cls: type[Record], data: Mapping[str, Any], where: str, *, deep: bool, skip: frozenset[str] = frozenset()
) -> None:
    """Each typed field of ``cls`` present in ``data`` (but those in ``skip``) has its annotation's JSON
    type; ``deep`` also checks required fields and what lists, objects and nested records hold."""
    if deep:
        for name in _required(cls):
            if name not in data:
                raise Malformed(f"'{where}{name}' is missing")
    for name, annotation in _declared(cls).items():
        if name in data and name not in skip:
            nullable = name in cls.NULLABLE
            if not (data[name] is None and nullable):
                _check_value(data[name], annotation, f"{where}{name}", deep=deep, in_record=True, nullable=nullable)


def _check_value(
    value: Any, annotation: Any, where: str, *, deep: bool, in_record: bool = False, nullable: bool = False
) -> None:
    """``value`` matches ``annotation``. In a record's optional field (``in_record``) None means absent, so a null is
    refused there unless the field is ``nullable``; inside a list or object, ``| None`` allows null."""
    if annotation is Any:
        return
    members = [m for m in _members(annotation) if not (in_record and m is type(None))]
    for member in members:
        if _matches(value, member):
            if deep:
                _check_inside(value, member, where)
            return
    wanted = " or ".join(dict.fromkeys([*(_type_name(m) for m in members), *(["null"] if nullable else [])]))
    raise Malformed(f"'{where}' must be {wanted}, not {_describe(value)}")


def _matches(value: Any, member: Any) -> bool:
    """The outer JSON type of ``value`` is the one ``member`` describes."""
    kind = typing.get_origin(member) or member
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if isinstance(kind, type) and issubclass(kind, Record):
        return isinstance(value, dict)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(kind, type) and isinstance(value, kind)


def _check_inside(value: Any, member: Any, where: str) -> None:
    if isinstance(member, type) and issubclass(member, Record):
        _check_fields(member, value, f"{where}.", deep=True)
    elif typing.get_origin(member) is list:
        (item,) = typing.get_args(member)
        for index, element in enumerate(value):
            _check_value(element, item, f"{where}[{index}]", deep=True)
    elif typing.get_origin(member) is dict:
        _, item = typing.get_args(member)
        for key, element in value.items():
            _check_value(element, item, f"{where}.{key}", deep=True)


def _type_name(member: Any) -> str:
    kind = typing.get_origin(member) or member
    if isinstance(kind, type) and issubclass(kind, Record):
        return "an object"
    return JSON_TYPE.get(kind, getattr(kind, "__name__", str(kind)))


# ---------------------------------------------------------------------- the parts
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
        for key in required_keys(name):
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
