"""Drift alerts of ``slm serve`` on a real BANKING77 bundle (issue 23, acceptance 3), and what watching costs.

    python bench/drift.py --bundle /work/artifacts/banking77-onnx   # an exported 77-intent BANKING77 bundle
    python bench/drift.py                                           # trains and exports a shorter one first
    python bench/drift.py --quick                                   # every step, shorter (a smoke run)

A real ``slm serve`` process per run (defaults: window 500 texts, thresholds automatic), its alerts received
by a real webhook receiver in this process (``--drift-webhook``), driven by concurrent single-text clients
(aiohttp, ``--clients``, loopback only):

1. **in distribution**: 10,000 requests of BANKING77 test texts (unseen in training; shuffled, cycled)
   must raise no alert;
2. **out of scope**: then CLINC150's out-of-scope queries (``oos_test``, ``oos_val``, ``oos_train``) must
   raise one within 500 requests; the requests until each signal's alert are read from the alert itself
   (``texts_seen``, exact whatever the concurrency);
3. **label shift** (a variant): back to in-distribution traffic for 1,500 requests (a whole window without a
   breach re-arms the signals), then BANKING77 test texts of five intents only.

Twice: with the drift reference in the manifest (a bundle trained before the monitor gets a copy whose
reference is recomputed from its recorded validation split with ``slm.bundle.drift_reference``), and with
the server's warm-up reference (the same bundle without one: its first 1,000 texts are the reference).
Then the observer's cost: throughput with drift on and ``--no-drift``, same load, interleaved
on/off/on/off, and the monitor's own time per request measured in process.

Writes ``bench/results/drift.json`` and ``drift.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
RESULTS = ROOT / "results"
BUILT = ROOT.parent / "runs" / "bench" / "drift"
MODEL = "banking77"
IN_DISTRIBUTION = 10_000
WITHIN = 500  # acceptance: an alert within this many out-of-scope requests
TRAIN_PER_INTENT = 60
SHIFT_INTENTS = ["card_arrival", "exchange_rate", "top_up_failed", "pin_blocked", "request_refund"]


# ---------------------------------------------------------------- the bundle
def trained_bundle() -> Path:
    """A 77-intent BANKING77 bundle trained here once and exported (runs/bench/drift/banking77-onnx).

    Shorter than a full training, so the benchmark runs in reasonable time on 2 shared cores: the first
    ``TRAIN_PER_INTENT`` training texts of every intent, two epochs of 64 tokens (the monitor compares the
    model with its own reference, so a somewhat weaker model is as fair a test; ``--bundle`` takes any other).
    """
    onnx = BUILT / "banking77-onnx"
    if not (onnx / "manifest.json").is_file():
        import pandas as pd

        import slm
        from slm.compression.export import export_bundle
        from slm.training.config import TrainConfig

        BUILT.mkdir(parents=True, exist_ok=True)
        print("training a BANKING77 bundle (once; runs/bench/drift)...", flush=True)
        train = pd.read_csv(DATA / "banking77" / "train.csv").groupby("category").head(TRAIN_PER_INTENT)
        train.to_csv(BUILT / "train.csv", index=False)
        slm.train(BUILT / "train.csv", test=DATA / "banking77" / "test.csv", output=BUILT / "banking77",
                  show_progress=False, config=TrainConfig(epochs=2, max_length=64, seed=23))  # fmt: skip
        export_bundle(BUILT / "banking77", onnx)
    return onnx


def with_reference(bundle: Path) -> tuple[Path, str]:
    """``bundle`` if its manifest has a drift reference, else a copy with one recomputed from its recorded
    validation split (what training writes now); and how the reference was obtained."""
    from slm.bundle.derive import derive_bundle
    from slm.bundle.drift_reference import drift_reference
    from slm.bundle.manifest import read_manifest
    from slm.pipeline import prepare_splits, recorded_source
    from slm.runtime import load

    manifest = read_manifest(bundle)
    if manifest.drift_reference is not None:
        return bundle, "written by training"
    out = BUILT / f"{bundle.name}-reference"
    if (out / "manifest.json").is_file() and read_manifest(out).drift_reference is not None:
        return out, "recomputed from the recorded validation split (cached)"
    source, split = recorded_source(manifest), (manifest.data or {}).get("split") or {}
    if source is None:
        raise SystemExit(f"error: {bundle} records no training file to recompute its reference from")
    splits = prepare_splits(source, validation=split.get("validation"), test=split.get("test"),
                            val_size=split["val_size"], test_size=split["test_size"], seed=split["seed"])  # fmt: skip
    model = load(bundle)
    proba = model.predict_proba(splits.validation.texts)
    reference = drift_reference(splits.train.labels, model.labels, proba, component=model.default_component,
                                source="recomputed")  # fmt: skip
    derive_bundle(bundle, out, lambda _, m: replace(m, drift_reference=reference), step="drift-reference")
    return out, f"recomputed from the recorded validation split ({len(splits.validation):,} texts)"


def without_reference(bundle: Path) -> Path:
    """``bundle`` as a bundle from before the drift monitor: a copy whose manifest has no reference."""
    from slm.bundle.derive import derive_bundle
    from slm.bundle.manifest import read_manifest

    if read_manifest(bundle).drift_reference is None:
        return bundle
    out = BUILT / f"{bundle.name}-no-reference"
    derive_bundle(bundle, out, lambda _, m: replace(m, drift_reference=None), step="no-drift-reference")
    return out


# ---------------------------------------------------------------- texts
def texts() -> dict[str, list[str]]:
    import pandas as pd

    rng = np.random.default_rng(23)
    test = pd.read_csv(DATA / "banking77" / "test.csv")
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    oos = [text for key in ("oos_test", "oos_val", "oos_train") for text, _ in clinc[key]]
    shift = test[test["category"].isin(SHIFT_INTENTS)]["text"].tolist()
    return {
        "in_distribution": [test["text"].tolist()[i] for i in rng.permutation(len(test))],
        "out_of_scope": [oos[i] for i in rng.permutation(len(oos))],
        "label_shift": [shift[i] for i in rng.permutation(len(shift))],
    }


def cycled(pool: list[str], n: int, start: int = 0) -> list[str]:
    return [pool[(start + i) % len(pool)] for i in range(n)]


# ---------------------------------------------------------------- the server, the receiver, the clients
class Receiver:
    """A real webhook endpoint: every alert POSTed to it, in arrival order."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``slm serve BUNDLE`` in its own process."""

    def __init__(self, bundle: Path, args: list[str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "slm", "serve", f"{MODEL}={bundle}", "--port", str(self.port),
                   "--no-access-log", *args]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        deadline = time.monotonic() + 180
        while True:
            try:
                if urllib.request.urlopen(self.url + "/readyz", timeout=1).status == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the server did not start; see {log}")
            time.sleep(0.2)

    def drift(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/v1/models/{MODEL}/drift", timeout=10) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def _stream(url: str, batch: list[str], clients: int) -> dict[str, Any]:
    import aiohttp

    queue = iter(batch)
    statuses: dict[int, int] = {}

    async def client(session: aiohttp.ClientSession) -> None:
        for text in queue:  # one shared iterator: each text is sent once, by whichever client is free
            try:
                async with session.post(url, json={"text": text}) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError):
                status = 0
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {"requests": len(batch), "seconds": round(seconds, 2), "requests_per_s": round(len(batch) / seconds, 1),
            "failed": sum(n for status, n in statuses.items() if status != 200)}  # fmt: skip


def stream(server: Server, batch: list[str], clients: int) -> dict[str, Any]:
    return asyncio.run(_stream(f"{server.url}/v1/models/{MODEL}/predict", batch, clients))


# ---------------------------------------------------------------- the phases
@contextmanager
def peaks(server: Server) -> Iterator[dict[str, Any]]:
    """The most extreme value of each signal /drift showed while the block ran (sampled every 0.2 s: the
    server checks every 25 texts, about every 0.2 s here), against its threshold: the margin kept."""
    found: dict[str, Any] = {}
    worst = {"psi": max, "low_confidence": max, "mean_confidence": min}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            for signal, result in server.drift()["signals"].items():
                if signal in worst and result is not None:
                    value = worst[signal](found.get(signal, {}).get("value", result["value"]), result["value"])
                    found[signal] = {"value": value, "threshold": result["threshold"], "samples":
                                     found.get(signal, {}).get("samples", 0) + 1}  # fmt: skip

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()


def phase(server: Server, receiver: Receiver, name: str, batch: list[str], clients: int) -> dict[str, Any]:
    """Stream ``batch``; the alerts it raised, each with the requests of this phase it took."""
    seen_before = server.drift()["window"]["texts_seen"]
    alerts_before = len(server.drift()["alerts"])
    with peaks(server) as peak:
        load = stream(server, batch, clients)
    time.sleep(0.5)  # the webhook sender posts from its own thread
    drift = server.drift()
    raised = drift["alerts"][alerts_before:] if len(drift["alerts"]) > alerts_before else []
    until = {}
    for alert in raised:
        until.setdefault(alert["signal"], alert["texts_seen"] - seen_before)
    result = {
        "phase": name, "requests": len(batch), **load, "alerts": len(raised), "requests_until_alert": until,
        "first_alert_after": min(until.values()) if until else None, "signals": drift["signals"],
        "window": {k: drift["window"][k] for k in ("mean_confidence", "low_confidence_rate")}, "peaks": peak,
    }  # fmt: skip
    shown = ", ".join(f"{s} after {n}" for s, n in until.items()) or "none"
    print(f"  {name:>16}: {len(batch):6,} requests, {load['requests_per_s']:6.1f}/s, failed {load['failed']}, "
          f"alerts: {shown}", flush=True)  # fmt: skip
    return result


def scenario(bundle: Path, reference: str, pools: dict[str, list[str]], args: argparse.Namespace) -> dict[str, Any]:
    """In distribution, out of scope, back to normal, label shift: one server, its alerts by webhook."""
    receiver = Receiver()
    server = Server(bundle, ["--drift-webhook", receiver.url], args.logs / f"server-{reference}.log")
    print(f"{reference} reference ({bundle.name}):", flush=True)
    try:
        plan = [
            ("in_distribution", cycled(pools["in_distribution"], args.requests)),
            ("out_of_scope", cycled(pools["out_of_scope"], args.oos)),
            ("back_to_normal", cycled(pools["in_distribution"], args.recover, start=args.requests)),
            ("label_shift", cycled(pools["label_shift"], args.oos)),
        ]
        phases = [phase(server, receiver, name, batch, args.clients) for name, batch in plan]
        drift = server.drift()
    finally:
        server.stop()
    return {"reference": reference, "bundle": str(bundle), "reference_facts": drift["reference"], "phases": phases,
            "thresholds": drift["thresholds"], "alerts": drift["alerts"], "webhook_received": len(receiver.received),
            "webhook_matches": receiver.received == drift["alerts"][-len(receiver.received):]
            if receiver.received else not drift["alerts"]}  # fmt: skip


def throughput(bundle: Path, pool: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Requests/s with drift on and off, same load, interleaved on/off/on/off (each its own server process)."""
    runs: dict[str, list[float]] = {"on": [], "off": []}
    batch = cycled(pool, args.throughput_requests)
    for round_ in range(2):
        for mode in ("on", "off"):
            server = Server(bundle, [] if mode == "on" else ["--no-drift"], args.logs / f"server-{mode}.log")
            try:
                stream(server, batch[:200], args.clients)  # warm the connection pool and the batches
                result = stream(server, batch, args.clients)
            finally:
                server.stop()
            runs[mode].append(result["requests_per_s"])
            print(f"  throughput, drift {mode:>3} (round {round_ + 1}): {result['requests_per_s']:.1f} requests/s",
                  flush=True)  # fmt: skip
    on, off = float(np.mean(runs["on"])), float(np.mean(runs["off"]))
    return {"requests": len(batch), "clients": args.clients, "requests_per_s": runs, "mean_on": round(on, 1),
            "mean_off": round(off, 1), "cost_percent": round(100 * (off - on) / off, 1)}  # fmt: skip


def observer_cost(bundle: Path, pool: list[str]) -> dict[str, Any]:
    """The monitor's own time per single-text request, in process: real predictions fed to DriftMonitor."""
    from slm.serving.config import ServeConfig
    from slm.serving.drift import DriftMonitor
    from slm.serving.models import decode_rows
    from slm.serving.service import ModelService

    service = ModelService.load([(MODEL, bundle)], ServeConfig(max_batch=32))
    try:
        loaded = service.models[MODEL].current
        texts = pool[:2_000]
        rows = decode_rows(loaded.bundle.predict_proba(texts, batch_size=32), loaded, top_k=5, with_probabilities=False)
        monitor = DriftMonitor(service, ServeConfig().drift)
        started = time.perf_counter()
        for i, (text, row) in enumerate(zip(texts * 5, rows * 5, strict=True)):
            monitor.predicted(MODEL, loaded.version, str(i), [text], [row])
        seconds = time.perf_counter() - started
    finally:
        asyncio.run(service.close())
    return {"requests": len(texts) * 5, "microseconds_per_request": round(seconds / (len(texts) * 5) * 1e6, 1)}


# ---------------------------------------------------------------- report
def checks(results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for run in results["scenarios"]:
        by = {p["phase"]: p for p in run["phases"]}
        first = by["out_of_scope"]["first_alert_after"]
        out[run["reference"]] = {
            "no_alert_in_distribution": by["in_distribution"]["alerts"] == 0,
            "alert_within_500_out_of_scope": first is not None and first <= WITHIN,
            "no_failed_requests": all(p["failed"] == 0 for p in run["phases"]),
        }
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Drift alerts of `slm serve` (issue 23, acceptance 3)", "",
        f"{r['date']} · {r['machine']['cpu']['model']} · {r['machine']['cpu']['logical_cpus']} logical CPUs · "
        f"load average before {r['load_average_before']} · `python bench/drift.py{r['argv']}`", "",
        f"Bundle: `{r['bundle']}` ({r['labels']} labels). One `slm serve` per run, {r['clients']} concurrent "
        "single-text clients; alerts read from `GET /v1/models/{name}/drift` and received by a webhook.", "",
        f"Model: serves its {r['model']['served_component']}; trained on {r['model']['data']['n_train']:,} texts "
        f"(validation {r['model']['data']['n_validation']:,}); test accuracy "
        + ", ".join(f"{name} {value:.1%}" for name, value in r["model"]["accuracy"].items())
        + " (ngram_baseline: the TF-IDF n-gram baseline).", "",
        "| reference | phase | requests | requests/s | failed | alerts | requests until alert (by signal) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for run in r["scenarios"]:
        for p in run["phases"]:
            until = ", ".join(f"{s} {n}" for s, n in sorted(p["requests_until_alert"].items(), key=lambda x: x[1]))
            lines.append(f"| {run['reference']} | {p['phase']} | {p['requests']:,} | {p['requests_per_s']} "
                         f"| {p['failed']} | {p['alerts']} | {until or '–'} |")  # fmt: skip
    lines += ["", "Signals at the end of each phase (value / threshold):", "",
              "| reference | phase | PSI | low-confidence rate | mean confidence |",
              "|---|---|---|---|---|"]  # fmt: skip
    for run in r["scenarios"]:
        for p in run["phases"]:
            s = p["signals"]
            lines.append(f"| {run['reference']} | {p['phase']} | {_pair(s['psi'])} | {_pair(s['low_confidence'])} | "
                         f"{_pair(s['mean_confidence'])} |")  # fmt: skip
    lines += ["", "Most extreme value each signal showed during each phase (sampled from /drift every 0.2 s; value / "
              "threshold):", "",
              "| reference | phase | PSI (max) | low-confidence rate (max) | mean confidence (min) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for run in r["scenarios"]:
        for p in run["phases"]:
            k = p["peaks"]
            lines.append(f"| {run['reference']} | {p['phase']} | {_pair(k.get('psi'))} | "
                         f"{_pair(k.get('low_confidence'))} | {_pair(k.get('mean_confidence'))} |")  # fmt: skip
    t = r["throughput"]
    lines += [
        "", "Reference facts: " + "; ".join(f"{run['reference']}: {json.dumps(run['reference_facts'])}"
                                             for run in r["scenarios"]),  # fmt: skip
        "", f"Thresholds: {json.dumps(r['scenarios'][0]['thresholds'])}", "",
        f"**Cost of watching** ({t['requests']:,} requests per run, {t['clients']} clients, interleaved): "
        f"drift on {t['requests_per_s']['on']} requests/s, off {t['requests_per_s']['off']} (means {t['mean_on']} "
        f"vs {t['mean_off']}). Two runs of the same setting differ by up to {_spread(t)}% on these shared cores, "
        "more than any cost of the monitor, so this comparison cannot resolve it; the monitor's own time, measured "
        f"in process on real predictions, is {r['observer']['microseconds_per_request']} µs per single-text request "
        f"(about {_share(r)}% of the {_ms(r)} ms each request took the server here).", "",
        f"Checks: {json.dumps(r['checks'])}", "",
    ]  # fmt: skip
    return "\n".join(lines)


def model_facts(bundle: Path) -> dict[str, Any]:
    """What the served model is: its component and test accuracy, beside the n-gram baseline's."""
    from slm.bundle.manifest import read_manifest

    manifest = read_manifest(bundle)
    metrics = manifest.metrics or {}
    scored = metrics.get(metrics.get("evaluated_on", ""), {})
    return {"served_component": manifest.default_component, "data": manifest.data,
            "accuracy": {name: round(m["accuracy"], 4) for name, m in scored.items() if "accuracy" in m}}  # fmt: skip


def _spread(t: dict[str, Any]) -> float:
    return round(max(100 * (max(v) - min(v)) / min(v) for v in t["requests_per_s"].values()), 1)


def _ms(r: dict[str, Any]) -> float:
    """Wall time per request of the server under the load (2 cores serving ``mean_on`` requests a second)."""
    return round(1000 / r["throughput"]["mean_on"], 1)


def _share(r: dict[str, Any]) -> float:
    return round(100 * r["observer"]["microseconds_per_request"] / 1000 / _ms(r), 2)


def _pair(signal: dict[str, Any] | None) -> str:
    if not signal or signal.get("value") is None:
        return "–"
    return f"{signal['value']:.3f} / {signal['threshold']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="an exported 77-intent BANKING77 bundle (default: train one)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="shorter phases (a smoke run, not for the record)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.requests, args.oos, args.recover = (2_000, 600, 1_000) if args.quick else (IN_DISTRIBUTION, 1_000, 1_500)
    args.throughput_requests = 1_000 if args.quick else 3_000
    for path in (DATA / "banking77" / "test.csv", DATA / "clinc150" / "data_full.json"):
        if not path.is_file():
            print(f"error: the data file {path} is absent", file=sys.stderr)
            return 2
    bundle = args.bundle or trained_bundle()
    if not (bundle / "manifest.json").is_file():
        print(f"error: {bundle} is not a bundle", file=sys.stderr)
        return 2
    BUILT.mkdir(parents=True, exist_ok=True)
    args.logs = BUILT / "logs"
    args.logs.mkdir(exist_ok=True)
    load_before = load_average()
    pools = texts()
    referenced, how = with_reference(bundle)
    print(f"drift reference: {how}", flush=True)
    scenarios = [scenario(referenced, "manifest", pools, args),
                 scenario(without_reference(referenced), "warm-up", pools, args)]  # fmt: skip
    from slm.bundle.manifest import read_manifest

    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "bundle": str(bundle), "labels": len(read_manifest(bundle).labels or []), "reference_how": how,
        "model": model_facts(bundle),
        "clients": args.clients, "load_average_before": load_before, "scenarios": scenarios,
        "throughput": throughput(referenced, pools["in_distribution"], args),
        "observer": observer_cost(referenced, pools["in_distribution"]),
        "machine": machine_info(packages=("slm", "onnxruntime", "fastapi", "uvicorn", "aiohttp")),
    }  # fmt: skip
    results["checks"] = checks(results)
    args.output.mkdir(parents=True, exist_ok=True)
    name = "drift-quick" if args.quick else "drift"
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
