"""Text-based recommendation on MovieLens 100k: quality beside the baselines, and HTTP ranking latency (issue #9).

    python bench/recommend.py              # train (~25 min on 2 cores), evaluate, latency
    python bench/recommend.py --reuse      # keep runs/bench/movielens if it exists: evaluate again + latency

Quality: ``slm app recommend train --movielens`` (rating >= 4 is positive; leave-last-out per user
on time order; 10% of the items held out entirely as cold-start items). Every method is scored on
the same cases in the same run: random, popularity and item-kNN (fitted on the training events),
the un-fine-tuned encoder, the fine-tuned two-tower text model and the hybrid LightGBM ranker.

Latency: the bundle is served by ``slm serve`` in its own process; one client sends
``POST /v1/recommend/rank`` with 1,000 random candidate ids for a random user, one request at a
time (``--requests``, default 300). The same requests are timed in-process with
``Recommender.rank`` in the same run, interleaved, so the HTTP overhead is a ratio. Adding items
(the int8 ONNX item encoder, one item per run) is timed beside the fp32 graph of the same encoder.
Writes ``bench/results/recommend.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from slm.apps.recommend import Recommender
from slm.apps.recommend.report import markdown_report
from slm.hardware import load_average

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
BUNDLE = ROOT.parent / "runs" / "bench" / "movielens"
CANDIDATES = 1000


def train(steps: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "slm",
            "app",
            "recommend",
            "train",
            "--movielens",
            "--steps",
            str(steps),
            "-o",
            str(BUNDLE),
        ],
        check=True,
    )
    return time.perf_counter() - started


def evaluate_again() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "slm", "app", "recommend", "evaluate", str(BUNDLE), "--movielens", "-o", tmp],
            check=True,
        )
        return json.loads((Path(tmp) / "evaluation.json").read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "requests": len(ordered),
    }


def latency(requests: int, seed: int = 0) -> dict:
    model = Recommender(BUNDLE, threads=1)
    rng = np.random.default_rng(seed)
    users = list(model.users)
    bodies = [
        {
            "user": users[int(rng.integers(len(users)))],
            "k": 10,
            "candidates": [model.catalogue.ids[i] for i in rng.choice(len(model.catalogue), CANDIDATES, replace=False)],
        }
        for _ in range(requests)
    ]
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slm",
            "serve",
            str(BUNDLE),
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/v1/recommend", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        http_ms, local_ms, server_ms = [], [], []
        with httpx.Client(base_url=url, timeout=30) as client:
            for body in bodies[:20]:  # warm-up, not recorded
                client.post("/v1/recommend/rank", json=body).raise_for_status()
                model.rank(user=body["user"], candidates=body["candidates"], k=10)
            for body in bodies:
                started = time.perf_counter()
                reply = client.post("/v1/recommend/rank", json=body)
                http_ms.append((time.perf_counter() - started) * 1000)
                reply.raise_for_status()
                server_ms.append(reply.json()["took_ms"])
                started = time.perf_counter()
                model.rank(user=body["user"], candidates=body["candidates"], k=10)
                local_ms.append((time.perf_counter() - started) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=60)
    http, local = percentiles(http_ms), percentiles(local_ms)
    return {
        "candidates": CANDIDATES,
        "http": http,
        "server_side": percentiles(server_ms),
        "in_process": local,
        "http_over_in_process_p50": round(http["p50_ms"] / local["p50_ms"], 2),
        "target_p50_ms": 50.0,
        "met": http["p50_ms"] <= 50.0,
        "load_average": load_average(),
    }


def encoder_speed(items: int = 300) -> dict:
    """Items embedded per second, one per run, by the bundle's int8 graph and the same encoder exported fp32."""
    from transformers import AutoModel

    from slm.apps.common.encoders import RETRIEVER_OUTPUTS, Encoder, embedding_graph, export_encoder

    model = Recommender(BUNDLE, threads=1)
    spec = model.manifest.components.item_encoder
    texts = model.catalogue.texts[:items]
    with tempfile.TemporaryDirectory() as tmp:
        encoder = AutoModel.from_pretrained(BUNDLE / "item_encoder" / "pytorch").eval()
        fp32_spec = export_encoder(
            embedding_graph(encoder),
            encoder.config,
            BUNDLE / spec.tokenizer,
            Path(tmp),
            "fp32",
            RETRIEVER_OUTPUTS,
            max_length=spec.max_length,
            check_texts=[],
            int8=False,
        )
        runners = {"int8": Encoder(BUNDLE, spec, threads=1), "fp32": Encoder(Path(tmp), fp32_spec, threads=1)}
        seconds = {name: [] for name in runners}
        vectors = {}
        for _ in range(3):  # interleaved rounds
            for name, runner in runners.items():
                started = time.perf_counter()
                vectors[name] = runner.embed(texts, batch_size=1)
                seconds[name].append(time.perf_counter() - started)
    rate = {name: round(items / min(values), 1) for name, values in seconds.items()}
    cosine = float((vectors["int8"] * vectors["fp32"]).sum(axis=1).mean())
    return {
        "items": items,
        "items_per_second": rate,
        "int8_over_fp32": round(rate["int8"] / rate["fp32"], 2),
        "mean_cosine_int8_fp32": round(cosine, 4),
        "int8_check": spec.get("int8_check"),
    }


