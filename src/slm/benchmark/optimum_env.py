"""The Hugging Face Optimum comparison: its own virtual environment, the ONNX export, the quantization.

Optimum's ONNX Runtime support (``optimum-onnx``) pins ``transformers<4.58`` and breaks with the
transformers 5.x that slm uses, so it lives in a separate virtual environment, built on demand
(``$SLM_CACHE/optimum-venv``, else ``~/.cache/slm/optimum-venv``) and reused while its pinned
requirements stay the same. Nothing of slm is imported there: the quantizer and the worker are the
standalone script ``isolated/optimum_worker.py``.

The fp32 ONNX graph Optimum starts from is exported here, in slm's own environment, from the
bundle's PyTorch weights (plain, unoptimized, opset 17), so both sides quantize the same model.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm.errors import BundleError, ConfigError, SlmError, one_line

if TYPE_CHECKING:
    from slm.bundle.schema import Manifest, TransformerSpec

WORKER_SCRIPT = Path(__file__).parent / "isolated" / "optimum_worker.py"
MARKER = "slm-optimum-requirements.json"
PIP_TIMEOUT_S = 1800
QUANTIZE_TIMEOUT_S = 900


def quantization_recipe(flags: frozenset[str] | None = None, machine: str | None = None) -> dict[str, Any]:
    """Optimum's documented dynamic-quantization recipe for this CPU, as a skilled user would pick it.

    ``AutoQuantizationConfig.<preset>(is_static=False, per_channel=False)`` (its quickstart and quantization
    guide), the preset named after the CPU's best int8 instructions: ``avx512_vnni`` where the CPU has VNNI,
    ``avx512``, ``avx2``, or ``arm64``. The avx2 preset on an AVX-512 VNNI CPU left Optimum 15% slower at
    batch 32 than its own avx512_vnni recipe (issue 27), so the peer would not have been at its best.
    The remaining arguments are the preset's defaults, resolved in the Optimum venv and recorded.
    """
    from slm.hardware import cpu_info

    flags = cpu_info()["flags"] if flags is None else flags
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in {"arm64", "aarch64"}:
        preset = "arm64"
    elif "avx512_vnni" in flags:
        preset = "avx512_vnni"
    elif "avx512f" in flags:
        preset = "avx512"
    else:
        preset = "avx2"
    return {"preset": preset, "is_static": False, "per_channel": False}


class OptimumError(SlmError):
    """The Optimum comparison cannot be set up or run."""

    exit_code = 3


def _installed(name: str, default: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return default


def requirements() -> list[str]:
    """What the Optimum venv installs, every version pinned.

    optimum-onnx 0.1.0 needs ``optimum~=2.1.0`` and ``transformers<4.58``; torch is pinned to the
    exact build slm runs with (here the local ``+cpu`` wheel: an unpinned torch pulls a multi-GB
    CUDA build); onnx and onnxruntime match slm's so both sides run the same kernels.
    """
    return [
        "optimum-onnx[onnxruntime]==0.1.0",
        "optimum==2.1.0",
        "transformers==4.57.6",
        f"torch=={_installed('torch', '2.13.0')}",
        f"onnxruntime=={_installed('onnxruntime', '1.32.0')}",
        f"onnx=={_installed('onnx', '1.23.2')}",
    ]


def default_venv_dir() -> Path:
    root = os.environ.get("SLM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "slm"
    return base / "optimum-venv"


def models_dir(venv: str | Path | None = None) -> Path:
    """Where Optimum's int8 models are cached, beside its venv: ``slm bench`` and the benchmark scripts share it."""
    return (Path(venv) if venv else default_venv_dir()).parent / "optimum-models"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _read_marker(venv: Path) -> dict | None:
    try:
        return json.loads((venv / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") or "Error" in line]
    return one_line((errors or lines or ["no message"])[-1])[:300]


def ensure_venv(venv: str | Path | None = None, *, log=None) -> tuple[Path, dict]:
    """The Optimum venv's python and its marker (requirements + ``pip freeze``), built if needed.

    A venv whose marker lists other requirements is rebuilt; a half-built one never has a marker
    (it is built under a temporary name and renamed when complete). Raises OptimumError.
    """
    venv = Path(venv) if venv is not None else default_venv_dir()
    wanted = requirements()
    marker = _read_marker(venv)
    if marker and marker.get("requirements") == wanted and venv_python(venv).exists():
        return venv_python(venv), marker
    staging = venv.with_name(venv.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if log:
        log(f"building the Optimum virtual environment in {venv} (once; a few minutes)")
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(staging)], "create the Optimum venv", 300)
        python = str(venv_python(staging))
        pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        _run([*pip, "install", "--quiet", "--only-binary=:all:", *wanted], "install Optimum", PIP_TIMEOUT_S)
        freeze = _run([*pip, "freeze"], "list the Optimum venv", 120).split()
        marker = {"requirements": wanted, "freeze": freeze, "python": sys.version.split()[0]}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(venv, ignore_errors=True)
        os.replace(staging, venv)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return venv_python(venv), marker


SKIP_HINT = "pass --no-optimum (optimum=False) to benchmark without it"


def _clean_env() -> dict[str, str]:
    """This environment without what would point the Optimum venv's python at slm's packages."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _run(command: list[str], what: str, timeout: float) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=_clean_env())
    except subprocess.TimeoutExpired:
        raise OptimumError(f"could not {what}: timed out after {timeout:.0f}s; {SKIP_HINT}") from None
    except OSError as exc:
        raise OptimumError(f"could not {what}: {exc.strerror or exc}; {SKIP_HINT}") from None
    if result.returncode != 0:
        raise OptimumError(f"could not {what}: {_last_error_line(result.stderr or result.stdout)}; {SKIP_HINT}")
    return result.stdout


# ---------------------------------------------------------------- ONNX export (slm's venv)


def _export_fp32_graph(bundle_path: Path, onnx_path: Path, opset: int = 17) -> str:
    """The bundle's classifier as a plain fp32 ONNX graph; returns which exporter was used.

    Uses ``slm.compression.export.export_onnx_graph`` when it exists; otherwise the same recipe
    here: torch.onnx.export (TorchScript exporter), eager attention, inputs ``input_ids`` and
    ``attention_mask`` (int64, dynamic batch and sequence), output ``logits``.
    """
    try:
        from slm.compression.export import export_onnx_graph
    except ImportError:
        _private_export(bundle_path, onnx_path, opset)
        return "slm.benchmark.optimum_env._private_export"
    export_onnx_graph(bundle_path, onnx_path, opset=opset)
    return "slm.compression.export.export_onnx_graph"


def _private_export(bundle_path: Path, onnx_path: Path, opset: int) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from slm.bundle.manifest import read_manifest
    from slm.models.encoder import classifier_from_config

    manifest = read_manifest(bundle_path)
    spec = manifest.components.transformer
    if spec is None:
        raise BundleError(f"{bundle_path} has no PyTorch weights to export for Optimum")
    config = AutoConfig.from_pretrained(bundle_path / spec.config)
    model = classifier_from_config(config, len(manifest.labels or []), attn_implementation="eager")
    model.load_state_dict(load_file(str(bundle_path / spec.weights)))
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (ids, mask),
            str(onnx_path),
            dynamo=False,
            opset_version=opset,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "sequence_length"},
                "logits": {0: "batch_size"},
            },
            do_constant_folding=True,
        )


def prepare_optimum_model(bundle_path: Path, workdir: Path, python: Path, *, cache: bool = True) -> dict:
    """Export ``bundle_path`` to ONNX beside a config and tokenizer, then quantize it with Optimum.

    Returns ``{"dir", "file_name", "export", "quantization", "fp32_mb", "int8_mb"}``. The result
    is cached in ``workdir`` keyed by the bundle's weights hash and the recipe's preset.
    """
    from slm.bundle.manifest import read_manifest

    manifest = read_manifest(bundle_path)
    spec = manifest.components.transformer
    if spec is None or not (bundle_path / spec.weights).is_file():
        raise BundleError(f"{bundle_path} has no PyTorch weights to export for Optimum")
    recipe = quantization_recipe()
    key = manifest.files.get(spec.weights, "")[:16]
    model_dir = workdir / f"optimum-{key}-{recipe['preset']}"
    info_path = model_dir / "slm-optimum.json"
    if cache and info_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if (model_dir / info["file_name"]).is_file():
                return {**info, "dir": str(model_dir)}
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    exporter = _export_fp32_graph(bundle_path, model_dir / "model.onnx")
    _write_hf_files(bundle_path, manifest, spec, model_dir)
    command = [
        str(python),
        str(WORKER_SCRIPT),
        "quantize",
        "--dir",
        str(model_dir),
        "--config",
        json.dumps(recipe),
    ]
    output = _run(command, "quantize with Optimum", QUANTIZE_TIMEOUT_S)
    result = json.loads(output.strip().splitlines()[-1])
    info = {
        "file_name": result["file_name"],
        "export": exporter,
        "quantization": result["quantization"],
        "fp32_mb": round((model_dir / "model.onnx").stat().st_size / 1e6, 2),
        "int8_mb": round((model_dir / result["file_name"]).stat().st_size / 1e6, 2),
        "max_length": int(spec.max_length),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {**info, "dir": str(model_dir)}


def _write_hf_files(bundle_path: Path, manifest: Manifest, spec: TransformerSpec, model_dir: Path) -> None:
    """config.json (a BertConfig-style sequence classifier) and the tokenizer files beside the graph."""
    config = json.loads((bundle_path / spec.config).read_text(encoding="utf-8"))
    labels = list(manifest.labels or [])
    config.update(
        {
            "architectures": ["BertForSequenceClassification"],
            "num_labels": len(labels),
            "id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "multi_label_classification" if manifest.multi_label else "single_label_classification",
        }
    )
    config.pop("transformers_version", None)
    config.pop("dtype", None)
    config["torch_dtype"] = "float32"
    (model_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer_dir = bundle_path / spec.tokenizer
    if not tokenizer_dir.is_dir():
        raise ConfigError(f"{bundle_path}: tokenizer folder {spec.tokenizer} is missing")
    for item in tokenizer_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, model_dir / item.name)
