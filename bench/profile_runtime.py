"""Where the time of an int8 prediction goes, stage by stage, and how far from the FLOP bound (issue 27, point 4).

    python bench/profile_runtime.py --bundle B                 # batches of 1 and 32, 200 repetitions each
    python bench/profile_runtime.py --bundle B --reps 50       # a quicker look

``B`` is an exported int8 bundle (default ``runs/bench/banking77-int8``). Batches are random BANKING77 test
texts (seeded). Each repetition times, one after the other on the same batch, the stages that
``Bundle.predict_proba`` runs: cutting the texts (``cut_texts``), tokenization (``encode``), length grouping
and padding into arrays (``length_chunks`` + ``feeds``), the ONNX Runtime session run, softmax, the n-gram half
and the ensemble's combination (when the bundle's default is the ensemble); then the whole ``predict_proba``
call on the same batch, so the stages' sum can be checked against it. Medians per stage are reported.

Tokenizer threading: random batches of 1, 32, 256 and 4,096 texts tokenized with the ``tokenizers`` library's
thread pool on and off (``encode_batch`` under ``TOKENIZERS_PARALLELISM``, which the library reads at each call)
and one text at a time (``encode``), in turn, each followed by a session run of one fixed batch (timed apart).

The FLOP-bound limit: multiply-accumulates per token from the graph's own weight shapes (every int8 matrix
product a token goes through: QKV, attention output, the two feed-forward layers, in each layer), plus the
attention's two products over the padded length (2 x S x hidden per token per layer); the classifier head
(once per text) is left out. The CPU's int8 peak comes from /proc/cpuinfo: its flags (AVX-512 VNNI, AVX-VNNI
or AVX2) and its ``cpu MHz`` line, with the MACs per cycle per core stated in the report, times ONNX Runtime's
threads. Writes ``bench/results/profile_runtime.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from results_io import write_results

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
INT8 = ROOT.parent / "runs" / "bench" / "banking77-int8"

# int8 multiply-accumulates per cycle per core, by instruction set: the assumption behind the peak, stated in
# the report. AVX-512 VNNI: one 512-bit VPDPBUSD a cycle (64 MACs; Zen 4 runs it double-pumped at that rate,
# Intel server cores with two 512-bit units can issue two). AVX-VNNI: two 256-bit VPDPBUSD (64). AVX2 alone:
# VPMADDUBSW + VPMADDWD + VPADDD, two ports, about 32 MACs a cycle.
MACS_PER_CYCLE = {"avx512_vnni": 64, "avx_vnni": 64, "avx2": 32}


def cpu_facts() -> dict[str, Any]:
    """Flags and clock from /proc/cpuinfo (never assumed)."""
    text = Path("/proc/cpuinfo").read_text()
    flags: set[str] = set()
    mhz: list[float] = []
    model = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            mhz.append(float(value))
        elif key == "model name" and model is None:
            model = value.strip()
    isa = next((name for name in MACS_PER_CYCLE if name in flags), None)
    return {"model": model, "isa": isa, "mhz": statistics.median(mhz) if mhz else None,
            "macs_per_cycle_per_core": MACS_PER_CYCLE.get(isa or "")}  # fmt: skip


def model_shape(onnx_path: Path) -> dict[str, Any]:
    """Per-token int8 MACs from the graph's weight shapes, the layers and the hidden size."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    per_token = layers = hidden = 0
    head = 0
    for node in graph.node:
        if node.op_type not in ("QAttention", "MatMulInteger", "MatMul", "Attention"):
            continue
        weight = next((shapes[x] for x in node.input[1:2] if x in shapes and len(shapes[x]) == 2), None)
        if weight is None:
            continue
        if node.op_type in ("QAttention", "Attention"):
            layers += 1
            hidden = weight[0]
        if "head" in node.name or "classifier" in node.name:
            head += weight[0] * weight[1]  # once per text, on the pooled vector
        else:
            per_token += weight[0] * weight[1]
    return {"layers": layers, "hidden": hidden, "dense_macs_per_token": per_token, "head_macs_per_text": head}


