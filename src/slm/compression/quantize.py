"""int8 quantization of a bundle's ONNX model, checked by the accuracy gate and a speed check on this CPU."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from unittest import mock

import numpy as np

from slm.bundle.derive import derive_bundle, drop_components, replace_metrics
from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Manifest, OnnxSpec
from slm.compression.default import DefaultChoice, choose_default
from slm.compression.export import ONNX_DIR, ONNX_FILE, export_bundle
from slm.compression.gate import DEFAULT_GATE_POINTS, GateRejected, GateResult, enforce, measure
from slm.compression.vocabulary import trim_unreachable
from slm.errors import BundleError, ConfigError
from slm.hardware import cpu_info
from slm.models.ensemble import probabilities
from slm.pipeline import DataSource, evaluation_set
from slm.runtime.onnx import OnnxComponent

log = logging.getLogger(__name__)

# onnxruntime's quantization modules log here while slm quantizes (see _quantizer_logging).
ORT_QUANTIZATION_LOGGER = "onnxruntime.quantization"
MODES = ("dynamic", "static")
FALLBACKS = ("none", "fp32")
# Fused-graph operators whose weights are quantized; EmbedLayerNormalization carries the embedding tables.
DYNAMIC_OPS = ["MatMul", "Attention", "EmbedLayerNormalization", "Gather"]
STATIC_OPS = ["MatMul", "Gather", "EmbedLayerNormalization"]


@dataclass(frozen=True)
class QuantRecipe:
    """One way to quantize; tried in order until one passes the gate and is faster than fp32."""

    name: str
    weight_type: str = "int8"  # signed int8 weights (u8s8 kernels) or "uint8" (u8u8, no saturation risk)
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 saturation on CPUs without VNNI, costs accuracy
    static: bool = False
    embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_features() -> dict[str, bool]:
    """x86 SIMD features that decide which int8 kernels ONNX Runtime can use well."""
    flags = cpu_info()["flags"]
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512bw" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "known": bool(flags),
    }


def default_recipes(mode: str, per_channel: bool, embeddings: bool, cpu: dict[str, bool]) -> list[list[QuantRecipe]]:
    """Tiers of recipes: every recipe of a tier is measured and the most accurate acceptable one ships;
    the next tier is tried only when none in a tier is acceptable.

    Signed and unsigned int8 weights are both measured (u8s8 kernels can saturate on CPUs without
    VNNI, per onnxruntime's quantization docs; u8u8 cannot). Reduce-range comes last because it
    costs accuracy (measured on a Zen 3 CPU: 94% agreement with fp32 against 99.8% per-channel).
    """
    dynamic = [
        QuantRecipe("dynamic-int8", "int8", per_channel, embeddings=embeddings),
        QuantRecipe("dynamic-uint8", "uint8", per_channel, embeddings=embeddings),
    ]
    reduced = [QuantRecipe("dynamic-int8-reduce-range", "int8", per_channel, True, embeddings=embeddings)]
    if mode == "static":
        return [[QuantRecipe("static-int8", "int8", per_channel, static=True, embeddings=embeddings)], dynamic, reduced]
    return [dynamic, reduced]


class _Calibration:
    """onnxruntime CalibrationDataReader over tokenized texts, one padded batch at a time."""

    def __init__(self, component: OnnxComponent, texts: list[str], batch_size: int = 16) -> None:
        ids = component.encode(texts)
        self.batches = [component.feeds(ids[start : start + batch_size]) for start in range(0, len(ids), batch_size)]
        self._iter = iter(self.batches)

    def get_next(self) -> dict | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def quantize_graph(source: Path, target: Path, recipe: QuantRecipe, calibration: _Calibration | None = None) -> None:
    """Write ``target``: ``source`` quantized as ``recipe`` says."""
    with _quantizer_logging():
        _quantize(source, target, recipe, calibration)


@contextlib.contextmanager
def _quantizer_logging() -> Iterator[None]:
    """For the block, onnxruntime's quantizer logs to its own ``onnxruntime.quantization`` logger, errors only.

    It logs a generic "consider pre-processing" warning for every call through logging's module functions
    (``logging.warning(...)``), which write to the root logger and first call ``logging.basicConfig``: the root
    logger would keep a stderr handler for the rest of the process. slm leaves the root logger alone, so
    those modules' ``logging`` is swapped for one whose functions log to that named logger.
    """
    import onnxruntime.quantization  # noqa: F401  (its modules, so that they can be patched)

    own = logging.getLogger(ORT_QUANTIZATION_LOGGER)
    shim = types.SimpleNamespace(**vars(logging))
    for name in ("debug", "info", "warning", "warn", "error", "critical", "exception", "log"):
        setattr(shim, name, getattr(own, name))
    modules = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith(ORT_QUANTIZATION_LOGGER) and getattr(module, "logging", None) is logging
    ]
    level = own.level
    own.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as patches:
            for module in modules:
                patches.enter_context(mock.patch.object(module, "logging", shim))
            yield
    finally:
        own.setLevel(level)


def _quantize(source: Path, target: Path, recipe: QuantRecipe, calibration: _Calibration | None) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    weight_type = QuantType.QInt8 if recipe.weight_type == "int8" else QuantType.QUInt8
    # Needed to quantize a graph that ORT's transformer optimizer has fused (measured).
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if recipe.static:
        if calibration is None:
            raise ConfigError("static quantization needs calibration texts")
        quantize_static(
            str(source),
            str(target),
            calibration,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=STATIC_OPS if recipe.embeddings else ["MatMul"],
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=weight_type,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=extra,
        )
        return
    ops = DYNAMIC_OPS if recipe.embeddings else ["MatMul", "Attention"]
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=weight_type,
        op_types_to_quantize=ops,
        extra_options=extra,
    )


def speed_ratio(reference: OnnxComponent, candidate: OnnxComponent, texts: list[str], repeats: int = 3) -> float:
    """fp32 time / candidate time on the same batches, interleaved (>1 means the candidate is faster)."""
    sample = texts[:128]
    reference.logits(sample[:32])
    candidate.logits(sample[:32])
    ref_time = cand_time = 0.0
    for _ in range(repeats):
        for component, is_ref in ((reference, True), (candidate, False)):
            started = time.perf_counter()
            component.logits(sample, batch_size=32)
            elapsed = time.perf_counter() - started
            if is_ref:
                ref_time += elapsed
            else:
                cand_time += elapsed
    return ref_time / max(cand_time, 1e-9)


def _check_args(mode: str, gate_points: float, fallback: str, calibration_size: int) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode '{mode}': choose from {', '.join(MODES)}")
    if not gate_points >= 0:
        raise ConfigError(f"--gate must be >= 0 points, got {gate_points}")
    if fallback not in FALLBACKS:
        raise ConfigError(f"unknown fallback '{fallback}': choose from {', '.join(FALLBACKS)}")
    if calibration_size < 1:
        raise ConfigError("--calibration-size must be at least 1")


def quantize_bundle(
    bundle: str | Path,
    output: str | Path,
    *,
    mode: str = "dynamic",
    per_channel: bool = True,
    embeddings: bool = True,
    gate_points: float = DEFAULT_GATE_POINTS,
    validation: DataSource | None = None,
    calibration_size: int = 256,
    fallback: str = "none",
    recipes: list[QuantRecipe] | None = None,
    trim_vocabulary: bool = True,
    threads: int | None = None,
    export_texts: list[str] | None = None,
) -> Manifest:
    """Write an int8 copy of ``bundle`` whose ONNX model passed the accuracy gate on validation data.

    Recipes are measured tier by tier (see ``default_recipes``); a recipe is acceptable when it loses
    at most ``gate_points`` of validation accuracy and runs faster than fp32 on this CPU, and the
    fastest acceptable one ships (a more accurate one within 10% of its speed wins). When none does, GateRejected is
    raised and nothing is written, unless ``fallback="fp32"`` ships the fp32 ONNX model instead.
    The PyTorch weights are not copied (the manifest's lineage points to the parent bundle). With
    ``trim_vocabulary``, embedding rows the tokenizer can never produce are dropped first (lossless,
    checked; see ``slm.compression.vocabulary``). ``export_texts``: parity-check texts for a bundle
    that must be exported first (default: a sample of its training file).
    """
    _check_args(mode, gate_points, fallback, calibration_size)
    bundle, output = Path(bundle), Path(output)
    manifest = read_manifest(bundle)
    with tempfile.TemporaryDirectory(prefix="slm-quantize-") as tmp:
        work = Path(tmp)
        if manifest.components.onnx is None:
            export_bundle(bundle, work / "exported", texts=export_texts)
            source_bundle = work / "exported"
            manifest = read_manifest(source_bundle)
        else:
            source_bundle = bundle
        spec = _onnx_spec(source_bundle, manifest)
        if (spec.precision or "fp32") != "fp32":
            raise ConfigError(f"{bundle} is already quantized ({spec.precision}): quantize its fp32 parent")
        evaluation = evaluation_set(manifest, validation)
        if trim_vocabulary and trim_unreachable(source_bundle, work / "trimmed", evaluation.texts[:256]):
            source_bundle = work / "trimmed"
            manifest = read_manifest(source_bundle)
            spec = _onnx_spec(source_bundle, manifest)
        trials = _Trials(source_bundle, manifest, evaluation, threads, calibration_size)
        log.info(f"quantizing {bundle}: gate {gate_points:.2f} points on {len(trials.evaluation)} validation texts")
        cpu = cpu_features()
        chosen = None
        for tier in [recipes] if recipes else default_recipes(mode, per_channel, embeddings, cpu):
            accepted = [trial for trial in (trials.run(recipe, work, gate_points) for recipe in tier) if trial]
            if accepted:
                chosen = _pick(accepted)
                chosen.entry["verdict"] = "shipped"
                log.info(f"  shipping {chosen.recipe.name}")
                break
        if chosen is None and fallback == "none":
            if trials.rejection is not None and all(t["verdict"] == "rejected: accuracy" for t in trials.tried):
                raise trials.rejection
            raise GateRejected(
                "no int8 variant is both accurate and faster than fp32 on this CPU; nothing was written "
                "(use --fallback fp32 to ship the fp32 ONNX model)"
            )
        quantization = {"gate_points": gate_points, "validation_texts": len(trials.evaluation), "cpu": cpu}
        quantization["tried"] = trials.tried
        default = choose_default(
            source_bundle, manifest, trials.evaluation.texts, trials.targets, parent=trials.reference_proba,
            derived=trials.reference_proba if chosen is None else chosen.proba, step="int8" if chosen else "fp32",
        )  # fmt: skip
        return _write(source_bundle, output, spec, chosen, quantization, default)


def _onnx_spec(bundle: Path, manifest: Manifest) -> OnnxSpec:
    if manifest.components.onnx is None:
        raise BundleError(f"{bundle} has no ONNX model")
    return manifest.components.onnx


@dataclass
class _Candidate:
    """A quantized model that passed the gate and the speed check."""

    recipe: QuantRecipe
    result: GateResult
    speedup: float
    path: Path
    entry: dict
    proba: np.ndarray  # on the validation texts: the ensemble's default is chosen again with them


class _Trials:
    """Quantize with one recipe after another and measure each against the fp32 reference."""

    def __init__(
        self, source_bundle: Path, manifest: Manifest, evaluation, threads: int | None, calibration_size: int
    ) -> None:
        self.source_bundle = source_bundle
        self.manifest = manifest
        self.calibration_size = calibration_size
        self.spec = _onnx_spec(source_bundle, manifest)
        self.task = manifest.task
        self.evaluation = evaluation
        self.targets = evaluation.targets(list(manifest.labels or []))
        self.threads = threads
        thresholds = (manifest.thresholds or {}).get("transformer")
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=np.float32)
        self.reference = OnnxComponent(source_bundle, self.spec, threads=threads)
        self.reference_proba = self._proba(self.reference)
        self.tried: list[dict] = []
        self.rejection: GateRejected | None = None

    @cached_property
    def calibration_texts(self) -> list[str]:
        """Read only when a static recipe is tried: training texts, else the validation texts."""
        return _calibration_texts(self.manifest, self.evaluation.texts, self.calibration_size)

    def _proba(self, component: OnnxComponent) -> np.ndarray:
        return probabilities(component.logits(self.evaluation.texts), self.task == "multi_label")

    def run(self, recipe: QuantRecipe, work: Path, gate_points: float) -> _Candidate | None:
        """Quantize, score and time one recipe; the candidate if it is acceptable, else None."""
        target = work / f"candidate-{len(self.tried)}.onnx"
        calibration = _Calibration(self.reference, self.calibration_texts) if recipe.static else None
        quantize_graph(self.source_bundle / self.spec.file, target, recipe, calibration)
        candidate = OnnxComponent(self.source_bundle, replace(self.spec, file=str(target)), threads=self.threads)
        proba = self._proba(candidate)
        result = measure(self.reference_proba, proba, self.targets, self.task, self.thresholds)
        speedup = speed_ratio(self.reference, candidate, self.evaluation.texts)
        entry = {"recipe": recipe.to_dict(), "gate": result.to_dict(), "speedup_vs_fp32": round(speedup, 3),
                 "size_mb": round(target.stat().st_size / 1e6, 3)}  # fmt: skip
        self.tried.append(entry)
        try:
            enforce(result, gate_points, recipe.name)
        except GateRejected as exc:
            entry["verdict"] = "rejected: accuracy"
            self.rejection = exc
            log.info(f"  {recipe.name}: rejected ({result.drop_points:+.2f} points)")
            return None
        if speedup < 1.0:
            entry["verdict"] = "rejected: slower than fp32 on this CPU"
            log.info(f"  {recipe.name}: rejected, {speedup:.2f}x the fp32 speed on this CPU")
            return None
        entry["verdict"] = "acceptable"
        log.info(f"  {recipe.name}: acceptable ({result.drop_points:+.2f} points, {speedup:.2f}x fp32)")
        return _Candidate(recipe, result, speedup, target, entry, proba)


def _pick(accepted: list[_Candidate]) -> _Candidate:
    """The fastest acceptable recipe, or a more accurate one that is within 10% of its speed."""
    fastest = max(c.speedup for c in accepted)
    near = [c for c in accepted if c.speedup >= 0.9 * fastest]
    return max(near, key=lambda c: (c.result.candidate, c.result.agreement, c.speedup))


def _calibration_texts(manifest: Manifest, fallback: list[str], n: int) -> list[str]:
    """Calibration texts from the training data when it is available, else from the validation texts."""
    from slm.compression.export import sample_texts

    try:
        return sample_texts(manifest, None, n=n, seed=1)
    except ConfigError:
        return sample_texts(manifest, fallback, n=n, seed=1)


def _write(
    source_bundle: Path,
    output: Path,
    spec: OnnxSpec,
    chosen: _Candidate | None,
    quantization: dict,
    default: DefaultChoice,
) -> Manifest:
    def change(staging: Path, new: Manifest) -> Manifest:
        (staging / ONNX_DIR).mkdir(exist_ok=True)
        if chosen is None:
            (staging / ONNX_DIR / ONNX_FILE).write_bytes((source_bundle / spec.file).read_bytes())
            precision = "fp32"
            quantization["fallback"] = "fp32: no int8 recipe passed the gate and the speed check"
        else:
            (staging / ONNX_DIR / ONNX_FILE).write_bytes(chosen.path.read_bytes())
            precision = "int8"
            quantization.update(
                recipe=chosen.recipe.to_dict(),
                validation=chosen.result.to_dict(),
                speedup_vs_fp32=round(chosen.speedup, 3),
            )
        drop_components(staging, new, keep={"onnx", "ngram"})
        new.components.onnx = replace(spec, file=f"{ONNX_DIR}/{ONNX_FILE}", precision=precision, parity=None)
        new.compression = {**(new.compression or {}), "quantization": quantization}
        validation = {"transformer": chosen.result.to_dict()} if chosen is not None else {}
        if default.ensemble is not None:
            validation["ensemble"] = default.ensemble
        if default.record:
            new.compression["default_component"] = default.record
        replace_metrics(new, validation)
        new.default_component = default.component
        return new

    return derive_bundle(source_bundle, output, change, drop=("model", ONNX_DIR, "report"), step="quantize")
