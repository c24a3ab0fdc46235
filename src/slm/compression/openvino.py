"""``slm compress --quantize int8-openvino``: NNCF int8 of the fp32 ONNX export, for OpenVINO, gated like int8.

Why: at batch 32 on this project's CPU, NNCF's int8 MiniLM on OpenVINO did 1,309 texts/s against 855 for
ONNX Runtime's dynamic int8 (bench/results/openvino_peer.md); ONNX Runtime stays faster at batch 1.

Why an OpenVINO IR beside the ONNX file rather than a quantized ONNX file: NNCF's ONNX backend cannot
quantize slm's fused export (its SmoothQuant step fails on the com.microsoft Attention/MultiHeadAttention
graph, fused or unfused: "Node .../attention/output/dense/MatMul does not contain input edge connected to
0 port ID"), while its OpenVINO backend quantizes the graph OpenVINO reads from the same file. So the bundle
keeps the fp32 ONNX model (ONNX Runtime runs it when OpenVINO is absent) and adds the int8 IR
(``onnx/model.int8-openvino.xml`` + ``.bin``, hashed in the manifest like every bundle file), which the
OpenVINO backend loads. Calibration texts are the bundle's recorded training texts, as for int8-static.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from slm.bundle.derive import derive_bundle, drop_components
from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Manifest, OnnxSpec
from slm.compression.default import DefaultChoice, choose_default
from slm.compression.export import ONNX_DIR, ONNX_FILE
from slm.compression.gate import DEFAULT_GATE_POINTS, GateResult, enforce, measure
from slm.compression.quantize import Trials, fp32_source, record_quantization, speed_ratio
from slm.errors import ConfigError
from slm.extras import MissingExtra
from slm.pipeline import DataSource, evaluation_set
from slm.runtime.onnx import OnnxComponent
from slm.runtime.openvino import OpenVinoComponent, import_openvino, weights_of

log = logging.getLogger(__name__)

MODE = "int8-openvino"
COMPRESS_EXTRA = "openvino-compress"  # NNCF, apart from slm[openvino] (which only runs bundles)
IR_FILE = "model.int8-openvino.xml"
RECIPE = "nncf-int8-transformer"


def quantize_openvino_bundle(
    bundle: str | Path,
    output: str | Path,
    *,
    gate_points: float = DEFAULT_GATE_POINTS,
    validation: DataSource | None = None,
    calibration_size: int = 300,
    threads: int | None = None,
    export_texts: list[str] | None = None,
) -> Manifest:
    """Write ``output``: ``bundle`` with an NNCF int8 OpenVINO model, refused unless it passes the accuracy gate.

    The gate compares it, run by OpenVINO, with the fp32 model run by ONNX Runtime on the validation texts.
    A bundle without ONNX is exported first (``export_texts``: the parity check's texts).
    """
    if not gate_points >= 0:
        raise ConfigError(f"--gate must be >= 0 points, got {gate_points}")
    if calibration_size < 1:
        raise ConfigError("--calibration-size must be at least 1")
    nncf = _import_nncf()
    bundle, output = Path(bundle), Path(output)
    manifest = read_manifest(bundle)
    with tempfile.TemporaryDirectory(prefix="slm-openvino-") as tmp:
        work = Path(tmp)
        source, manifest, spec = fp32_source(bundle, manifest, work, export_texts)
        evaluation = evaluation_set(manifest, validation)
        trials = Trials(source, manifest, evaluation, threads, calibration_size)
        texts = trials.calibration_texts
        log.info(f"quantizing {bundle} to {MODE}: NNCF on {len(texts)} calibration texts, gate {gate_points:.2f} "
                 f"points on {len(evaluation)} validation texts")  # fmt: skip
        started = time.perf_counter()
        ir = quantize_ir(nncf, source / spec.file, trials.reference, texts, work / IR_FILE)
        seconds = time.perf_counter() - started
        candidate = OpenVinoComponent(source, replace(spec, openvino_ir=str(ir)), threads=threads)
        proba = trials.proba(candidate)
        result = measure(trials.reference_proba, proba, trials.targets, manifest.task, trials.thresholds)
        enforce(result, gate_points, RECIPE)
        speedup = speed_ratio(trials.reference, candidate, evaluation.texts)  # fp32 on ONNX Runtime, batches of 32
        log.info(f"  {RECIPE}: acceptable ({result.drop_points:+.2f} points, {speedup:.2f}x fp32 on ONNX Runtime)")
        quantization = _record(gate_points, len(evaluation), len(texts), seconds, result, speedup)
        default = choose_default(source, manifest, evaluation.texts, trials.targets, parent=trials.reference_proba,
                                 derived=proba, step="int8")  # fmt: skip
        return _write(source, output, spec, ir, quantization, default)


def _import_nncf() -> Any:
    """NNCF (and OpenVINO, which its OpenVINO backend runs on), or a one-line missing-extra error."""
    import_openvino(what=f"--quantize {MODE}")
    try:
        import nncf
    except ImportError:
        raise MissingExtra("nncf", COMPRESS_EXTRA, what=f"--quantize {MODE}") from None
    return nncf


def quantize_ir(nncf: Any, onnx_file: Path, tokenizing: OnnxComponent, texts: list[str], target: Path) -> Path:
    """NNCF's transformer recipe on the graph OpenVINO reads from ``onnx_file``; the int8 IR written to ``target``.

    One text per calibration sample (as measured in bench/openvino_peer.py), so no padding enters the ranges.
    """
    ov = import_openvino(what=f"--quantize {MODE}")
    model = ov.Core().read_model(str(onnx_file))
    names = {name for port in model.inputs for name in port.get_names()}
    samples = [{k: v for k, v in tokenizing.feeds([ids]).items() if k in names} for ids in tokenizing.encode(texts)]
    quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(samples))  # fmt: skip
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return target


def _record(
    gate_points: float, validation_texts: int, calibration: int, seconds: float, result: GateResult, speedup: float
) -> dict:
    """The manifest's ``compression.quantization`` record (``mode`` is what ``slm update`` would repeat;
    ``speedup_vs_fp32``: against the fp32 model on ONNX Runtime, as for the other int8 recipes)."""
    import nncf

    ov = import_openvino()
    return {
        "mode": MODE, "gate_points": gate_points, "validation_texts": validation_texts,
        "recipe": {"name": RECIPE, "tool": f"nncf {nncf.__version__}", "model_type": "transformer",
                   "calibration_texts": calibration, "engine": f"openvino {ov.__version__}"},
        "quantize_seconds": round(seconds, 1), "validation": result.to_dict(), "speedup_vs_fp32": round(speedup, 3),
    }  # fmt: skip


def _write(
    source: Path, output: Path, spec: OnnxSpec, ir: Path, quantization: dict, default: DefaultChoice
) -> Manifest:
    """The derived bundle: fp32 ONNX (for ONNX Runtime) and the int8 IR (for OpenVINO) under ``onnx/``."""

    def change(staging: Path, new: Manifest) -> Manifest:
        folder = staging / ONNX_DIR
        folder.mkdir(exist_ok=True)
        shutil.copyfile(source / spec.file, folder / ONNX_FILE)
        shutil.copyfile(ir, folder / IR_FILE)
        shutil.copyfile(weights_of(str(ir)), folder / Path(weights_of(IR_FILE)).name)
        drop_components(staging, new, keep={"onnx", "ngram"})
        new.components.onnx = replace(spec, file=f"{ONNX_DIR}/{ONNX_FILE}", precision="int8", parity=None,
                                      engine="openvino", openvino_ir=f"{ONNX_DIR}/{IR_FILE}")  # fmt: skip
        return record_quantization(new, quantization, quantization["validation"], default)

    return derive_bundle(source, output, change, drop=("model", ONNX_DIR, "report"), step="quantize")