def batch_macs(shape: dict[str, Any], padded: list[tuple[int, int]]) -> int:
    """MACs of runs of (texts, padded length): dense per token, attention 2 x S x hidden per token per layer."""
    total = 0
    for count, width in padded:
        tokens = count * width
        total += tokens * shape["dense_macs_per_token"] + tokens * 2 * width * shape["hidden"] * shape["layers"]
    return total


def profile(model: Any, batches: list[list[str]], tokenizer_parallel: bool | None) -> dict[str, Any]:
    from slm.bundle.textlimit import cut_texts
    from slm.models.ensemble import ensemble_probabilities, probabilities
    from slm.runtime.onnx import length_chunks

    onnx = model._transformer
    ensemble = model.default_component == "ensemble"
    stages: dict[str, list[float]] = {k: [] for k in ("cut", "tokenize", "pad", "session", "softmax", "ngram",
                                                       "combine", "sum", "predict_proba")}  # fmt: skip
    macs: list[int] = []
    tokens: list[int] = []
    for texts in batches:
        if tokenizer_parallel is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if tokenizer_parallel else "false"
        t0 = time.perf_counter()
        cut = cut_texts(texts, model.text_limit)
        t1 = time.perf_counter()
        ids = onnx.encode(cut)
        t2 = time.perf_counter()
        order = np.argsort([len(r) for r in ids], kind="stable")
        runs = [order[c] for c in length_chunks([len(ids[i]) for i in order], len(texts))]
        feeds = [onnx.feeds([ids[i] for i in rows]) for rows in runs]
        t3 = time.perf_counter()
        logits = np.empty((len(ids), len(model.labels)), dtype=np.float32)
        for rows, feed in zip(runs, feeds, strict=True):
            logits[rows] = onnx.session.run(["logits"], feed)[0]
        t4 = time.perf_counter()
        proba = probabilities(logits, model.multi_label)
        t5 = time.perf_counter()
        ngram = model._ngram.predict_proba(cut) if ensemble else None
        t6 = time.perf_counter()
        if ensemble:
            spec = model.manifest.ensemble
            ensemble_probabilities(proba, ngram, float(spec.transformer_weight), spec.log_prior_shift)
        t7 = time.perf_counter()
        model.predict_proba(texts, batch_size=len(texts))
        t8 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t7 - t0, t8 - t7),
                              strict=True):  # fmt: skip
            stages[key].append(value * 1000)
        padded = [(len(rows), len(ids[rows[-1]])) for rows in runs]
        macs.append(batch_macs(SHAPE, padded))
        tokens.append(sum(len(r) for r in ids))
    return {"ms_median": {k: round(statistics.median(v), 4) for k, v in stages.items()},
            "macs_median": statistics.median(macs), "tokens_median": statistics.median(tokens),
            "session_ms_all": stages["session"], "macs_all": macs}  # fmt: skip


SHAPE: dict[str, Any] = {}
TOKENIZE_WAYS = ("pool on", "pool off", "one by one")


