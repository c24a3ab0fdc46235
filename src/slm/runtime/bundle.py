"""Load a bundle and predict with it: ONNX Runtime or the static tier without PyTorch, else PyTorch."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from slm.bundle.manifest import bundle_path, read_manifest
from slm.bundle.predictions import decode
from slm.bundle.schema import ComponentSpec, Manifest
from slm.bundle.textlimit import cut_texts, text_limit
from slm.errors import BundleError, ConfigError
from slm.extras import is_installed
from slm.models.ensemble import ensemble_probabilities, probabilities

if TYPE_CHECKING:
    from slm.runtime.ngram import NgramPredictor
    from slm.runtime.onnx import OnnxComponent
    from slm.runtime.openvino import OpenVinoComponent
    from slm.runtime.static import StaticComponent
    from slm.training.component import TransformerComponent

COMPONENTS = ("ensemble", "transformer", "ngram", "static")
# onnx: ONNX Runtime; openvino: OpenVINO on the same ONNX file (slm[openvino]); torch: the PyTorch weights.
BACKENDS = ("onnx", "openvino", "torch")
ONNX_BACKENDS = ("onnx", "openvino")
SpecT = TypeVar("SpecT", bound=ComponentSpec)


log = logging.getLogger(__name__)
_told: set[str] = set()  # bundles whose OpenVINO default was logged (once per process)

OTHER_COMMANDS = {"recommendation": ": use 'slm app recommend rank|evaluate' or 'slm serve' with it"}


class Bundle:
    """A trained model directory: manifest, tokenizer, transformer weights and n-gram model.

    The manifest's digest (or signature) and every file's sha256 are verified on load, and each
    component's files are opened only through :func:`~slm.bundle.manifest.bundle_path`. Each
    component checks, when first loaded, that its output width is the number of labels. The
    transformer runs with ONNX Runtime when the bundle has an ONNX model (no PyTorch import), else
    with PyTorch; ``backend`` forces one ("onnx", "openvino" or "torch"). A graph quantized for OpenVINO
    (``slm compress --quantize int8-openvino``) runs on OpenVINO by default when it is installed. ``threads``
    sets the engine's CPU threads.
    """

    def __init__(
        self, path: str | Path, *, verify: bool = True, backend: str | None = None, threads: int | None = None
    ) -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path, verify=verify)
        if self.manifest.labels is None:
            hint = OTHER_COMMANDS.get(self.manifest.task, "")
            raise BundleError(f"{self.path} is a {self.manifest.task} bundle, not a classifier{hint}")
        self.labels: list[str] = list(self.manifest.labels)
        self.task: str = self.manifest.task
        components = self.manifest.components
        if backend is None:
            backend = default_backend(self.path, self.manifest)
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{backend}': choose from {', '.join(BACKENDS)}")
        needed = components.onnx if backend in ONNX_BACKENDS else components.transformer
        if needed is None and (components.transformer is not None or components.onnx is not None):
            raise BundleError(f"{self.path} has no {'ONNX' if backend in ONNX_BACKENDS else 'PyTorch'} transformer")
        self.backend = backend
        self.threads = threads

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, task={self.task!r}, labels={len(self.labels)})"

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    @property
    def default_component(self) -> str:
        return self.manifest.default_component or "ensemble"

    # -- components, loaded on first use --------------------------------------------------
    @cached_property
    def _transformer(self) -> OnnxComponent | OpenVinoComponent | TransformerComponent:
        if self.backend in ONNX_BACKENDS:
            from slm.runtime.onnx import OnnxComponent
            from slm.runtime.openvino import OpenVinoComponent

            engine = OpenVinoComponent if self.backend == "openvino" else OnnxComponent
            onnx_spec = self._spec(self.manifest.components.onnx, "onnx")
            onnx = engine(self.path, onnx_spec, threads=self.threads, manifest=self.manifest)
            self._check_width("ONNX model", onnx.output_widths.get("logits"))
            return onnx
        from slm.training.component import TransformerComponent

        spec = self._spec(self.manifest.components.transformer, "transformer")
        return TransformerComponent(self.path, spec, len(self.labels), manifest=self.manifest)

    @cached_property
    def _static(self) -> StaticComponent:
        from slm.runtime.static import StaticComponent

        spec = self._spec(self.manifest.components.static, "static")
        return StaticComponent(self.path, spec, self.labels, self.multi_label, manifest=self.manifest)

    def _spec(self, spec: SpecT | None, name: str) -> SpecT:
        """A component's spec; only asked for after :meth:`_check_component` found the component."""
        if spec is None:
            raise BundleError(f"{self.path} has no {name} component (it has: {', '.join(self.components)})")
        return spec

    def _check_width(self, what: str, width: int | None) -> None:
        """A model scores one class per label: a manifest whose labels do not fit it belongs to another model.

        Without this, 76 labels for a 77-output model fail at decoding ("internal error", or a 500 from
        the server) instead of at load.
        """
        if width is not None and width != len(self.labels):
            raise BundleError(
                f"{self.path}: the {what} has {width} outputs but the manifest lists {len(self.labels)} labels: "
                "the manifest does not belong to this model (restore the bundle or rebuild it)"
            )

    @cached_property
    def components(self) -> list[str]:
        """The components this bundle can predict with."""
        have = self.manifest.components
        out = [c for c in ("transformer", "ngram", "static") if c in have or (c == "transformer" and "onnx" in have)]
        if "transformer" in out and have.ngram is not None and self.manifest.ensemble is not None:
            out.insert(0, "ensemble")
        return out

    @cached_property
    def _ngram(self) -> NgramPredictor:
        """The n-gram model, computed with numpy alone (no scikit-learn, no SciPy): the ensemble runs under
        ``slm[runtime]``, with the same probabilities as the fitted model (checked to 1e-6 in the tests)."""
        from slm.runtime.ngram import NgramPredictor

        spec = self._spec(self.manifest.components.ngram, "ngram")
        ngram = NgramPredictor.load(bundle_path(self.path, self.manifest, spec.dir))
        self._check_width("n-gram model", ngram.n_classes)
        return ngram

    def _check_component(self, component: str | None) -> str:
        component = component or self.default_component
        if component not in COMPONENTS:
            raise ConfigError(f"unknown component '{component}': choose from {', '.join(COMPONENTS)}")
        if component not in self.components:
            raise BundleError(f"{self.path} has no {component} component (it has: {', '.join(self.components)})")
        return component

    # -- prediction ------------------------------------------------------------------------
    @cached_property
    def text_limit(self) -> int:
        """Non-whitespace characters of a text that any component reads (the cut in slm.bundle.textlimit).

        Every prediction cuts texts to it before tokenizing: the tokenizers and the n-gram baseline
        otherwise work on the whole string, however long (one 20 MB text took 3.4 GB).
        """
        return text_limit(max((spec.token_limit() for _, spec in self.manifest.components.items()), default=0))

    def predict_proba(
        self,
        texts: list[str],
        *,
        component: str | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Probabilities ``(n, k)`` in ``self.labels`` order."""
        component = self._check_component(component)
        texts = cut_texts(texts, self.text_limit)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if component == "ngram":
            return self._ngram.predict_proba(texts)
        if component == "static":
            return self._static.predict_proba(texts)
        transformer = self._transformer_proba(texts, batch_size, show_progress)
        if component == "transformer":
            return transformer
        return self._ensemble(transformer, texts)

    def component_probas(self, texts: list[str], *, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Probabilities of every component, running each model once (for evaluation)."""
        texts = cut_texts(texts, self.text_limit)
        out = {}
        have = self.components
        if "ngram" in have:
            out["ngram"] = self._ngram.predict_proba(texts)
        if "static" in have:
            out["static"] = self._static.predict_proba(texts)
        if "transformer" in have:
            out["transformer"] = self._transformer_proba(texts, batch_size, False)
        if "ensemble" in have:
            out["ensemble"] = self._ensemble(out["transformer"], texts, ngram=out.get("ngram"))
        return out

    def _transformer_proba(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        logits = self._transformer.logits(texts, batch_size=batch_size, show_progress=show_progress)
        if logits.ndim == 2 and logits.shape[0]:
            self._check_width("transformer", logits.shape[1])  # an ONNX graph may not declare its width
        return probabilities(logits, self.multi_label)

    def _ensemble(self, transformer: np.ndarray, texts: list[str], ngram: np.ndarray | None = None) -> np.ndarray:
        """The shipped combination of transformer and n-gram probabilities."""
        ensemble = self.manifest.ensemble
        if ensemble is None:
            raise BundleError(f"{self.path} has no ensemble component (it has: {', '.join(self.components)})")
        weight = float(ensemble.transformer_weight)
        if weight < 1.0 and ngram is None:
            ngram = self._ngram.predict_proba(texts)
        return ensemble_probabilities(transformer, ngram, weight, ensemble.log_prior_shift)

    def over_token_limit(self, texts: list[str], chunk: int = 1024) -> tuple[np.ndarray, int] | None:
        """Which texts are longer than the transformer reads (its ``max_length`` in tokens), and that limit;
        None without a transformer. The evaluation report slices by it: the transformer sees only the first
        ``max_length`` tokens of those texts."""
        have = self.manifest.components
        spec = have.onnx if have.onnx is not None else have.transformer
        if spec is None or spec.token_limit() <= 0:
            return None
        from slm.runtime.onnx import load_tokenizer

        limit = spec.token_limit()
        tokenizer = load_tokenizer(bundle_path(self.path, self.manifest, spec.tokenizer), limit + 1)
        texts = cut_texts(texts, self.text_limit)
        over = np.zeros(len(texts), dtype=bool)
        for start in range(0, len(texts), chunk):
            batch = tokenizer.encode_batch(texts[start : start + chunk])
            over[start : start + len(batch)] = [len(encoding.ids) > limit for encoding in batch]
        return over, limit

    def thresholds(self, component: str | None = None) -> np.ndarray:
        """Per-label decision thresholds (multi-label only)."""
        component = self._check_component(component)
        values = (self.manifest.thresholds or {}).get(component)
        return np.asarray(values if values is not None else [0.5] * len(self.labels), dtype=np.float32)

    def predict(
        self,
        texts: list[str],
        *,
        component: str | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> list[dict[str, Any]]:
        """One dict per text: ``label`` (``list`` for multi-label), ``score`` and ``probabilities``."""
        proba = self.predict_proba(texts, component=component, batch_size=batch_size, show_progress=show_progress)
        return decode(proba, self.labels, self.thresholds(component) if self.multi_label else None)


def default_backend(path: Path, manifest: Manifest) -> str:
    """The engine a bundle runs on when none is asked for.

    ONNX Runtime for an ONNX model, except one quantized for OpenVINO (``--quantize int8-openvino``): its int8
    IR runs on OpenVINO when that is installed (NNCF int8 on OpenVINO was 1.5x ONNX Runtime's int8 at batch 32
    here), and otherwise its fp32 ONNX file runs on ONNX Runtime. PyTorch for a bundle without ONNX.
    """
    onnx = manifest.components.onnx
    if onnx is None:
        return "torch"
    if onnx.engine != "openvino" or not is_installed("openvino"):
        return "onnx"
    if str(path) not in _told:
        _told.add(str(path))
        log.debug(f"{path}: quantized for OpenVINO, running it on OpenVINO (--backend onnx for ONNX Runtime)")
    return "openvino"


def load(path: str | Path, *, backend: str | None = None, threads: int | None = None) -> Bundle:
    """Open and verify a bundle directory."""
    return Bundle(path, backend=backend, threads=threads)
