"""int8 and int4 quantization of a bundle's ONNX model, checked by the accuracy gate (int8: and a speed check)."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
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
from slm.compression.int4 import (
    BLOCK_SIZES,
    DEFAULT_BLOCK_SIZE,
    Int4Recipe,
    default_int4_recipes,
    quantize_int4,
    rewrite,
)
from slm.compression.vocabulary import trim_unreachable
from slm.errors import BundleError, ConfigError, ModelError
from slm.hardware import cpu_info
from slm.models.ensemble import probabilities
from slm.pipeline import DataSource, evaluation_set
from slm.runtime.onnx import OnnxComponent

log = logging.getLogger(__name__)

# onnxruntime's quantization modules log here while slm quantizes (see _quantizer_logging).
ORT_QUANTIZATION_LOGGER = "onnxruntime.quantization"
MODES = ("dynamic", "static", "int4")
FALLBACKS = ("none", "fp32")
# Fused-graph operators whose weights are quantized; EmbedLayerNormalization carries the embedding tables.
DYNAMIC_OPS = ["MatMul", "Attention", "EmbedLayerNormalization", "Gather"]
STATIC_OPS = ["MatMul", "Gather", "EmbedLayerNormalization"]
# Largest probability change allowed when int4 unfuses a graph (before quantizing): as for the ONNX export.
UNFUSE_TOLERANCE = 1e-4


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


def _check_args(mode: str, gate_points: float, fallback: str, calibration_size: int, block_size: int) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode '{mode}': choose from {', '.join(MODES)}")
    if not gate_points >= 0:
        raise ConfigError(f"--gate must be >= 0 points, got {gate_points}")
    if fallback not in FALLBACKS:
        raise ConfigError(f"unknown fallback '{fallback}': choose from {', '.join(FALLBACKS)}")
    if calibration_size < 1:
        raise ConfigError("--calibration-size must be at least 1")
    if block_size not in BLOCK_SIZES:
        raise ConfigError(f"--block-size must be one of {', '.join(map(str, BLOCK_SIZES))}, got {block_size}")


Recipe = QuantRecipe | Int4Recipe


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
    recipes: Sequence[Recipe] | None = None,
    trim_vocabulary: bool = True,
    threads: int | None = None,
    export_texts: list[str] | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Manifest:
    """Write an int8 (or with ``mode="int4"`` an int4) copy of ``bundle`` whose ONNX model passed the gate.

    Recipes are measured tier by tier (see ``default_recipes`` and ``default_int4_recipes``); an int8
    recipe is acceptable when it loses at most ``gate_points`` of validation accuracy and runs faster
    than fp32 on this CPU, and the fastest acceptable one ships (a more accurate one within 10% of its
    speed wins). int4 is for size and memory, not CPU speed: an int4 recipe needs only the gate, and
    ``block_size`` sets its weights per scale. When none passes, GateRejected is raised and nothing is
    written, unless ``fallback="fp32"`` ships the fp32 ONNX model instead.
    The PyTorch weights are not copied (the manifest's lineage points to the parent bundle). With
    ``trim_vocabulary``, embedding rows the tokenizer can never produce are dropped first (lossless,
    checked; see ``slm.compression.vocabulary``). ``export_texts``: parity-check texts for a bundle
    that must be exported first (default: a sample of its training file).
    """
    _check_args(mode, gate_points, fallback, calibration_size, block_size)
    if recipes and any(isinstance(recipe, Int4Recipe) != (mode == "int4") for recipe in recipes):
        raise ConfigError("int4 recipes go with mode='int4' and int8 recipes with the other modes")
    bundle, output = Path(bundle), Path(output)
    manifest = read_manifest(bundle)
    label = "int4" if mode == "int4" else "int8"
    with tempfile.TemporaryDirectory(prefix="slm-quantize-") as tmp:
        work = Path(tmp)
        source_bundle, manifest, spec = fp32_source(bundle, manifest, work, export_texts)
        evaluation = evaluation_set(manifest, validation)
        if trim_vocabulary and trim_unreachable(source_bundle, work / "trimmed", evaluation.texts[:256]):
            source_bundle = work / "trimmed"
            manifest = read_manifest(source_bundle)
            spec = onnx_spec(source_bundle, manifest)
        trials = Trials(source_bundle, manifest, evaluation, threads, calibration_size)
        log.info(f"quantizing {bundle} to {label}: gate {gate_points:.2f} points on {len(trials.evaluation)} "
                 "validation texts")  # fmt: skip
        if recipes:
            tiers: list[list[Recipe]] = [list(recipes)]
        elif mode == "int4":
            tiers = [list(tier) for tier in default_int4_recipes(embeddings, block_size)]
        else:
            tiers = [list(tier) for tier in default_recipes(mode, per_channel, embeddings, cpu_features())]
        chosen = _first_accepted(trials, tiers, work, gate_points)
        if chosen is None and fallback == "none":
            if trials.rejection is not None and all(t["verdict"] == "rejected: accuracy" for t in trials.tried):
                raise trials.rejection
            raise GateRejected(
                "no int8 variant is both accurate and faster than fp32 on this CPU; nothing was written "
                "(use --fallback fp32 to ship the fp32 ONNX model)"
            )
        quantization = {"mode": _mode_name(mode), "gate_points": gate_points}
        quantization.update(validation_texts=len(trials.evaluation), cpu=cpu_features(), tried=trials.tried)
        default = choose_default(
            source_bundle, manifest, trials.evaluation.texts, trials.targets, parent=trials.reference_proba,
            derived=trials.reference_proba if chosen is None else chosen.proba,
            step=("int4" if mode == "int4" else "int8") if chosen else "fp32",
        )  # fmt: skip
        return _write(source_bundle, output, spec, chosen, quantization, default)


def _mode_name(mode: str) -> str:
    """The ``slm compress --quantize`` value of a mode (recorded so that ``slm update`` can quantize alike)."""
    return {"dynamic": "int8", "static": "int8-static"}.get(mode, mode)


def _first_accepted(trials: Trials, tiers: list[list[Recipe]], work: Path, gate_points: float) -> _Candidate | None:
    """Measure tier after tier; the best acceptable recipe of the first tier that has one (None if none has)."""
    for tier in tiers:
        accepted = [trial for trial in (trials.run(recipe, work, gate_points) for recipe in tier) if trial]
        if accepted:
            chosen = _pick(accepted)
            chosen.entry["verdict"] = "shipped"
            log.info(f"  shipping {chosen.recipe.name}")
            return chosen
    return None


def fp32_source(
    bundle: Path, manifest: Manifest, work: Path, export_texts: list[str] | None
) -> tuple[Path, Manifest, OnnxSpec]:
    """The bundle to quantize from and its ONNX spec: ``bundle``, or its fp32 export written into ``work`` when it
    has no ONNX model. A bundle whose ONNX model is already quantized is refused (quantize its fp32 parent)."""
    source = bundle
    if manifest.components.onnx is None:
        export_bundle(bundle, work / "exported", texts=export_texts)
        source, manifest = work / "exported", read_manifest(work / "exported")
    spec = onnx_spec(source, manifest)
    if (spec.precision or "fp32") != "fp32":
        raise ConfigError(f"{bundle} is already quantized ({spec.precision}): quantize its fp32 parent")
    return source, manifest, spec


def onnx_spec(bundle: Path, manifest: Manifest) -> OnnxSpec:
    if manifest.components.onnx is None:
        raise BundleError(f"{bundle} has no ONNX model")
    return manifest.components.onnx


@dataclass
class _Candidate:
    """A quantized model that passed the gate and the speed check."""

    recipe: Recipe
    result: GateResult
    speedup: float
    path: Path
    entry: dict
    proba: np.ndarray  # on the validation texts: the ensemble's default is chosen again with them


class Trials:
    """Quantize with one recipe after another and measure each against the fp32 reference.

    Its reference (the fp32 model on the validation texts, their targets and thresholds, the calibration
    texts) also serves ``--quantize int8-openvino`` (slm.compression.openvino), which quantizes with NNCF.
    """

    def __init__(
        self, source_bundle: Path, manifest: Manifest, evaluation, threads: int | None, calibration_size: int
    ) -> None:
        self.source_bundle = source_bundle
        self.manifest = manifest
        self.calibration_size = calibration_size
        self.spec = onnx_spec(source_bundle, manifest)
        self.task = manifest.task
        self.evaluation = evaluation
        self.targets = evaluation.targets(list(manifest.labels or []))
        self.threads = threads
        thresholds = (manifest.thresholds or {}).get("transformer")
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=np.float32)
        self.reference = OnnxComponent(source_bundle, self.spec, threads=threads)
        self.reference_proba = self.proba(self.reference)
        self.tried: list[dict] = []
        self.rejection: GateRejected | None = None
        self._rewritten: dict[tuple[bool, str], tuple[Path, dict]] = {}

    @cached_property
    def calibration_texts(self) -> list[str]:
        """Read only when a static recipe is tried: training texts, else the validation texts."""
        return calibration_texts(self.manifest, self.evaluation.texts, self.calibration_size)

    def proba(self, component: OnnxComponent, texts: list[str] | None = None) -> np.ndarray:
        texts = self.evaluation.texts if texts is None else texts
        return probabilities(component.logits(texts), self.task == "multi_label")

    def run(self, recipe: Recipe, work: Path, gate_points: float) -> _Candidate | None:
        """Quantize, score and time one recipe; the candidate if it is acceptable, else None."""
        target = work / f"candidate-{len(self.tried)}.onnx"
        entry: dict = {"recipe": recipe.to_dict()}
        if isinstance(recipe, Int4Recipe):
            source, rewritten = self.rewritten(recipe, work)
            entry.update(rewritten)
            with _quantizer_logging():
                entry["precision_shares"] = quantize_int4(source, target, recipe)
        else:
            calibration = _Calibration(self.reference, self.calibration_texts) if recipe.static else None
            quantize_graph(self.source_bundle / self.spec.file, target, recipe, calibration)
        candidate = OnnxComponent(self.source_bundle, replace(self.spec, file=str(target)), threads=self.threads)
        proba = self.proba(candidate)
        result = measure(self.reference_proba, proba, self.targets, self.task, self.thresholds)
        speedup = speed_ratio(self.reference, candidate, self.evaluation.texts)
        entry.update(gate=result.to_dict(), speedup_vs_fp32=round(speedup, 3),
                     size_mb=round(target.stat().st_size / 1e6, 3))  # fmt: skip
        self.tried.append(entry)
        try:
            enforce(result, gate_points, recipe.name)
        except GateRejected as exc:
            entry["verdict"] = "rejected: accuracy"
            self.rejection = exc
            log.info(f"  {recipe.name}: rejected ({result.drop_points:+.2f} points)")
            return None
        # int4 is for size and memory: its MatMulNBits kernels are no faster than int8's on a CPU (measured).
        if speedup < 1.0 and not isinstance(recipe, Int4Recipe):
            entry["verdict"] = "rejected: slower than fp32 on this CPU"
            log.info(f"  {recipe.name}: rejected, {speedup:.2f}x the fp32 speed on this CPU")
            return None
        entry["verdict"] = "acceptable"
        log.info(f"  {recipe.name}: acceptable ({result.drop_points:+.2f} points, {speedup:.2f}x fp32)")
        return _Candidate(recipe, result, speedup, target, entry, proba)

    def rewritten(self, recipe: Int4Recipe, work: Path) -> tuple[Path, dict]:
        """The fp32 graph unfused as ``recipe`` needs (once per form), refused unless it predicts as the fused one."""
        key = (recipe.unfuse, recipe.embeddings)
        if key not in self._rewritten:
            path = work / f"rewritten-{len(self._rewritten)}.onnx"
            record = rewrite(self.source_bundle / self.spec.file, path, recipe)
            if record["attention_unfused"] or record["embeddings_unfused"]:
                texts = self.evaluation.texts[:256]
                component = OnnxComponent(self.source_bundle, replace(self.spec, file=str(path)), threads=self.threads)
                diff = float(np.abs(self.proba(component, texts) - self.reference_proba[: len(texts)]).max())
                if not diff <= UNFUSE_TOLERANCE:
                    raise ModelError(
                        f"unfusing the ONNX graph for int4 changed its probabilities by up to {diff:.1e} "
                        f"(tolerance {UNFUSE_TOLERANCE:.0e}); nothing was written"
                    )
                record["unfused_max_abs_diff"] = diff
            self._rewritten[key] = (path, record)
        return self._rewritten[key]


def _pick(accepted: list[_Candidate]) -> _Candidate:
    """The fastest acceptable recipe, or a more accurate one that is within 10% of its speed."""
    fastest = max(c.speedup for c in accepted)
    near = [c for c in accepted if c.speedup >= 0.9 * fastest]
    return max(near, key=lambda c: (c.result.candidate, c.result.agreement, c.speedup))


def record_quantization(
    new: Manifest, quantization: dict, transformer: dict | None, default: DefaultChoice
) -> Manifest:
    """A quantized bundle's records: ``compression.quantization``, the validation metrics (the transformer's gate
    result, and the ensemble's when its weight was chosen again) and the component it now serves by default."""
    new.compression = {**(new.compression or {}), "quantization": quantization}
    validation: dict[str, object] = {"transformer": transformer} if transformer is not None else {}
    if default.ensemble is not None:
        validation["ensemble"] = default.ensemble
    if default.record:
        new.compression["default_component"] = default.record
    replace_metrics(new, validation)
    new.default_component = default.component
    return new


def calibration_texts(manifest: Manifest, fallback: list[str], n: int) -> list[str]:
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
            quantization["fallback"] = (
                "fp32: no int4 recipe passed the gate" if quantization["mode"] == "int4"
                else "fp32: no int8 recipe passed the gate and the speed check"
            )  # fmt: skip
        else:
            (staging / ONNX_DIR / ONNX_FILE).write_bytes(chosen.path.read_bytes())
            precision = "int4" if isinstance(chosen.recipe, Int4Recipe) else "int8"
            quantization.update(
                recipe=chosen.recipe.to_dict(),
                validation=chosen.result.to_dict(),
                speedup_vs_fp32=round(chosen.speedup, 3),
            )
            if "precision_shares" in chosen.entry:
                quantization["precision_shares"] = chosen.entry["precision_shares"]
        drop_components(staging, new, keep={"onnx", "ngram"})
        new.components.onnx = replace(spec, file=f"{ONNX_DIR}/{ONNX_FILE}", precision=precision, parity=None)
        return record_quantization(new, quantization, chosen.result.to_dict() if chosen is not None else None, default)

    return derive_bundle(source_bundle, output, change, drop=("model", ONNX_DIR, "report"), step="quantize")
