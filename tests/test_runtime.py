"""The torch-free runtime: a fresh process predicts with an exported bundle and never imports torch.

The bundle is the kept untrained tiny one (``untrained_exported``): these tests compare ways of running a
model, not what it predicts.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pandas as pd
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


def test_runtime_process_never_imports_torch(untrained_exported, untrained_bundle) -> None:
    command = [sys.executable, "-c", SCRIPT.format(heavy=HEAVY), str(untrained_exported)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    torch_labels = [
        p["label"]
        for p in slm.load(untrained_bundle).predict(
            ["my card has not arrived yet", "how do I change my PIN?"], component="transformer"
        )
    ]
    assert result["labels"] == torch_labels


def test_runtime_refuses_a_pytorch_only_bundle(untrained_bundle) -> None:
    from slm.runtime import load

    with pytest.raises(BundleError, match="slm export"):
        load(untrained_bundle)


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Installed distributions reached from ``requirements`` (markers evaluated for ``extras``)."""
    seen: set[str] = set()
    slm_extras = set(extras)
    todo = [(r, extras) for r in requirements]
    while todo:
        raw, active = todo.pop()
        req = Requirement(raw)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        name = req.name.lower().replace("_", "-")
        if name == "slm":  # slm's own extras name each other (slm[serve] needs slm[runtime]): follow each once
            fresh = set(req.extras) - slm_extras
            slm_extras |= fresh
            todo += [(r, fresh) for r in distribution("slm").requires or []] if fresh else []
            continue
        if name in seen:
            continue
        seen.add(name)
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


def test_distributed_engines_are_extras_the_core_install_leaves_out() -> None:
    requires = [r for r in distribution("slm").requires or []]
    core = _closure(requires, set())
    assert "typer" in core and not {"ray", "torch"} & core, core
    assert "ray" in _closure(requires, {"ray"}) and "onnxruntime" in _closure(requires, {"ray"})
    assert "torch" in _closure(requires, {"distributed"})  # torchrun's launcher ships in torch


def test_length_chunks_bound_batch_size_and_padding() -> None:
    from slm.runtime.onnx import length_chunks

    rng = np.random.default_rng(0)
    lengths = sorted(rng.integers(3, 90, size=500).tolist())
    chunks = length_chunks(lengths, batch_size=32, pad_budget=16)
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(500))  # every text, once, in order
    for c in chunks:
        part = lengths[c]
        assert 1 <= len(part) <= 32
        assert len(part) == 1 or len(part) * part[-1] - sum(part) <= 16  # padding to the longest stays in budget
    assert length_chunks([5] * 70, 32) == [slice(0, 32), slice(32, 64), slice(64, 70)]
    assert length_chunks([3, 4, 60], 32, pad_budget=16) == [slice(0, 2), slice(2, 3)]
    assert length_chunks([], 32) == []


def test_length_chunked_logits_equal_one_padded_run(untrained_exported, banking_test_csv) -> None:
    from slm.bundle.manifest import read_manifest
    from slm.runtime.onnx import OnnxComponent

    spec = read_manifest(untrained_exported).components.onnx
    assert spec is not None
    component = OnnxComponent(untrained_exported, spec, threads=1)
    texts = pd.read_csv(banking_test_csv)["text"].tolist()[:40] + ["word " * 60]
    chunked = component.logits(texts, batch_size=64)
    (one_run,) = component.run(component.encode(texts))
    np.testing.assert_allclose(chunked, one_run, atol=1e-4)
