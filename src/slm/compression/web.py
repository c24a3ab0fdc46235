"""``slm export BUNDLE --target web``: a static folder that classifies in the browser, with no server.

The folder holds a demo page (``index.html``), the JavaScript API (``slm-classifier.mjs``: ``load(url)`` then
``classify(texts)``), the model, the bundle's ``tokenizer.json``, ``model.json`` (labels, limits, settings) and
the vendored npm files: onnxruntime-web's WebAssembly build (SIMD; threads when the page is cross-origin
isolated) and ``@huggingface/tokenizers``. Two kinds of bundle export:

* ``onnx``: an exported (``slm export``) or int8-compressed (``slm compress --quantize int8``) bundle; the page
  runs its ONNX transformer with onnxruntime-web. The n-gram side of an ensemble is not exported.
* ``static``: the turbo tier (``slm compress --static``), in plain JavaScript: token vectors, mean, L2 norm,
  a linear layer and softmax. No ONNX Runtime is shipped.

Before the folder is written, node runs the page's own module on a sample of texts (the training file's, or the
given ones) and the export is refused unless its token ids equal the Python tokenizer's exactly and its
probabilities match :mod:`slm.runtime` within the tolerance.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slm.bundle.manifest import bundle_path
from slm.bundle.schema import CLASSIFIER_TASKS
from slm.bundle.textlimit import cut_texts
from slm.compression.npm import TEMPLATE, ensure_runtime, pinned_versions, require_tool
from slm.errors import BundleError, ConfigError, ModelError, one_line
from slm.fileio import atomic_directory
from slm.runtime.bundle import Bundle

log = logging.getLogger(__name__)

FORMAT = "slm-web"
FORMAT_VERSION = 1
CHECK_TOLERANCE = 1e-3  # largest allowed probability difference between the page and slm.runtime
MIN_AGREEMENT = 0.99  # share of the check's texts whose label must equal slm.runtime's
CHECK_TIMEOUT_S = 900
BATCH_SIZE = 64  # slm.runtime.Bundle.predict_proba's default: the page batches texts by length the same way
PAGE_FILES = ("index.html", "slm-classifier.mjs", "serve.py", "README.md")
TOKENIZER_FILES = {
    "vendor/tokenizers/tokenizers.min.mjs": "@huggingface/tokenizers/dist/tokenizers.min.mjs",
    "vendor/tokenizers/LICENSE": "@huggingface/tokenizers/LICENSE",
}
# The smallest build that runs the fused int8 graphs: WebAssembly with SIMD and threads (14.8 MB for 1.31.1;
# the JSPI and WebGPU builds are larger). Not the .bundle form: under node (the export's check) it still
# imports the separate Emscripten glue, so the glue ships as its own file and browser and node run the same files.
ORT_FILES = {
    "vendor/onnxruntime-web/ort.wasm.min.mjs": "onnxruntime-web/dist/ort.wasm.min.mjs",
    "vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
}
PROBES = ("", "Café naïve 😀 — ÅNGSTRÖM ß 中文")  # edge texts every check includes beside the sample


@dataclass(frozen=True)
class WebExport:
    """A folder :func:`export_web_folder` wrote: where, what kind, its files and the check it passed."""

    path: Path
    kind: str  # "onnx" or "static"
    files: dict[str, int]  # relative path -> bytes
    check: dict[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


@dataclass
class _Plan:
    """What the page will run, read from the bundle: settings for model.json and the files to copy."""

    bundle: Bundle
    kind: str
    component: str
    settings: dict[str, Any]
    copies: dict[str, Path] = field(default_factory=dict)  # destination -> file in the bundle
    blobs: dict[str, bytes] = field(default_factory=dict)  # destination -> bytes written as they are
    notes: list[str] = field(default_factory=list)


def export_web_folder(
    bundle: str | Path,
    target: str | Path,
    *,
    texts: list[str] | None = None,
    tolerance: float = CHECK_TOLERANCE,
    cache: str | Path | None = None,
) -> WebExport:
    """Write the web folder for ``bundle`` at ``target`` (replaced atomically); refused unless the check passes.

    ``texts``: the check's sample (default: 256 texts of the training file). ``cache``: where npm's install
    is kept (default ``$SLM_CACHE/web-runtime``). The caller claims ``target`` first (claim_output_folder).
    """
    plan = _plan(Path(bundle))
    modules = ensure_runtime(cache)
    require_tool("node")
    for note in plan.notes:
        log.warning(note)
    sample = _check_texts(plan.bundle, texts)
    target = Path(target)
    with atomic_directory(target) as staging:
        _write(staging, plan, modules)
        log.info(f"checking the page's JavaScript in node against slm.runtime on {len(sample)} texts")
        check = _check(staging, plan, sample, tolerance)
        settings = json.loads((staging / "model.json").read_text(encoding="utf-8"))
        (staging / "model.json").write_text(json.dumps({**settings, "check": check}, indent=1), encoding="utf-8")
        files = {p.relative_to(staging).as_posix(): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
    return WebExport(target, plan.kind, files, check, tuple(plan.notes))


# ---------------------------------------------------------------- what the page runs


def _plan(path: Path) -> _Plan:
    """The kind of export ``path`` makes, or a one-line error saying what to run first."""
    bundle = Bundle(path)  # verifies the manifest and every file's hash; refuses non-classifiers
    manifest = bundle.manifest
    if bundle.task not in CLASSIFIER_TASKS:
        raise BundleError(f"{path} is a {bundle.task} bundle: --target web exports classifiers only")
    components = manifest.components
    default = bundle.default_component
    settings: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": bundle.task, "labels": bundle.labels,
        "text_limit": bundle.text_limit, "tokenizer": "tokenizer.json",
        "source": {"bundle": path.name, "created": manifest.created, "slm_version": manifest.slm_version,
                   "default_component": default},
    }  # fmt: skip
    if components.static is not None and (default == "static" or components.onnx is None):
        plan = _static_plan(bundle, settings)
    elif components.onnx is not None:
        plan = _onnx_plan(bundle, settings)
    elif components.transformer is not None:
        raise BundleError(
            f"{path} has no ONNX model: run `slm export {path}` then `slm compress {path}-onnx --quantize int8`, "
            "and export that bundle with --target web"
        )
    else:
        raise BundleError(f"{path} has no transformer or static model to run in a browser (it has: {default})")
    settings["source"]["component"] = plan.component
    if bundle.multi_label:
        settings["thresholds"] = [float(t) for t in bundle.thresholds(plan.component)]
    if default in ("ensemble", "ngram") and plan.component != default:
        plan.notes.append(
            f"{path} predicts with its {default} by default; the web page runs the {plan.component} alone "
            "(the n-gram model is not exported), so its predictions can differ from `slm predict`'s"
        )
    elif components.ngram is not None and manifest.ensemble is not None:
        plan.notes.append(
            f"the n-gram side of {path}'s ensemble (`--component ensemble`) is not exported: the web page runs "
            f"the {plan.component} alone, as `slm predict` does by default"
        )
    settings["notes"] = plan.notes
    return plan


def _onnx_plan(bundle: Bundle, settings: dict[str, Any]) -> _Plan:
    from slm.runtime.onnx import load_tokenizer, pad_id

    manifest = bundle.manifest
    spec = manifest.components.onnx
    assert spec is not None  # _plan checked
    if spec.engine == "openvino":  # its int8 model is an OpenVINO IR; its ONNX file is the fp32 model
        raise ConfigError(
            f"{bundle.path} is quantized for OpenVINO (int8-openvino), which the browser cannot run: export the "
            "int8 bundle"
        )
    tokenizer_dir = bundle_path(bundle.path, manifest, spec.tokenizer)
    tokenizer_file = tokenizer_dir / "tokenizer.json" if tokenizer_dir.is_dir() else tokenizer_dir
    tokenizer = load_tokenizer(tokenizer_file, spec.max_length)
    settings.update(kind="onnx")
    settings["onnx"] = {
        "file": "model.onnx", "max_length": int(spec.max_length), "pad_id": pad_id(tokenizer),
        "output": spec.output or "logits", "batch_size": BATCH_SIZE, "precision": spec.precision,
    }  # fmt: skip
    plan = _Plan(bundle, "onnx", "transformer", settings)
    plan.copies = {"model.onnx": bundle_path(bundle.path, manifest, spec.file), "tokenizer.json": tokenizer_file}
    if spec.precision == "fp32":
        plan.notes.append(
            f"{bundle.path} holds an fp32 model: `slm compress {bundle.path} --quantize int8` makes the page's "
            "model about 4x smaller"
        )
    return plan


def _static_plan(bundle: Bundle, settings: dict[str, Any]) -> _Plan:
    """The static tier as one binary file: token vectors (as stored, float16 or float32), head weight and bias."""
    from safetensors.numpy import load_file

    from slm.runtime.static import EMBEDDINGS_FILE, HEAD_FILE, TOKENIZER_FILE, StaticComponent

    manifest = bundle.manifest
    spec = manifest.components.static
    assert spec is not None  # _plan checked
    static = StaticComponent(bundle.path, spec, bundle.labels, bundle.multi_label, manifest=manifest)
    embedder = static.embedder

    def locate(name: str | None, default: str) -> Path:
        return bundle_path(bundle.path, manifest, f"{spec.dir}/{name or default}")

    table = load_file(str(locate(spec.embeddings, EMBEDDINGS_FILE)))["embeddings"]
    if table.dtype not in (np.float16, np.float32):
        table = table.astype(np.float32)
    head = load_file(str(locate(spec.head, HEAD_FILE)))
    arrays = {
        "embeddings": np.ascontiguousarray(table, dtype=table.dtype.newbyteorder("<")),
        "weight": np.ascontiguousarray(head["weight"], dtype="<f4"),
        "bias": np.ascontiguousarray(head["bias"], dtype="<f4"),
    }
    blob, layout = bytearray(), {}
    for name, array in arrays.items():
        blob.extend(b"\0" * (-len(blob) % 8))  # typed arrays need aligned offsets
        layout[name] = {"dtype": str(array.dtype.name), "offset": len(blob), "count": int(array.size),
                        "shape": list(array.shape)}  # fmt: skip
        blob.extend(array.tobytes())
    settings.update(kind="static")
    settings["static"] = {
        "file": "static.bin", "dims": embedder.dim, "max_length": embedder.max_length,
        "median_token_length": embedder.median_token_length, "unk_id": embedder.unk_id,
        "normalize": embedder.normalize, **layout,
    }  # fmt: skip
    plan = _Plan(bundle, "static", "static", settings)
    plan.copies = {"tokenizer.json": locate(spec.tokenizer, TOKENIZER_FILE)}
    plan.blobs = {"static.bin": bytes(blob)}
    return plan


# ---------------------------------------------------------------- the folder


def _write(folder: Path, plan: _Plan, modules: Path) -> None:
    """Page files, vendored npm files, the model and model.json into ``folder``."""
    vendored = {**TOKENIZER_FILES, **(ORT_FILES if plan.kind == "onnx" else {})}
    packages = {name: version for name, version in pinned_versions().items()
                if plan.kind == "onnx" or name != "onnxruntime-web"}  # fmt: skip
    for name in PAGE_FILES:
        shutil.copyfile(TEMPLATE / name, folder / name)
    for destination, source in {**{d: modules / s for d, s in vendored.items()}, **plan.copies}.items():
        if not source.is_file():
            raise ConfigError(f"{source} is missing: the npm install in {modules.parent} is damaged (delete it)")
        (folder / destination).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / destination)
    for destination, data in plan.blobs.items():
        (folder / destination).write_bytes(data)
    (folder / "vendor" / "NOTICE.md").write_text(_notice(modules, packages), encoding="utf-8")
    settings = {**plan.settings, "runtime": packages}
    (folder / "model.json").write_text(json.dumps(settings, indent=1), encoding="utf-8")


def _notice(modules: Path, packages: dict[str, str]) -> str:
    lines = ["# Vendored JavaScript", "", "Fetched from the npm registry by `slm export --target web` (npm ci, "
             "integrity-checked against slm's lock file) and copied here unchanged.", ""]  # fmt: skip
    for name, version in packages.items():
        meta = json.loads((modules / name / "package.json").read_text(encoding="utf-8"))
        lines.append(f"- {name} {version}: license {meta.get('license', 'see the package')}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the check


def _check_texts(bundle: Bundle, texts: list[str] | None) -> list[str]:
    """The given texts, else a sample of the training file, else the label names; plus PROBES."""
    from slm.compression.export import sample_texts

    try:
        sample = sample_texts(bundle.manifest, texts)
    except ConfigError:
        if texts is not None:
            raise
        log.info("the bundle's training file is not available: checking the page on its label names (or pass --data)")
        sample = [label.replace("_", " ") for label in bundle.labels]
    return [*sample, *PROBES]


def _check(folder: Path, plan: _Plan, texts: list[str], tolerance: float) -> dict[str, Any]:
    """Run the page's module in node on ``texts``; ModelError unless it computes what slm.runtime computes.

    Token ids must be equal on every text and labels agree on at least MIN_AGREEMENT of them. Probabilities: an
    fp32 or static model's largest difference must be within ``tolerance`` (measured: 7e-7 and 1.3e-6 on
    BANKING77). An int8 model quantizes its activations per batch, on the fly, so the last float bit that
    differs between two engines' kernels moves a few texts a lot: on the 3,080 BANKING77 test texts the page
    and slm.runtime differ by a median 1e-5 but up to 0.08, while slm.runtime differs from itself by up to 0.30
    between batch sizes (labels 99.4% the same). There the median difference must be within ``tolerance``.
    """
    page = run_in_node(folder, texts)
    expected_ids = reference_ids(plan, texts)
    differ = [i for i, (a, b) in enumerate(zip(page["ids"], expected_ids, strict=True)) if a != b]
    if differ:
        raise ModelError(
            f"the page's JavaScript tokenizer differs from the bundle's tokenizer on {len(differ)} of {len(texts)} "
            f"texts (first: text {differ[0]}); the folder was not written"
        )
    expected = plan.bundle.predict_proba(texts, component=plan.component, batch_size=BATCH_SIZE)
    got = np.asarray(page["probabilities"], dtype=np.float64).reshape(expected.shape)
    per_text = np.abs(got - expected).max(axis=1)
    agree = float((got.argmax(axis=1) == expected.argmax(axis=1)).mean())
    quantized = plan.settings.get("onnx", {}).get("precision") not in (None, "fp32")
    measure = "median" if quantized else "max"
    value = float(np.median(per_text) if quantized else per_text.max())
    if not value <= tolerance or agree < MIN_AGREEMENT:
        raise ModelError(
            f"the page does not compute what slm.runtime computes on {len(texts)} texts: {measure} probability "
            f"difference {value:.1e} (tolerance {tolerance:.0e}), labels agree on {agree:.1%}; the folder was not "
            "written"
        )
    return {"texts": len(texts), "max_abs_diff": float(per_text.max()), "median_abs_diff": float(np.median(per_text)),
            "gated_on": measure, "tolerance": tolerance, "label_agreement": agree, "token_ids_equal": True,
            "engine": "node " + page["node"]}  # fmt: skip


def reference_ids(plan: _Plan, texts: list[str]) -> list[list[int]]:
    """The token ids slm.runtime feeds the model for ``texts`` (what the page's tokenizer must reproduce)."""
    bundle = plan.bundle
    texts = cut_texts(texts, bundle.text_limit)
    if plan.kind == "onnx":
        from slm.runtime.onnx import load_tokenizer

        spec = bundle.manifest.components.onnx
        assert spec is not None
        tokenizer = load_tokenizer(bundle_path(bundle.path, bundle.manifest, spec.tokenizer), spec.max_length)
        return [e.ids for e in tokenizer.encode_batch(texts)]
    from slm.runtime.static import StaticComponent

    spec_s = bundle.manifest.components.static
    assert spec_s is not None
    manifest = bundle.manifest
    embedder = StaticComponent(bundle.path, spec_s, bundle.labels, bundle.multi_label, manifest=manifest).embedder
    if embedder.max_length is not None:
        texts = [t[: embedder.max_length * embedder.median_token_length] for t in texts]
    encodings = embedder.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [[i for i in e.ids if i != embedder.unk_id] for e in encodings]


def run_in_node(folder: Path, texts: list[str]) -> dict[str, Any]:
    """``ids`` and ``probabilities`` of the folder's own ``slm-classifier.mjs`` for ``texts``, run by node."""
    node = require_tool("node")
    try:
        done = subprocess.run(
            [node, str(TEMPLATE / "check.mjs"), str(folder.resolve())],
            input=json.dumps(texts), capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ModelError(f"node did not finish the page's check in {CHECK_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip() and len(line) < 2000]
        errors = [line for line in lines if re.match(r"\w*Error\b", line)] or lines or ["no message"]
        raise ModelError(f"the page's JavaScript failed in node: {one_line(errors[0])[:300]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
