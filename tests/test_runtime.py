"""The torch-free runtime: a fresh process predicts with an exported bundle and never imports torch."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement

import slm
from slm.errors import BundleError

HEAVY = ("torch", "transformers", "sklearn", "scipy", "pandas", "matplotlib", "onnx")

SCRIPT = """
import json, sys
HEAVY = {heavy!r}
from slm.runtime import load
model = load(sys.argv[1], threads=1)
predictions = model.predict(["my card has not arrived yet", "how do I change my PIN?"])
print(json.dumps({{
    "labels": [p["label"] for p in predictions],
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
}}))
"""


def test_runtime_process_never_imports_torch(exported, tiny_bundle) -> None:
    command = [sys.executable, "-c", SCRIPT.format(heavy=HEAVY), str(exported)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    torch_labels = [
        p["label"]
        for p in slm.load(tiny_bundle).predict(
            ["my card has not arrived yet", "how do I change my PIN?"], component="transformer"
        )
    ]
    assert result["labels"] == torch_labels


def test_runtime_refuses_a_pytorch_only_bundle(tiny_bundle) -> None:
    from slm.runtime import load

    with pytest.raises(BundleError, match="slm export"):
        load(tiny_bundle)


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Installed distributions reached from ``requirements`` (markers evaluated for ``extras``)."""
    seen: set[str] = set()
    todo = [(r, extras) for r in requirements]
    while todo:
        raw, active = todo.pop()
        req = Requirement(raw)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        if name == "slm":
            todo += [(r, set(req.extras)) for r in distribution("slm").requires or []]
            continue
        with contextlib.suppress(PackageNotFoundError):
            todo += [(r, set(req.extras)) for r in distribution(name).requires or []]
    return seen


def test_runtime_extra_does_not_pull_torch_or_transformers() -> None:
    """Resolve `slm[runtime]` through the installed packages' own metadata."""
    runtime = _closure([r for r in distribution("slm").requires or []], {"runtime"})
    assert "onnxruntime" in runtime and "tokenizers" in runtime and "numpy" in runtime
    assert not {"torch", "transformers", "scikit-learn", "sentence-transformers"} & runtime, runtime
    training = _closure([r for r in distribution("slm").requires or []], {"train"})
    assert "torch" in training  # the check itself can see torch when it is there