def tokenizer_threads(model: Any, texts: list[str], rng: random.Random, reps: int) -> dict[str, Any]:
    """Tokenizing with the tokenizers thread pool on and off (``encode_batch`` under ``TOKENIZERS_PARALLELISM``)
    and one text at a time (``encode``), in turn on the same batches; and a session run of a fixed batch of 32
    right after each, since the pool's threads look for work (spinning) for a while after a call returns."""
    onnx = model._transformer
    tokenizer = onnx.tokenizer
    fixed = onnx.feeds(onnx.encode(rng.sample(texts, 32)))
    out: dict[str, Any] = {}
    for size in (1, 32, 256, 4096):
        encode: dict[str, list[float]] = {way: [] for way in TOKENIZE_WAYS}
        after: dict[str, list[float]] = {way: [] for way in TOKENIZE_WAYS}
        for _ in range(max(5, reps // 4) if size < 4096 else 5):
            batch = rng.sample(texts, size) if size <= len(texts) else [rng.choice(texts) for _ in range(size)]
            for way in TOKENIZE_WAYS:
                os.environ["TOKENIZERS_PARALLELISM"] = "false" if way == "pool off" else "true"
                t0 = time.perf_counter()
                if way == "one by one":
                    [tokenizer.encode(text).ids for text in batch]
                else:
                    [e.ids for e in tokenizer.encode_batch(batch)]
                t1 = time.perf_counter()
                onnx.session.run(["logits"], fixed)
                t2 = time.perf_counter()
                encode[way].append((t1 - t0) * 1000)
                after[way].append((t2 - t1) * 1000)
        out[f"batch_{size}"] = {
            "encode_ms": {way: round(statistics.median(v), 4) for way, v in encode.items()},
            "next_session_run_ms": {way: round(statistics.median(v), 4) for way, v in after.items()},
        }
    os.environ.pop("TOKENIZERS_PARALLELISM", None)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    import slm

    bundle = Path(args.bundle) if args.bundle else INT8
    model = slm.load(bundle)
    SHAPE.update(model_shape(bundle / model.manifest.components.onnx.file))
    cpu = cpu_facts()
    threads = model._transformer.session.get_session_options().intra_op_num_threads
    peak = None
    if cpu["mhz"] and cpu["macs_per_cycle_per_core"]:
        peak = 2 * cpu["macs_per_cycle_per_core"] * cpu["mhz"] * 1e6 * threads  # int8 ops/s
    texts = list(pd.read_csv(DATA / "test.csv")["text"])
    rng = random.Random(7)
    model.predict_proba(texts[:64])  # warm up
    results: dict[str, Any] = {}
    for size in (1, 32):
        batches = [rng.sample(texts, size) for _ in range(args.reps)]
        prof = profile(model, batches, None)
        session_s = np.array(prof.pop("session_ms_all")) / 1000
        macs = np.array(prof.pop("macs_all"))
        achieved = float(np.median(2 * macs / session_s))  # int8 ops/s during the session run
        whole = 2 * prof["macs_median"] / (prof["ms_median"]["predict_proba"] / 1000)
        ms = prof["ms_median"]
        prof["share_of_sum"] = {k: round(ms[k] / ms["sum"], 4) for k in
                                ("cut", "tokenize", "pad", "session", "softmax", "ngram", "combine")}  # fmt: skip
        prof["texts_per_s"] = round(size / (ms["predict_proba"] / 1000), 1)
        prof["gops_session"] = round(achieved / 1e9, 2)
        prof["gops_whole"] = round(whole / 1e9, 2)
        prof["fraction_of_peak_session"] = round(achieved / peak, 4) if peak else None
        prof["fraction_of_peak_whole"] = round(whole / peak, 4) if peak else None
        results[f"batch_{size}"] = prof
    results["tokenizer_threads"] = tokenizer_threads(model, texts, rng, args.reps)
    os.environ.pop("TOKENIZERS_PARALLELISM", None)
    return {
        "bundle": str(bundle),
        "component": model.default_component,
        "labels": len(model.labels),
        "reps": args.reps,
        "ort_threads": threads,
        "shape": SHAPE,
        "cpu": cpu,
        "peak_int8_gops": round(peak / 1e9, 1) if peak else None,
        "results": results,
        "load_average": load_average(),
        "machine": machine_info(["onnxruntime", "tokenizers", "numpy"]),
    }


def markdown(r: dict[str, Any]) -> str:
    cpu, shape = r["cpu"], r["shape"]
    names = {"cut": "cut texts to the limit", "tokenize": "tokenize (`encode`)",
             "pad": "group by length, pad into arrays", "session": "ONNX Runtime session run",
             "softmax": "softmax", "ngram": "n-gram half (numpy)", "combine": "ensemble combination"}  # fmt: skip
    b1, b32 = r["results"]["batch_1"], r["results"]["batch_32"]
    lines = [
        "# Where the time of an int8 prediction goes (issue 27, acceptance 4)",
        "",
        f"Bundle `{r['bundle']}` ({r['labels']} labels, default component: {r['component']}), ONNX Runtime with "
        f"{r['ort_threads']} intra-op threads; {r['reps']} random BANKING77 test batches of each size (seeded), "
        "medians. Each stage is timed on its own, in order, on the same batch; then the whole `predict_proba` call.",
        "",
        "| stage | batch 1: ms | share | batch 32: ms | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, name in names.items():
        lines.append(f"| {name} | {b1['ms_median'][key]:.3f} | {b1['share_of_sum'][key]:.1%} | "
                     f"{b32['ms_median'][key]:.3f} | {b32['share_of_sum'][key]:.1%} |")  # fmt: skip
    lines += [
        f"| **sum of stages** | {b1['ms_median']['sum']:.3f} | | {b32['ms_median']['sum']:.3f} | |",
        f"| whole `predict_proba` call | {b1['ms_median']['predict_proba']:.3f} | | "
        f"{b32['ms_median']['predict_proba']:.3f} | |",
        f"| texts/s (whole call) | {b1['texts_per_s']:.0f} | | {b32['texts_per_s']:.0f} | |",
        f"| tokens per batch (median) | {b1['tokens_median']:.0f} | | {b32['tokens_median']:.0f} | |",
        "",
        "## Fraction of the FLOP-bound limit",
        "",
        f"Model shape from the graph's int8 weights: {shape['layers']} layers, hidden {shape['hidden']}, "
        f"{shape['dense_macs_per_token']:,} multiply-accumulates (MACs) per token in the dense products (QKV, "
        "attention output, the two feed-forward layers) plus 2 x S x hidden per token per layer for the attention "
        "over the padded length S; the classifier head (once per text) left out. One MAC = 2 operations.",
        "",
        f"CPU (from /proc/cpuinfo): {cpu['model']}, int8 instruction set {cpu['isa']}, clock {cpu['mhz']} MHz "
        f"(the `cpu MHz` line, median over cores; turbo not counted). Assumed {cpu['macs_per_cycle_per_core']} int8 "
        f"MACs per cycle per core for {cpu['isa']} (see `MACS_PER_CYCLE` in the script: one 512-bit VPDPBUSD a "
        f"cycle), times {r['ort_threads']} threads: peak **{r['peak_int8_gops']} int8 GOPS**. The attention "
        "products run in fp32 in this graph, so the bound is slightly optimistic.",
        "",
        "| | batch 1 | batch 32 |",
        "|---|---:|---:|",
        f"| MACs per batch (median) | {b1['macs_median'] / 1e6:.1f} M | {b32['macs_median'] / 1e6:.1f} M |",
        f"| GOPS during the session run | {b1['gops_session']} | {b32['gops_session']} |",
        f"| fraction of peak, session run alone | {b1['fraction_of_peak_session']:.1%} | "
        f"{b32['fraction_of_peak_session']:.1%} |",
        f"| fraction of peak, whole `predict_proba` | {b1['fraction_of_peak_whole']:.1%} | "
        f"{b32['fraction_of_peak_whole']:.1%} |",
        "",
        "## Tokenizer threads",
        "",
        "`encode_batch` with the `tokenizers` thread pool on and off (`TOKENIZERS_PARALLELISM`) and `encode` one "
        "text at a time, in turn on the same random batches; then, right after each, a session run of one fixed "
        "batch of 32 texts (the pool's threads keep looking for work for a while after a call). Medians, ms:",
        "",
        "| texts | encode: pool on | pool off | one by one | next session run: pool on | pool off | one by one |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, entry in r["results"]["tokenizer_threads"].items():
        e, n = entry["encode_ms"], entry["next_session_run_ms"]
        lines.append(f"| {key.removeprefix('batch_')} | " + " | ".join(f"{e[w]:.3f}" for w in TOKENIZE_WAYS) + " | "
                     + " | ".join(f"{n[w]:.3f}" for w in TOKENIZE_WAYS) + " |")  # fmt: skip
    lines += [
        "",
        f"Load average at the end: {r['load_average']} on {r['machine']['cpu_count']} logical CPUs (a shared "
        "machine: the shares and ratios are the result, not the absolute times).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="exported int8 bundle (default runs/bench/banking77-int8)")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "profile_runtime"), help="results path without suffix")
    args = parser.parse_args()
    result = run(args)
    write_results(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
