"""``slm bench``: model variants side by side, interleaved, each in its own worker process.

Every variant (the bundles passed in, run through slm's runtime; the PyTorch fp32 and dynamic-int8
baselines; Optimum's ONNX Runtime dynamic int8) runs in a separate process that imports only what
it needs, so each has its own load time and peak RSS. The parent drives the workers over JSON lines
(see ``isolated/protocol.py``) in round-robin rounds, rotating the order every round, so machine
noise falls on all variants alike. Threads are pinned to ``threads`` everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from slm.benchmark.client import Worker, WorkerError
from slm.benchmark.isolated.protocol import THREAD_ENV
from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Manifest, NgramSpec
from slm.console import console
from slm.errors import BundleError, ConfigError, one_line
from slm.fileio import claim_output_files, record_output, write_json_atomic, write_text_atomic
from slm.hardware import load_average, machine_info
from slm.logs import DONE, progress_lines

log = logging.getLogger(__name__)

LONG_TOKENS = 64
READY_TIMEOUT_S = 900.0
WARMUP_TEXTS = 5

ROLE_BUNDLE = "bundle"
ROLE_TORCH_FP32 = "torch_fp32"
ROLE_TORCH_INT8 = "torch_int8"
ROLE_OPTIMUM_INT8 = "optimum_int8"
REFERENCES = {"vs_torch_fp32": ROLE_TORCH_FP32, "vs_optimum_int8": ROLE_OPTIMUM_INT8}
# The packages whose versions a benchmark records.
VERSIONED_PACKAGES = ("slm", "torch", "transformers", "tokenizers", "onnxruntime", "onnx", "numpy", "safetensors")

# Used for timing only when no data is given (no accuracy then).
FALLBACK_TEXTS = [
    "How do I locate my card?",
    "I still have not received my new card, I ordered over a week ago.",
    "Why was I charged a fee for withdrawing cash?",
    "My card payment was declined at the shop today.",
    "Can I change my PIN at an ATM?",
    "The exchange rate on my last transfer looks wrong.",
    "I want a refund for an item I returned last week.",
    "My top-up failed, what should I do?",
    "Someone stole my card, please block it.",
    "The money I sent has not arrived in my friend's account.",
    "How long does a transfer take to reach another bank?",
    "Is there a limit on how much I can top up each month?",
]


@dataclass
class Variant:
    """A model variant and everything measured about it."""

    key: str
    name: str
    role: str
    source: str
    command: list[str]
    weights: list[Path]
    setup: dict = field(default_factory=dict)
    worker: Worker | None = None
    info: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    latency_rounds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    throughput: list[float] = field(default_factory=list)
    predictions: list[str] | None = None
    eval_seconds: float | None = None
    memory: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def running(self) -> Worker:
        """The worker started for this variant."""
        if self.worker is None:
            raise RuntimeError(f"{self.name}: no worker is running")
        return self.worker


# ---------------------------------------------------------------- inputs


def _load_data(data: Any) -> tuple[list[str], list | None, bool, str | None]:
    """``(texts, labels or None, multi_label, source)`` from a DataSource, a path or None."""
    if data is None:
        return list(FALLBACK_TEXTS), None, False, None
    from slm.pipeline import DataSource

    source = data if isinstance(data, DataSource) else DataSource(data)
    ds, _ = source.load(min_classes=1)
    return list(ds.texts), list(ds.labels), ds.multi_label, str(source.path)


def _tokenizer_for(bundles: list[Path]):
    """A ``tokenizers.Tokenizer`` of the first bundle that has one (for counting tokens), or None."""
    from tokenizers import Tokenizer

    for bundle in bundles:
        candidates = sorted(bundle.glob("tokenizer/tokenizer.json")) + sorted(bundle.rglob("tokenizer.json"))
        for path in candidates:
            with contextlib.suppress(Exception):
                tokenizer = Tokenizer.from_file(str(path))
                tokenizer.no_padding()
                tokenizer.no_truncation()
                return tokenizer
    return None


def _counter(tokenizer):
    if tokenizer is None:
        return lambda text: int(1.3 * len(text.split())) + 2
    return lambda text: len(tokenizer.encode(text).ids)


def _long_texts(pool: list[str], n: int, count, rng: np.random.Generator, target: int = LONG_TOKENS) -> list[str]:
    """``n`` texts of about ``target`` tokens, each real texts joined until long enough, then trimmed."""
    out = []
    order = rng.permutation(len(pool))
    at = 0
    for _ in range(n):
        parts: list[str] = []
        for _guard in range(10 * target):
            parts.append(pool[order[at % len(order)]].strip())
            at += 1
            if count(" ".join(parts)) >= target:
                break
        words = " ".join(parts).split()
        while len(words) > 1 and count(" ".join(words)) > target:
            words.pop()
        out.append(" ".join(words))
    return out


def _sample(texts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    if not texts:
        raise ConfigError("no texts to benchmark with")
    index = rng.choice(len(texts), size=n, replace=len(texts) < n)
    return [texts[i] for i in index]


# ---------------------------------------------------------------- variants


def _torch_weights(bundle: Path, manifest: Manifest) -> Path | None:
    spec = manifest.components.transformer
    if spec is None:
        return None
    path = bundle / spec.weights
    return path if path.is_file() else None


def _bundle_weights(bundle: Path, manifest: Manifest) -> list[Path]:
    """The model files slm's runtime loads for the bundle's default component (tokenizers excluded).

    transformer: the ONNX graph when the bundle has one (plus external data), else the PyTorch
    weights; static: embeddings + head; ngram: its folder; ensemble: transformer + ngram.
    """
    components = manifest.components
    default = manifest.default_component or "ensemble"

    def transformer() -> list[Path]:
        if components.onnx is not None:
            graph = bundle / components.onnx.file
            return [graph] + (
                [graph.with_name(graph.name + ".data")] if graph.with_name(graph.name + ".data").is_file() else []
            )
        weights = _torch_weights(bundle, manifest)
        return [weights] if weights else []

    def folder(spec: NgramSpec | None) -> list[Path]:
        if spec is None:
            return []
        prefix = spec.dir.rstrip("/") + "/"
        return [bundle / rel for rel in manifest.files if rel.startswith(prefix)]

    if default == "static":
        static = components.static
        directory = bundle / (static.dir if static is not None else "static")
        return [
            directory / (static.embeddings if static is not None and static.embeddings else "model.safetensors"),
            directory / (static.head if static is not None and static.head else "head.safetensors"),
        ]
    if default == "ngram":
        return folder(components.ngram)
    if default == "ensemble":
        return transformer() + folder(components.ngram)
    return transformer()


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    taken.add(candidate)
    return candidate


def _worker_env(threads: int, extra_path: bool) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_ENV:
        env[name] = str(threads)
    env.update(
        {
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if not extra_path:
        # The Optimum venv must not see slm's environment.
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
    return env


def _build_variants(
    bundles: list[Path],
    *,
    baselines: bool,
    optimum: bool,
    threads: int,
    optimum_venv: str | Path | None,
    show_progress: bool,
    baseline_bundle: Path | None = None,
    backend: str | None = None,
) -> tuple[list[Variant], dict]:
    """The variants to measure: each bundle, then the PyTorch baselines and the Optimum model built from
    ``baseline_bundle`` (default: the first bundle with PyTorch weights); and the Optimum setup's record."""
    names: set[str] = set()
    torch_source: tuple[Path, Manifest] | None = None
    if baseline_bundle is not None:
        manifest = read_manifest(baseline_bundle)
        if not _torch_weights(baseline_bundle, manifest):
            raise BundleError(f"{baseline_bundle} has no PyTorch weights (model/) to build the baselines from")
        torch_source = (baseline_bundle, manifest)
    variants: list[Variant] = []
    for bundle in bundles:
        manifest = read_manifest(bundle)
        if torch_source is None and _torch_weights(bundle, manifest):
            torch_source = (bundle, manifest)
        variants.append(_bundle_variant(bundle, manifest, len(variants), names, threads, backend))
    if torch_source is None:
        if (baselines or optimum) and show_progress:
            log.warning("warning: no bundle has PyTorch weights (model/): baselines and Optimum are skipped")
        return variants, {}
    bundle, manifest = torch_source
    weights = _torch_weights(bundle, manifest)
    assert weights is not None  # torch_source is a bundle with them
    if baselines:
        variants += _baseline_variants(bundle, weights, names, threads)
    optimum_meta: dict = {}
    if optimum:
        variant, optimum_meta = _optimum_variant(bundle, names, threads, optimum_venv, show_progress)
        variants.append(variant)
    return variants, optimum_meta


