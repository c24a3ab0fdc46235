"""``bench``: bundles side by side (size, load time, memory, latency, throughput, accuracy), as ``slm bench`` does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def bench(
    bundles: Sequence[str | Path],
    output: str | Path,
    *,
    data: str | Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    threads: int = 2,
    rounds: int = 5,
    baselines: bool = True,
    optimum: bool = True,
    max_eval: int | None = None,
    show_progress: bool = False,
    force: bool = False,
    backend: str | None = None,
) -> dict[str, Any]:
    """Benchmark ``bundles`` in their own processes, interleaved in ``rounds``; write benchmark.{json,md,png}.

    ``data``: a labelled file for accuracy and agreement (and the texts timed). ``baselines`` adds
    PyTorch fp32 and dynamic int8, ``optimum`` Hugging Face Optimum's ONNX Runtime int8 (in its own
    virtual environment, built on first use). ``backend`` ("onnx", "openvino", "torch"; None: each bundle's
    default) is the engine the bundles run on. Returns the results written to ``output/benchmark.json``.
    """
    from slm.benchmark.harness import run_benchmark
    from slm.pipeline import DataSource

    source = DataSource(data, text_col, label_col) if data is not None else None
    return run_benchmark(
        [Path(b) for b in bundles], source, output, baselines=baselines, optimum=optimum, threads=threads,
        rounds=rounds, max_eval=max_eval, show_progress=show_progress, force=force, backend=backend,
    )  # fmt: skip
