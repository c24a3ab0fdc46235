"""The transformer run by OpenVINO instead of ONNX Runtime: same bundle, same tokenizer, same batching.

Why a second engine: on this project's CPU an NNCF-int8 MiniLM on OpenVINO did 1,309 texts/s at batch 32
against 855 for ONNX Runtime's dynamic int8, while ONNX Runtime stayed faster at batch 1 (1.54 against
3.50 ms; bench/results/openvino_peer.md). Only ``openvino`` is imported here (NNCF, the quantizer, is a
compression-time dependency). OpenVINO reads the bundle's ONNX file itself; it cannot read ONNX Runtime's
dynamic-int8 contrib operators (QAttention, QEmbedLayerNormalization), which is refused in one line.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slm.errors import BundleError
from slm.extras import MissingExtra
from slm.runtime.onnx import DEFAULT_THREADS, OnnxComponent

if TYPE_CHECKING:
    from slm.bundle.schema import EncoderSpec, OnnxSpec

log = logging.getLogger(__name__)

EXTRA = "openvino"
# Measured best on 2 shared cores (bench/openvino_peer.py): one stream, latency hint, a fixed thread count.
PERFORMANCE_HINT = "LATENCY"
NUM_STREAMS = "1"
# OpenVINO's report of graph operators it has no conversion for (e.g. com.microsoft.QAttention).
UNCONVERTED = re.compile(r"No conversion rule found for operations:\s*([^\n]+)")


def import_openvino(what: str = "--backend openvino") -> Any:
    """The ``openvino`` module, or a one-line :class:`MissingExtra` naming ``pip install 'slm[openvino]'``."""
    try:
        import openvino
    except ImportError:
        raise MissingExtra("openvino", EXTRA, what=what) from None
    return openvino


def weights_of(xml: str) -> str:
    """The weights file of an OpenVINO IR: the ``.bin`` beside its ``.xml``."""
    return str(Path(xml).with_suffix(".bin"))


def compile_config(threads: int | None, *, exact: bool = True) -> dict[str, str]:
    """CPU plugin settings: a fixed thread count (as ONNX Runtime's intra-op threads), one stream, latency hint.

    ``exact`` keeps fp32 arithmetic: on a CPU with AVX-512 BF16 OpenVINO otherwise runs float layers in
    bfloat16, which moved an fp32 MiniLM's logits by up to 0.06 here. The int8 IR of ``--quantize
    int8-openvino`` is compiled with OpenVINO's default instead (the measured recipe), as the gate checked it.
    """
    config = {
        "INFERENCE_NUM_THREADS": str(int(threads or DEFAULT_THREADS)),
        "PERFORMANCE_HINT": PERFORMANCE_HINT,
        "NUM_STREAMS": NUM_STREAMS,
    }
    if exact:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


def unreadable_reason(root: Path, message: str) -> str:
    """One line for an ONNX file OpenVINO cannot read; the dynamic-int8 case says what to do instead."""
    found = UNCONVERTED.search(message)
    if found is None:
        lines = [line for line in message.splitlines() if line.strip()]
        return f"{root}: OpenVINO cannot load the ONNX model: {lines[-1] if lines else 'unknown error'}"
    operators = found.group(1).strip()
    return (
        f"{root}: OpenVINO cannot read this ONNX model (operators {operators}, from ONNX Runtime's dynamic int8): "
        "compress the fp32 bundle with 'slm compress --quantize int8-openvino', or run it with --backend onnx"
    )


class OpenVinoComponent(OnnxComponent):
    """Tokenizer + an OpenVINO compiled model for a bundle's ``onnx`` component spec (CPU, dynamic shapes).

    Everything but loading and running the graph is :class:`OnnxComponent`'s. An OpenVINO infer request is
    not safe to share between threads (an ONNX Runtime session is), so runs are serialized by a lock: one
    request with a fixed thread count is also what was measured fastest here.
    """

    def open_model(
        self, root: Path, spec: OnnxSpec | EncoderSpec, locate: Callable[[str], Path], threads: int | None
    ) -> None:
        """Read the spec's OpenVINO IR when it has one (an int8-openvino bundle), else its ONNX file with
        OpenVINO's ONNX frontend, and compile it for the CPU. Both IR files are opened through ``locate``."""
        ov = import_openvino()
        self._lock = threading.Lock()  # see the class docstring
        core = ov.Core()
        ir = getattr(spec, "openvino_ir", None)
        try:
            if ir is not None:
                file = locate(ir)
                model = core.read_model(str(file), str(locate(weights_of(ir))))
            else:
                file = locate(spec.file)
                model = core.read_model(str(file))
        except BundleError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line reports
            raise BundleError(unreadable_reason(root, str(exc))) from None
        config = compile_config(threads, exact=ir is None)
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BundleError(unreadable_reason(root, str(exc))) from None
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.input_names = {name for port in compiled.inputs for name in port.get_names()}
        self.output_widths = {port.get_any_name(): _last_dim(port) for port in compiled.outputs}
        log.debug(f"{root}: {file.name} compiled by OpenVINO {ov.__version__} ({config})")

    def run_feeds(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        """The named outputs, copied out of the request's buffers (the next run overwrites them)."""
        wanted = {name: value for name, value in feeds.items() if name in self.input_names}
        with self._lock:
            self.request.infer(wanted)
            return [np.array(self.request.get_tensor(name).data, dtype=np.float32) for name in outputs]


def _last_dim(port: Any) -> int | None:
    """An output's last dimension when the graph fixes it (the number of labels for ``logits``), else None."""
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic or len(shape) == 0:
        return None
    last = shape[len(shape) - 1]
    return int(last.get_length()) if last.is_static else None