def _slm_worker() -> list[str]:
    return [sys.executable, "-m", "slm.benchmark.worker"]


def _bundle_variant(
    bundle: Path, manifest: Manifest, index: int, names: set[str], threads: int, backend: str | None = None
) -> Variant:
    """A bundle run through slm's runtime, as it would serve (on ``backend``, else the bundle's default engine)."""
    return Variant(
        key=f"bundle{index}",
        name=_unique(bundle.name or str(bundle), names),
        role=ROLE_BUNDLE,
        source=str(bundle),
        command=[
            *_slm_worker(),
            "runtime",
            str(bundle),
            "--threads",
            str(threads),
            *(["--backend", backend] if backend else []),
        ],
        weights=_bundle_weights(bundle, manifest),
        setup={"default_component": manifest.default_component, "lineage": manifest.to_json().get("lineage")},
    )


def _baseline_variants(bundle: Path, weights: Path, names: set[str], threads: int) -> list[Variant]:
    """PyTorch fp32 eager and PyTorch dynamic int8 on ``bundle``'s weights."""
    return [
        Variant(
            key=role,
            name=_unique(label, names),
            role=role,
            source=str(bundle),
            command=[*_slm_worker(), kind, str(bundle), "--threads", str(threads)],
            weights=[weights],
            setup={"note": "quantized at load time from the fp32 weights"} if kind == "torch-int8" else {},
        )
        for role, kind, label in (
            (ROLE_TORCH_FP32, "torch", "PyTorch fp32 eager"),
            (ROLE_TORCH_INT8, "torch-int8", "PyTorch dynamic int8"),
        )
    ]


