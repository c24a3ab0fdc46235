"""Compressed BANKING77 variants side by side with PyTorch and Hugging Face Optimum (issue 3).

    python bench/compression.py                      # the standard comparison
    python bench/compression.py --bundles A B ...    # other slm bundles against the same baselines
    python bench/compression.py --rounds 2 --max-eval 300 --no-optimum   # a quick look

Benchmarks every slm variant of the BANKING77 bundle ``runs/bench/banking77`` (trained by
``bench/classification.py``) found beside it as ``runs/bench/banking77-*`` (``slm export`` /
``slm compress`` outputs), run through slm's torch-free runtime, against PyTorch fp32 eager,
PyTorch dynamic int8 and Optimum's ONNX Runtime dynamic int8, all built from the fp32 bundle.
Missing variants are built first with slm's own API, exactly as a user would with ``slm export`` /
``slm compress``: ``-onnx`` (fp32 export), ``-int8`` (dynamic int8, gate 1.0 point on the
training run's validation split), ``-pruned3`` (3 of 6 layers, 3 epochs of distillation, then
exported) and its int8 (``-pruned3-int8``), and ``-static`` (the turbo tier).
Accuracy and agreement are on the full BANKING77 test set (3,080 texts).

Writes ``bench/results/compression.json``, ``compression.md`` and ``compression.png``, and the same
for the int8 and static variants on one thread (``compression-one-core.*``). Run it on an
otherwise idle machine: the load average at start and end is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77" / "test.csv"
TRAIN = DATA.with_name("train.csv")
RESULTS = ROOT / "results"
FP32 = ROOT.parent / "runs" / "bench" / "banking77"


def _validation_file(fp32: Path) -> Path:
    """The validation split ``bench/classification.py`` carved out of train.csv (seed 42, 10%), as a CSV."""
    import pandas as pd

    from slm.pipeline import DataSource, prepare_splits

    path = fp32.with_name(fp32.name + "-validation.csv")
    if not path.is_file():
        splits = prepare_splits(DataSource(TRAIN, "text", "category"), validation=None, test=DATA, val_size=0.1,
                                test_size=0.0, seed=42)  # fmt: skip
        pd.DataFrame({"text": splits.validation.texts, "category": splits.validation.labels}).to_csv(path, index=False)
    return path


def build_variants(fp32: Path, only: tuple[str, ...] | None = None) -> list[Path]:
    """Make every missing variant of ``fp32`` (or those named in ``only``) with the public API; returns them."""
    from slm.compression.export import export_bundle
    from slm.compression.prune import prune_bundle
    from slm.compression.quantize import quantize_bundle
    from slm.compression.static import build_static_bundle
    from slm.pipeline import DataSource

    def name(suffix: str) -> Path:
        return fp32.with_name(f"{fp32.name}-{suffix}")

    validation = DataSource(_validation_file(fp32), "text", "category")
    train = DataSource(TRAIN, "text", "category")
    steps = [
        ("onnx", lambda out: export_bundle(fp32, out)),
        ("int8", lambda out: quantize_bundle(name("onnx"), out, validation=validation)),
        ("pruned3-torch", lambda out: prune_bundle(fp32, out, train, layers=3, epochs=3)),
        ("pruned3", lambda out: export_bundle(name("pruned3-torch"), out)),
        ("pruned3-int8", lambda out: quantize_bundle(name("pruned3"), out, validation=validation)),
        ("static", lambda out: build_static_bundle(fp32, out, train)),
    ]
    if only is not None:
        steps = [(suffix, build) for suffix, build in steps if suffix in only]
    for suffix, build in steps:
        if not (name(suffix) / "manifest.json").is_file():
            print(f"building {name(suffix)}", file=sys.stderr)
            build(name(suffix))
    return [name(s) for s, _ in steps if s != "pruned3-torch"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", type=Path, help="slm bundles to compare (default: discovered)")
    parser.add_argument("--fp32", type=Path, default=FP32, help="the fp32 bundle the baselines are built from")
    parser.add_argument("--data", type=Path, default=DATA, help="labelled test file (text, category)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-texts", type=int, default=100, help="batch-1 texts per round and variant")
    parser.add_argument("--throughput-texts", type=int, default=256, help="texts per throughput round")
    parser.add_argument("--max-eval", type=int, default=None, help="score at most this many test texts")
    parser.add_argument("--no-optimum", action="store_true", help="leave out the Optimum comparison")
    args = parser.parse_args(argv)

    from rich.console import Console

    from slm.benchmark import run_benchmark
    from slm.benchmark.report import results_table

    console = Console(highlight=False, soft_wrap=False)
    from slm.errors import SlmError, one_line
    from slm.pipeline import DataSource

    try:
        if not (args.fp32 / "manifest.json").is_file():
            print(f"error: {args.fp32} is not a bundle: run `python bench/classification.py banking77` first",
                  file=sys.stderr)  # fmt: skip
            return 2
        if not args.data.is_file():
            print(f"error: the BANKING77 test file {args.data} is absent", file=sys.stderr)
            return 2
        bundles = args.bundles or build_variants(args.fp32)
        results = run_benchmark(
            bundles, DataSource(args.data, "text", "category"), args.output, baselines=True,
            optimum=not args.no_optimum, threads=args.threads, rounds=args.rounds, max_eval=args.max_eval,
            latency_texts=args.latency_texts, throughput_texts=args.throughput_texts, baseline_bundle=args.fp32,
            name="compression",
        )  # fmt: skip
        # The turbo tier's promise is per core: the fast variants again with one thread each.
        fast = [b for b in bundles if b.name.endswith(("-static", "-int8"))]
        one_core = run_benchmark(
            fast, DataSource(args.data, "text", "category"), args.output, baselines=False, optimum=False, threads=1,
            rounds=args.rounds, max_eval=args.max_eval, latency_texts=args.latency_texts,
            throughput_texts=args.throughput_texts, name="compression-one-core",
        ) if fast else None  # fmt: skip
    except SlmError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    console.print(results_table(results))
    if one_core is not None:
        console.print(results_table(one_core))
    print(f"written: {args.output}/compression*.json, .md and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
