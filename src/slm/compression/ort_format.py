"""Export an ONNX bundle's model to ONNX Runtime's ORT format (``.ort``), for mobile and embedded apps.

An ``.ort`` file is the graph already optimized and serialized as a flatbuffer: ONNX Runtime's mobile
packages and reduced ("minimal") builds load only this format, without the ONNX parser or the graph
optimizers. Beside it goes the operator configuration (``*.required_operators_and_types.config``) that a
reduced build of ONNX Runtime is compiled from, so an app ships only the kernels this model uses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from slm.bundle.derive import derive_bundle, drop_components
from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Manifest, OnnxSpec
from slm.compression.export import ONNX_DIR, sample_texts
from slm.errors import BundleError, ConfigError, ModelError

log = logging.getLogger(__name__)

ORT_FILE = "model.ort"
# The bar: the .ort model reproduces the ONNX model's raw outputs (logits) to 1e-5. Both run the same
# optimized graph, so the measured difference is 0 on the BANKING77 int8 and fp32 bundles.
ORT_TOLERANCE = 1e-5


def convert_to_ort(onnx_file: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/model.ort`` and its operator config with ONNX Runtime's own converter.

    Fixed optimization style (every optimization applied now, none at load time) and a config with the
    operators' types (the smallest reduced build). The NCHWc layout transformer is left out, as the
    converter does for any target but "amd64": it would tie the file to x86 CPUs.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="slm-ort-") as tmp:
        source = Path(tmp) / "model.onnx"  # the converter names its outputs after the input file
        source.symlink_to(onnx_file.resolve())
        chatter = io.StringIO()  # the converter prints progress; keep it for the log at debug level
        try:
            with contextlib.redirect_stdout(chatter), _quiet(logging.getLogger("ort_format_model.utils")):
                styles = [OptimizationStyle.Fixed]
                convert_onnx_models_to_ort(
                    source, output_dir=out_dir, optimization_styles=styles, enable_type_reduction=True
                )
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"ONNX Runtime could not convert {onnx_file} to ORT format: {first}") from None
        finally:
            log.debug(chatter.getvalue())
    configs = sorted(out_dir.glob("*.config"))
    if not (out_dir / ORT_FILE).is_file() or len(configs) != 1:
        raise ModelError(f"ONNX Runtime's converter wrote {sorted(p.name for p in out_dir.iterdir())} to {out_dir}")
    return out_dir / ORT_FILE, configs[0]


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """The converter's own logger says at INFO where it wrote the config (a staging path): warnings only."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _logits(root: Path, spec: OnnxSpec, texts: list[str]) -> np.ndarray:
    from slm.runtime.onnx import OnnxComponent

    return OnnxComponent(root, spec).logits(texts, batch_size=16)


def export_ort_bundle(
    bundle: str | Path, output: str | Path, *, texts: list[str] | None = None, tolerance: float = ORT_TOLERANCE
) -> Manifest:
    """Write a copy of an exported ``bundle`` whose model is the ``.ort`` file; refused unless it matches.

    The check runs both models in ONNX Runtime on ``texts`` (default: a sample of the training file) and
    compares the raw outputs. The new bundle keeps the tokenizer and labels, drops the ``.onnx`` file and the
    PyTorch weights (a mobile app needs neither), and predicts with ``slm predict`` like any exported bundle.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    spec = manifest.components.onnx
    if spec is None:
        raise BundleError(f"{bundle} has no ONNX model: run 'slm export {bundle}' first (then --target ort on that)")
    if spec.file.endswith(".ort"):
        raise ConfigError(f"{bundle} is already in ORT format ({spec.file})")
    if spec.engine == "openvino":  # its int8 model is an OpenVINO IR; its ONNX file is the fp32 model
        raise ConfigError(
            f"{bundle} is quantized for OpenVINO (int8-openvino), which ONNX Runtime cannot run: export the int8 bundle"
        )
    if spec.precision == "int4":  # measured with onnxruntime 1.32: its ORT format has no 4-bit tensor type
        raise ConfigError(
            f"{bundle} holds 4-bit weights, which ONNX Runtime's ORT format cannot store: export an int8 or fp32 bundle"
        )
    sample = sample_texts(manifest, texts)
    reference = _logits(bundle, spec, sample)

    def change(staging: Path, new: Manifest) -> Manifest:
        onnx_dir = staging / ONNX_DIR
        onnx_dir.mkdir(exist_ok=True)
        ort_file, config = convert_to_ort(bundle / spec.file, onnx_dir)
        ort_spec = replace(spec, file=f"{ONNX_DIR}/{ORT_FILE}", parity=None)
        diff = float(np.abs(_logits(staging, ort_spec, sample) - reference).max())
        if not diff <= tolerance:
            raise ModelError(
                f"the ORT-format model's outputs differ from the ONNX model's by up to {diff:.2e} "
                f"(tolerance {tolerance:.0e}); the bundle was not written"
            )
        drop_components(staging, new, keep={"onnx"})
        new.components.onnx = replace(
            ort_spec, parity={"against": "onnx", "max_abs_diff": diff, "tolerance": tolerance, "texts": len(sample)}
        )
        new.compression = {
            **(new.compression or {}),
            "ort_format": {
                "file": ort_spec.file,
                "operators_config": f"{ONNX_DIR}/{config.name}",
                "onnx_mb": round((bundle / spec.file).stat().st_size / 1e6, 2),
                "ort_mb": round(ort_file.stat().st_size / 1e6, 2),
                "onnxruntime": _ort_version(),
            },
        }
        new.default_component = "transformer"
        return new

    log.info(f"converting {bundle / spec.file} to ORT format; checking it on {len(sample)} texts")
    return derive_bundle(bundle, output, change, drop=("model", ONNX_DIR, "report"), step="export-ort")


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