def _optimum_variant(
    bundle: Path, names: set[str], threads: int, optimum_venv: str | Path | None, show_progress: bool
) -> tuple[Variant, dict]:
    """Optimum's ONNX Runtime dynamic int8 model of ``bundle``, in its own venv (built once), and its record."""
    from slm.benchmark.optimum_env import WORKER_SCRIPT, ensure_venv, models_dir, prepare_optimum_model

    say = progress_lines(log, show_progress)
    python, marker = ensure_venv(optimum_venv, log=say)
    say(f"preparing the Optimum int8 model from {bundle} (ONNX export + ORTQuantizer)")
    prepared = prepare_optimum_model(bundle, models_dir(optimum_venv), python)
    optimum_meta = {"venv": str(python.parent.parent), "requirements": marker["requirements"],
                    "freeze": marker["freeze"], "model": prepared}  # fmt: skip
    variant = Variant(
        key=ROLE_OPTIMUM_INT8,
        name=_unique("Optimum ORT dynamic int8", names),
        role=ROLE_OPTIMUM_INT8,
        source=str(bundle),
        command=[
            str(python),
            str(WORKER_SCRIPT),
            "serve",
            "--dir",
            prepared["dir"],
            "--file-name",
            prepared["file_name"],
            "--threads",
            str(threads),
            "--max-length",
            str(prepared["max_length"]),
        ],  # fmt: skip
        weights=[Path(prepared["dir"]) / prepared["file_name"]],
        setup={"quantization": prepared["quantization"], "export": prepared["export"]},
    )
    return variant, optimum_meta


# ---------------------------------------------------------------- measuring


def _percentiles(seconds: list[float]) -> dict | None:
    if not seconds:
        return None
    ms = np.asarray(seconds, dtype=float) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p95": round(float(np.percentile(ms, 95)), 3),
        "mean": round(float(ms.mean()), 3),
        "min": round(float(ms.min()), 3),
        "n": int(ms.size),
    }


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


