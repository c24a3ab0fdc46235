"""Compressed BANKING77 variants side by side with PyTorch and Hugging Face Optimum (issue 3).

    python bench/compression.py                      # the standard comparison
    python bench/compression.py --bundles A B ...    # other slm bundles against the same baselines
    python bench/compression.py --rounds 2 --max-eval 300 --no-optimum   # a quick look

Benchmarks every slm variant of the BANKING77 bundle ``runs/bench/banking77`` (trained by
``bench/classification.py``) found beside it as ``runs/bench/banking77-*`` (``slm export`` /
``slm compress`` outputs), run through slm's torch-free runtime, against PyTorch fp32 eager,
PyTorch dynamic int8 and Optimum's ONNX Runtime dynamic int8, all built from the fp32 bundle.
When no variant exists yet, the fp32 ONNX export is made first (``runs/bench/banking77-onnx``).
Accuracy and agreement are on the full BANKING77 test set (3,080 texts).

Writes ``bench/results/compression.json``, ``compression.md`` and ``compression.png``. Run it on an
otherwise idle machine: the load average at start and end is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77" / "test.csv"
RESULTS = ROOT / "results"
FP32 = ROOT.parent / "runs" / "bench" / "banking77"


def _has_fast_component(bundle: Path) -> bool:
    from slm.bundle.manifest import read_manifest

    components = read_manifest(bundle, verify=False).get("components", {})
    return "onnx" in components or "static" in components


def discover(fp32: Path) -> list[Path]:
    """``<fp32>-*`` bundles that slm's runtime can run (an ONNX or static component)."""
    found = []
    for path in sorted(fp32.parent.glob(fp32.name + "-*")):
        if (path / "manifest.json").is_file() and _has_fast_component(path):
            found.append(path)
    return found


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

    from slm.benchmark import run_benchmark
    from slm.benchmark.command import print_table
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
        bundles = args.bundles or discover(args.fp32)
        if not bundles:
            from slm.compression.export import export_bundle

            target = args.fp32.with_name(args.fp32.name + "-onnx")
            print(f"no compressed variant of {args.fp32} yet: exporting {target}", file=sys.stderr)
            export_bundle(args.fp32, target)
            bundles = [target]
        results = run_benchmark(
            bundles, DataSource(args.data, "text", "category"), args.output, baselines=True,
            optimum=not args.no_optimum, threads=args.threads, rounds=args.rounds, max_eval=args.max_eval,
            latency_texts=args.latency_texts, throughput_texts=args.throughput_texts, baseline_bundle=args.fp32,
            name="compression",
        )  # fmt: skip
    except SlmError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    print_table(results)
    print(f"written: {args.output / 'compression.json'}, compression.md, compression.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