def markdown(result: dict) -> str:
    lines = [
        markdown_report(result["evaluation"], result["data"]).replace(
            "# Recommender evaluation", "# Recommendation on MovieLens 100k"
        )
    ]
    lat = result["latency"]
    lines += [
        "## Ranking 1,000 candidates for one user",
        "",
        "| path | p50 ms | p95 ms | mean ms | requests |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("http", "HTTP (slm serve, client-side)"),
        ("server_side", "server-side (took_ms)"),
        ("in_process", "in-process Recommender.rank"),
    ):
        p = lat[name]
        lines.append(f"| {label} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {p['mean_ms']:.2f} | {p['requests']} |")
    lines += [
        "",
        f"HTTP p50 {lat['http']['p50_ms']:.1f} ms (target <= 50 ms: {'met' if lat['met'] else 'MISSED'}); "
        f"HTTP / in-process p50 = {lat['http_over_in_process_p50']}x; load average {lat['load_average']}.",
        "",
    ]
    enc = result["encoder"]
    lines += [
        "## Adding items: the item encoder, one item per run",
        "",
        f"int8 {enc['items_per_second']['int8']} items/s, fp32 {enc['items_per_second']['fp32']} items/s "
        f"(int8 / fp32 = {enc['int8_over_fp32']}x); mean cosine int8 vs fp32 {enc['mean_cosine_int8_fp32']}.",
        "",
        f"Training wall time: {result['train_seconds'] / 60:.1f} min "
        f"(two-tower {result['training']['towers']['steps']} steps, {result['training']['towers']['seconds']:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="two-tower training steps")
    parser.add_argument("--requests", type=int, default=300, help="timed ranking requests")
    parser.add_argument("--reuse", action="store_true", help="keep an existing runs/bench/movielens bundle")
    args = parser.parse_args()
    train_seconds = None
    if args.reuse and (BUNDLE / "manifest.json").is_file():
        evaluation = evaluate_again()
    else:
        train_seconds = train(args.steps)
        evaluation = json.loads((BUNDLE / "evaluation.json").read_text(encoding="utf-8"))
    manifest = json.loads((BUNDLE / "manifest.json").read_text(encoding="utf-8"))
    result = {
        "data": manifest["data"],
        "split": manifest["split"],
        "evaluation": evaluation,
        "training": manifest["training"],
        "train_seconds": train_seconds if train_seconds is not None else manifest["training"]["seconds"],
        "latency": latency(args.requests),
        "encoder": encoder_speed(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recommend.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "recommend.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