class _Run:
    """The measuring loop: one object so each step can mark a variant failed and move on."""

    def __init__(self, variants: list[Variant], threads: int, logs: Path, show_progress: bool) -> None:
        self.variants = variants
        self.threads = threads
        self.logs = logs
        self.show_progress = show_progress
        self.spawns = 0

    def live(self, order: list[Variant] | None = None) -> list[Variant]:
        return [v for v in (order or self.variants) if v.ok]

    def _env(self, variant: Variant) -> dict[str, str]:
        return _worker_env(self.threads, extra_path=variant.role != ROLE_OPTIMUM_INT8)

    def _spawn(self, variant: Variant, *, load_only: bool) -> Worker:
        self.spawns += 1
        log_path = self.logs / f"{variant.key}-{self.spawns}.log"
        return Worker(variant.command, self._env(variant), log_path, load_only=load_only)

    def fail(self, variant: Variant, exc: Exception) -> None:
        variant.error = one_line(exc)
        if self.show_progress:
            log.error(f"{variant.name} failed: {variant.error}")
        if variant.worker is not None:
            variant.worker.kill()
            with contextlib.suppress(Exception):
                variant.worker.close()
            variant.worker = None

    def step(self, variant: Variant, action) -> None:
        if not variant.ok:
            return
        try:
            action(variant)
        except WorkerError as exc:
            self.fail(variant, exc)

    def _record_ready(self, variant: Variant, ready: dict) -> None:
        variant.loads.append(
            {
                "process_to_ready_s": ready.get("process_to_ready_s"),
                "model_load_s": ready.get("model_load_s"),
                "imports_and_load_s": ready.get("imports_and_load_s"),
                "rss_after_load_mb": (ready.get("memory_after_load") or {}).get("rss_mb"),
            }
        )

    def start(self, variant: Variant, warm: dict[str, list[str]]) -> None:
        worker = self._spawn(variant, load_only=False)
        variant.worker = worker
        ready = worker.receive(READY_TIMEOUT_S)
        self._record_ready(variant, ready)
        variant.info = ready.get("info", {})
        variant.labels = list(ready.get("labels", []))
        variant.memory["after_load"] = ready.get("memory_after_load")
        worker.ask(cmd="latency", texts=warm["short"])
        worker.ask(cmd="latency", texts=warm["long"])
        worker.ask(cmd="throughput", texts=warm["batch"], batch_size=len(warm["batch"]))

    def load_once(self, variant: Variant) -> None:
        worker = self._spawn(variant, load_only=True)
        try:
            self._record_ready(variant, worker.receive(READY_TIMEOUT_S))
        finally:
            worker.close()

    def latency(self, variant: Variant, kind: str, texts: list[str]) -> None:
        seconds = variant.running.ask(cmd="latency", texts=texts)["seconds"]
        variant.latency[kind].extend(seconds)
        variant.latency_rounds[kind].append(float(np.median(seconds)) * 1000.0)

    def throughput(self, variant: Variant, texts: list[str], batch_size: int) -> None:
        answer = variant.running.ask(cmd="throughput", texts=texts, batch_size=batch_size)
        variant.throughput.append(answer["n"] / answer["seconds"])

    def predict(self, variant: Variant, texts: list[str], batch_size: int) -> None:
        answer = variant.running.ask(cmd="predict", texts=texts, batch_size=batch_size)
        labels = variant.labels
        variant.predictions = [labels[i] if 0 <= i < len(labels) else str(i) for i in answer["argmax"]]
        variant.eval_seconds = answer["seconds"]
        variant.memory["final"] = variant.running.ask(cmd="rss")

    def close_all(self) -> None:
        for variant in self.variants:
            if variant.worker is not None:
                with contextlib.suppress(Exception):
                    variant.worker.close()
                variant.worker = None


# ---------------------------------------------------------------- results


def _size_mb(paths: list[Path]) -> float | None:
    sizes = [p.stat().st_size for p in paths if p.is_file()]
    return round(sum(sizes) / 1e6, 2) if sizes else None


def _summary(variant: Variant, gold: list | None, multi_label: bool, reference: list[str] | None) -> tuple[dict, dict]:
    short = _percentiles(variant.latency.get("short", []))
    long = _percentiles(variant.latency.get("long", []))
    weights = variant.weights
    accuracy = agreement = None
    if variant.predictions is not None:
        predicted = variant.predictions
        if gold is not None and not multi_label:
            accuracy = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
        if reference is not None:
            agreement = float(np.mean([p == r for p, r in zip(predicted, reference, strict=True)]))
    final = variant.memory.get("final") or {}
    return {
        "size_mb": _size_mb(weights),
        "load_s": _rnd(_median([x["process_to_ready_s"] for x in variant.loads])),
        "model_load_s": _rnd(_median([x["model_load_s"] for x in variant.loads])),
        "peak_rss_mb": final.get("peak_rss_mb"),
        "p50_short_ms": short and short["p50"],
        "p95_short_ms": short and short["p95"],
        "p50_long_ms": long and long["p50"],
        "p95_long_ms": long and long["p95"],
        "texts_per_s": _rnd(_median(variant.throughput), 2),
        "accuracy": _rnd(accuracy, 5),
        "agreement": _rnd(agreement, 5),
    }, {"short": short, "long": long, "weights": [str(p) for p in weights]}


LOWER_IS_BETTER = ("size_mb", "load_s", "model_load_s", "peak_rss_mb", "p50_short_ms", "p95_short_ms",
                   "p50_long_ms", "p95_long_ms")  # fmt: skip
HIGHER_IS_BETTER = ("texts_per_s",)


def ratios(summary: dict, reference: dict) -> dict:
    """How many times better ``summary`` is than ``reference`` per metric (> 1: better).

    Lower-is-better metrics give ``reference / variant``, throughput ``variant / reference``;
    accuracy is compared as a difference in points.
    """
    out: dict[str, float | None] = {}
    for key in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        a, b = summary.get(key), reference.get(key)
        if a is None or b is None or a <= 0 or b <= 0:
            out[key] = None
        else:
            out[key] = round(b / a if key in LOWER_IS_BETTER else a / b, 3)
    for key in ("accuracy", "agreement"):
        a, b = summary.get(key), reference.get(key)
        out[f"{key}_delta_points"] = None if a is None or b is None else round(100 * (a - b), 2)
    return out


# ---------------------------------------------------------------- the public entry point


def run_benchmark(
    bundles: Sequence[str | Path],
    data: Any,
    output: str | Path,
    *,
    baselines: bool = True,
    optimum: bool = True,
    threads: int = 2,
    rounds: int = 5,
    load_rounds: int | None = None,
    latency_texts: int = 100,
    throughput_texts: int = 256,
    batch_size: int = 32,
    max_eval: int | None = None,
    seed: int = 0,
    name: str = "benchmark",
    optimum_venv: str | Path | None = None,
    baseline_bundle: str | Path | None = None,
    show_progress: bool = True,
    force: bool = False,
    backend: str | None = None,
) -> dict:
    """Benchmark ``bundles`` (and the baselines) side by side; write ``OUTPUT/NAME.{json,md,png}``.

    ``data`` is a :class:`~slm.pipeline.DataSource`, a labelled file path, or None (then only speed,
    size and memory are measured, on a few built-in texts, and agreement on those). Per variant:
    load time (process start to model ready, and the model load alone; median over
    ``load_rounds``, default ``rounds``, fresh processes), peak RSS of its worker after loading and
    predicting, p50/p95 latency at batch 1 on short texts and on ~64-token texts, texts/s at
    ``batch_size``, the size of the weights it loads, accuracy on ``data`` (up to ``max_eval``
    texts) and argmax agreement with PyTorch fp32. Returns the results written to the JSON file.

    The baselines and the Optimum model are built from ``baseline_bundle`` (default: the first
    bundle with PyTorch weights). The Optimum venv is ``optimum_venv`` (default
    ``~/.cache/slm/optimum-venv``), created on first use. A variant that fails is reported as failed
    (one line) while the others go on; setting up Optimum failing stops the run (OptimumError).
    Files of those names in ``output`` that slm did not write are refused before any work, or with
    ``force`` moved aside. ``backend`` runs every bundle on that engine ("onnx", "openvino", "torch").
    """
    paths = _check_settings(bundles, threads, rounds, latency_texts, throughput_texts, batch_size)
    output = Path(output)
    written = [f"{name}.json", f"{name}.md", f"{name}.png"]
    claim_output_files(output, written, force=force)
    load_rounds = rounds if load_rounds is None else max(1, load_rounds)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = load_average()

    inputs = _inputs(data, paths, max_eval, seed, latency_texts, throughput_texts, batch_size)
    variants, optimum_meta = _build_variants(
        paths,
        baselines=baselines,
        optimum=optimum,
        threads=threads,
        optimum_venv=optimum_venv,
        show_progress=show_progress,
        baseline_bundle=Path(baseline_bundle) if baseline_bundle is not None else None,
        backend=backend,
    )
    _measure_all(variants, threads, rounds, load_rounds, inputs, batch_size, show_progress)
    environment = _environment(load_start, optimum_meta)  # after the run: its load average is the end's
    rows, front, reference_variant = _rows(variants, inputs)
    results = {
        "title": f"slm bench: {len(rows)} variants, {threads} thread{'s' if threads != 1 else ''}",
        "started": started_at,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": _settings(threads, rounds, load_rounds, latency_texts, throughput_texts, batch_size, seed),
        "data": inputs.record(),
        "environment": environment,
        "reference": reference_variant.name if reference_variant else None,
        "pareto_front": [rows[i]["name"] for i in front],
        "variants": rows,
    }
    _write(output, name, results, written)
    if show_progress:
        log.info(f"benchmark written: {output / name}.json, .md, .png", extra=DONE)
    return results


def _settings(
    threads: int, rounds: int, load_rounds: int, latency_texts: int, throughput_texts: int, batch_size: int, seed: int
) -> dict:
    return {
        "threads": threads,
        "rounds": rounds,
        "load_rounds": load_rounds,
        "latency_texts": latency_texts,
        "throughput_texts": throughput_texts,
        "batch_size": batch_size,
        "seed": seed,
        "interleaving": "round-robin; every round each variant runs short latency, then 64-token latency, "
        "then throughput, the variant order rotating by one each round",
    }


def _measure_all(
    variants: list[Variant],
    threads: int,
    rounds: int,
    load_rounds: int,
    inputs: _Inputs,
    batch_size: int,
    show_progress: bool,
) -> None:
    """Measure every variant (results land on the variants), the workers' logs in a temporary folder."""
    steps = len(variants) * (1 + (load_rounds - 1) + 3 * rounds + 1)
    with tempfile.TemporaryDirectory(prefix="slm-bench-") as tmp:
        run = _Run(variants, threads, Path(tmp), show_progress)
        try:
            _measure(run, rounds, load_rounds, inputs, batch_size, steps, show_progress)
        finally:
            run.close_all()


def _check_settings(
    bundles: Sequence[str | Path], threads: int, rounds: int, latency_texts: int, throughput_texts: int, batch_size: int
) -> list[Path]:
    """The bundles' paths, once every setting is valid and every bundle exists."""
    if not bundles:
        raise ConfigError("give at least one bundle to benchmark")
    if threads < 1 or rounds < 1 or latency_texts < 1 or throughput_texts < 1 or batch_size < 1:
        raise ConfigError("threads, rounds, latency_texts, throughput_texts and batch_size must be at least 1")
    paths = [Path(b) for b in bundles]
    for path in paths:
        if not path.exists():
            raise BundleError(f"bundle not found: {path}")
    return paths


def _environment(load_start: list[float] | None, optimum_meta: dict) -> dict:
    """The machine, the versions and the load before and (now) after the run."""
    machine = machine_info(packages=VERSIONED_PACKAGES)
    return {
        "cpu": machine["cpu"],
        "python": machine["python"],
        "platform": machine["platform"],
        "versions": machine["versions"],
        "load_average_start": load_start,
        "load_average_end": machine["load_average"],
        "optimum": optimum_meta or None,
    }


@dataclass
class _Inputs:
    """The texts every variant is timed and scored on."""

    texts: list[str]  # scored (accuracy, agreement)
    gold: list | None
    multi_label: bool
    source: str | None
    count: Callable[[str], int]  # tokens in a text
    short: list[str]  # latency at batch 1
    long: list[str]  # latency at batch 1, ~LONG_TOKENS each
    batch: list[str]  # throughput
    warm: dict[str, list[str]]  # warm-up before measuring

    def record(self) -> dict:
        """The ``data`` section of the results."""
        return {
            "source": self.source,
            "n_eval": len(self.texts),
            "labelled": self.gold is not None,
            "multi_label": self.multi_label,
            "short_tokens_mean": round(float(np.mean([self.count(t) for t in self.short])), 1),
            "long_tokens_mean": round(float(np.mean([self.count(t) for t in self.long])), 1),
            "throughput_tokens_mean": round(float(np.mean([self.count(t) for t in self.batch])), 1),
            "accuracy_axis": self.accuracy_axis,
        }

    @property
    def accuracy_axis(self) -> str:
        return "accuracy" if self.gold is not None and not self.multi_label else "agreement"


def _inputs(
    data: Any,
    paths: list[Path],
    max_eval: int | None,
    seed: int,
    latency_texts: int,
    throughput_texts: int,
    batch_size: int,
) -> _Inputs:
    texts, gold, multi_label, data_source = _load_data(data)
    rng = np.random.default_rng(seed)
    if max_eval is not None and len(texts) > max_eval:
        keep = np.sort(rng.choice(len(texts), size=max_eval, replace=False))
        texts = [texts[i] for i in keep]
        gold = None if gold is None else [gold[i] for i in keep]
    count = _counter(_tokenizer_for(paths))
    short = _sample(texts, latency_texts, rng)
    long = _long_texts(texts, latency_texts, count, rng)
    batch = _sample(texts, throughput_texts, rng)
    warm = {"short": short[:WARMUP_TEXTS], "long": long[:WARMUP_TEXTS], "batch": batch[:batch_size]}
    return _Inputs(texts, gold, multi_label, data_source, count, short, long, batch, warm)


def _rows(variants: list[Variant], inputs: _Inputs) -> tuple[list[dict], list[int], Variant | None]:
    """One result row per variant (with its ratios to the references and whether it is on the Pareto front),
    the Pareto front (row indices by increasing latency), and the PyTorch fp32 variant agreement is measured
    against (None when it did not predict)."""
    from slm.benchmark.report import pareto_front

    reference_variant = next((v for v in variants if v.role == ROLE_TORCH_FP32 and v.predictions), None)
    reference = reference_variant.predictions if reference_variant else None
    rows = [_row(variant, inputs, reference) for variant in variants]
    by_role = {row["role"]: row for row in rows if row["ok"]}
    for row in rows:
        row["ratios"] = {
            label: ratios(row["summary"], by_role[role]["summary"]) if role in by_role else None
            for label, role in REFERENCES.items()
        }
    axis = inputs.accuracy_axis
    points = [(r["summary"]["p50_short_ms"], r["summary"][axis]) if r["ok"] else (None, None) for r in rows]
    front = pareto_front(points)
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    return rows, front, reference_variant


def _row(variant: Variant, inputs: _Inputs, reference: list[str] | None) -> dict:
    summary, details = _summary(variant, inputs.gold, inputs.multi_label, reference)
    return {
        "name": variant.name,
        "role": variant.role,
        "source": variant.source,
        "ok": variant.ok,
        "error": variant.error,
        "engine": variant.info.get("engine"),
        "summary": summary,
        "latency_short_ms": details["short"],
        "latency_long_ms": details["long"],
        "latency_p50_by_round_ms": {k: [round(x, 3) for x in v] for k, v in variant.latency_rounds.items()},
        "throughput_by_round": [round(x, 2) for x in variant.throughput],
        "loads": variant.loads,
        "memory": variant.memory,
        "weights_files": details["weights"],
        "eval_seconds": _rnd(variant.eval_seconds),
        "info": variant.info,
        "setup": variant.setup,
    }


def _write(output: Path, name: str, results: dict, written: list[str]) -> None:
    from slm.benchmark.report import markdown, plot

    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / f"{name}.json", results)
    write_text_atomic(output / f"{name}.md", markdown(results))
    plot(results, output / f"{name}.png")
    record_output(output, written)


def _measure(run: _Run, rounds: int, load_rounds: int, inputs: _Inputs, batch_size: int, steps: int,
             show_progress: bool) -> None:  # fmt: skip
    """The measuring rounds under one progress bar: load, then per round latency and throughput, then predict."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    warm, short, long, batch, texts = inputs.warm, inputs.short, inputs.long, inputs.batch, inputs.texts

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=True) as progress:
        task = progress.add_task("starting workers", total=steps)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=description)

        for variant in run.variants:
            progress.update(task, description=f"loading {variant.name}")
            run.step(variant, lambda v: run.start(v, warm))
            advance(f"loaded {variant.name}")
        n = len(run.variants)
        for r in range(rounds):
            order = run.variants[r % n :] + run.variants[: r % n]
            label = f"round {r + 1}/{rounds}"
            if 0 < r < load_rounds:
                for variant in run.live(order):
                    run.step(variant, run.load_once)
                    advance(f"{label}: load {variant.name}")
            for kind, items in (("short", short), ("long", long)):
                for variant in run.live(order):
                    run.step(variant, lambda v, k=kind, t=items: run.latency(v, k, t))
                    advance(f"{label}: {kind} latency {variant.name}")
            for variant in run.live(order):
                run.step(variant, lambda v: run.throughput(v, batch, batch_size))
                advance(f"{label}: throughput {variant.name}")
        for _ in range(rounds, load_rounds):  # more load samples than measuring rounds were asked for
            for variant in run.live():
                run.step(variant, run.load_once)
                advance(f"load {variant.name}")
        for variant in run.live():
            progress.update(task, description=f"predicting {len(texts)} texts with {variant.name}")
            run.step(variant, lambda v: run.predict(v, texts, batch_size))
            advance(f"predicted with {variant.name}")
            if variant.worker is not None:
                variant.worker.close()
                variant.worker = None
