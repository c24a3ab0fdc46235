"""Load test of ``slm serve`` against the runtime's own offline throughput, in one run (issue #5).

    python bench/serving.py            # ~13 minutes on 2 cores; needs runs/bench/banking77 (bench/classification.py)
    python bench/serving.py --quick    # every step, shorter (a smoke run, not for the record)

Serves the int8 BANKING77 bundle (``runs/bench/banking77-int8``, built with ``slm compress`` if missing)
with ``slm serve`` on 127.0.0.1, batching on (the defaults) and off (``--max-batch 1``) side by side,
each in its own process, and drives them in turn with ``bench/serving_client.py`` (a bounded
asynchronous client in its own process: loopback only, bounded in count and time):

1. offline first, in a fresh process: the runtime's own throughput on the same texts, batches of 32
   consecutive texts, one ``predict_proba`` call each (as ``slm bench`` measures it), with the
   runtime's default threads and with two single-threaded batches at once (what the server runs);
2. closed loop at 1, 8, 32 and 64 concurrent clients sending one short text each, batching on and
   off interleaved level by level (32 clients: 60 s, the others 20 s), then ~64-token texts;
3. open loop at half the measured maximum throughput for 60 s (p99 latency);
4. overload: open loop at 2x, then 4x the maximum for 20 s each (fast 503s, bounded memory), then a
   quarter of the maximum for 15 s (recovery).

Server RSS is sampled every 0.2 s. Writes ``bench/results/serving.json`` and ``serving.md``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from compression import FP32, build_variants  # noqa: E402

from slm.hardware import load_average, machine_info  # noqa: E402

DATA = ROOT.parent.parent / "shared" / "data" / "banking77" / "test.csv"
RESULTS = ROOT / "results"
BUNDLE = FP32.with_name(FP32.name + "-int8")
MODEL = "banking77-int8"
CLIENT = ROOT / "serving_client.py"

OFFLINE = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from slm.runtime import load
from slm.runtime.onnx import DEFAULT_THREADS
bundle, path, passes, with_batch1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
texts = json.load(open(path))
batches = [texts[i:i + 32] for i in range(0, len(texts), 32)]

def rate(threads, streams, batch_size=32):
    model = load(bundle, threads=threads)
    chunks = batches if batch_size == 32 else [[t] for t in texts]
    model.predict_proba(chunks[0])
    best = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            list(pool.map(model.predict_proba, chunks))
        best = max(best, len(texts) / (time.perf_counter() - start))
    return round(best, 1)

result = {
    "default_threads": DEFAULT_THREADS,
    "batch32_default_threads": rate(DEFAULT_THREADS, 1),
    "batch32_two_single_thread_streams": rate(1, 2),
}
if with_batch1:
    result["batch1_default_threads"] = rate(DEFAULT_THREADS, 1, batch_size=1)
print(json.dumps(result))
"""
# Rounds of (offline, batching on, batching off) for the acceptance ratio: the machine is shared, so the
# offline reference is measured right beside the server runs it is compared with, three times.
RATIO_ROUNDS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``slm serve`` in its own process, with its RSS sampled while a run is on."""

    def __init__(self, name: str, args: list[str], logs: Path) -> None:
        import psutil

        self.name, self.port = name, _free_port()
        self.log = logs / f"server-{name}.log"
        command = [sys.executable, "-m", "slm", "serve", f"{MODEL}={BUNDLE}", "--port", str(self.port), *args]
        self.command = command
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        self.ps = psutil.Process(self.process.pid)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(self.url + "/readyz", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: server {name} did not start; see {self.log}")
            time.sleep(0.2)
        self.idle_rss_mb = self.rss_mb()

    def rss_mb(self) -> float:
        return round(self.ps.memory_info().rss / 2**20, 1)

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return round(int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024, 1)

    @contextmanager
    def sampling(self):
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                samples.append(self.rss_mb())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield samples
        finally:
            stop.set()
            thread.join()

    def alive(self) -> bool:
        try:
            return urllib.request.urlopen(self.url + "/healthz", timeout=5).status == 200
        except OSError:
            return False

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


def drive(server: Server, texts: Path, logs: Path, *, concurrency: int | None = None, rate: float | None = None,
          duration: float) -> dict:  # fmt: skip
    """One client run against ``server``; the client's summary plus the server's RSS and CPU."""
    out = logs / f"run-{server.name}-{concurrency or rate}-{time.monotonic_ns()}.json"
    load = ["--concurrency", str(concurrency)] if concurrency else ["--rate", str(rate)]
    command = [sys.executable, str(CLIENT), f"{server.url}/v1/models/{MODEL}/predict", "--texts", str(texts), *load,
               "--duration", str(duration), "-o", str(out)]  # fmt: skip
    cpu = server.ps.cpu_times()
    load_before = load_average()
    with server.sampling() as rss:
        client = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if client.returncode != 0:
        raise SystemExit(f"error: the load client failed: {client.stderr.strip()[-500:]}")
    after = server.ps.cpu_times()
    result = json.loads(out.read_text())
    result.update(
        server=server.name, duration_s=duration, load_average_before=load_before,
        server_rss_mb_max=max(rss, default=server.rss_mb()),
        server_cpu_cores=round((after.user - cpu.user + after.system - cpu.system) / duration, 2),
    )  # fmt: skip
    print(f"  {server.name:>8} {'c=' + str(concurrency) if concurrency else f'{rate:.0f} req/s':>12}: "
          f"{result['throughput_rps']:8.1f} ok/s, p50 {result['latency_ms']['50']} ms, "
          f"p99 {result['latency_ms']['99']} ms, errors {result['errors']}, RSS {result['server_rss_mb_max']} MB",
          flush=True)  # fmt: skip
    return result


def texts_files(logs: Path) -> tuple[Path, Path, dict]:
    """BANKING77 test texts in a fixed shuffled order, and ~64-token texts made of them."""
    import numpy as np
    import pandas as pd

    from slm.benchmark.harness import LONG_TOKENS, _counter, _long_texts, _tokenizer_for

    texts = pd.read_csv(DATA)["text"].astype(str).tolist()
    rng = np.random.default_rng(0)
    short = [texts[i] for i in rng.permutation(len(texts))]
    count = _counter(_tokenizer_for([BUNDLE]))
    long = _long_texts(texts, 640, count, rng)
    paths = logs / "short.json", logs / "long.json"
    for path, items in zip(paths, (short, long), strict=True):
        path.write_text(json.dumps(items))
    info = {
        "short_texts": len(short), "short_tokens_mean": round(float(np.mean([count(t) for t in short])), 1),
        "long_texts": len(long), "long_tokens_mean": round(float(np.mean([count(t) for t in long])), 1),
        "long_tokens_target": LONG_TOKENS,
    }  # fmt: skip
    return paths[0], paths[1], info


def offline(texts: Path, limit: int, logs: Path, *, passes: int = 3, batch1: bool = True) -> dict:
    subset = logs / f"offline-{texts.name}"
    subset.write_text(json.dumps(json.loads(texts.read_text())[:limit]))
    command = [sys.executable, "-c", OFFLINE, str(BUNDLE), str(subset), str(passes), "1" if batch1 else "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"error: the offline measurement failed: {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1]) | {"texts": limit}
    print(f"  offline {texts.stem}: {result}", flush=True)
    return result


def run(args: argparse.Namespace) -> dict:
    scale = 0.2 if args.quick else 1.0
    long_run, short_run = 60 * scale, 20 * scale
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="slm-serving-bench-") as tmp:
        logs = Path(tmp)
        short, long, text_info = texts_files(logs)
        print("offline runtime throughput (fresh process)", flush=True)
        results: dict = {"offline": {"short": offline(short, 1600, logs), "long": offline(long, 640, logs)}}
        servers = {
            "on": Server("on", [], logs),
            "off": Server("off", ["--max-batch", "1"], logs),
            "wait5ms": Server("wait5ms", ["--max-wait-ms", "5"], logs),
        }
        results["servers"] = {k: {"command": " ".join(s.command[1:]), "idle_rss_mb": s.idle_rss_mb}
                              for k, s in servers.items()}  # fmt: skip
        try:
            print("closed loop, short texts", flush=True)
            closed = []
            for level in args.levels:
                duration = long_run if level == 32 else short_run
                for name in ("on", "off") + (("wait5ms",) if level == 32 else ()):
                    closed.append(drive(servers[name], short, logs, concurrency=level,
                                        duration=short_run if name == "wait5ms" else duration))  # fmt: skip
            print(f"acceptance ratio: {RATIO_ROUNDS} rounds of offline, then 32 clients on and off", flush=True)
            rounds = []
            for _ in range(RATIO_ROUNDS):
                reference = offline(short, 1600, logs, passes=2, batch1=False)
                on, off = (drive(servers[n], short, logs, concurrency=32, duration=short_run) for n in ("on", "off"))
                rounds.append({"offline": reference, "on": on, "off": off,
                               "on_vs_offline": round(on["throughput_rps"] / reference["batch32_default_threads"], 3),
                               "on_vs_two_streams": round(on["throughput_rps"]
                                                          / reference["batch32_two_single_thread_streams"], 3),
                               "on_vs_off": round(on["throughput_rps"] / off["throughput_rps"], 3)})  # fmt: skip
            print("closed loop, ~64-token texts", flush=True)
            closed_long = [drive(servers[name], long, logs, concurrency=level, duration=short_run)
                           for level in (8, 32) for name in ("on", "off")]  # fmt: skip
            best = max(r["throughput_rps"] for r in closed if r["server"] == "on")
            print(f"open loop at half the maximum ({best:.0f} ok/s)", flush=True)
            half = drive(servers["on"], short, logs, rate=round(best / 2, 1), duration=long_run)
            print("overload at 2x and 4x the maximum, then recovery", flush=True)
            overload2 = drive(servers["on"], short, logs, rate=round(2 * best, 1), duration=short_run)
            overload = drive(servers["on"], short, logs, rate=round(4 * best, 1), duration=short_run)
            overload["alive_after"] = servers["on"].alive()
            recovery = drive(servers["on"], short, logs, rate=round(best / 4, 1), duration=15 * scale)
            results |= {"ratio_rounds": rounds, "closed": closed, "closed_long": closed_long, "half_load": half,
                        "overload_2x": overload2,
                        "overload_4x": overload, "recovery": recovery}  # fmt: skip
            for name, server in servers.items():
                results["servers"][name]["peak_rss_mb"] = server.peak_rss_mb()
        finally:
            for name, server in servers.items():
                code = server.stop()
                results["servers"][name]["exit_code_after_sigterm"] = code
    results |= {
        "title": "slm serve load test (int8 BANKING77)", "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick, "texts": text_info,
        "environment": environment(),
    }  # fmt: skip
    results["checks"] = checks(results)
    return results


def environment() -> dict:
    machine = machine_info(packages=("slm", "onnxruntime", "fastapi", "uvicorn", "aiohttp"))
    return {"cpu": machine["cpu"], "load_average_end": machine["load_average"], "versions": machine["versions"]}


def _at(runs: list[dict], server: str, level: int) -> dict:
    return next(r for r in runs if r["server"] == server and r["concurrency"] == level)


def checks(r: dict) -> dict:
    import statistics

    on32, off32 = _at(r["closed"], "on", 32), _at(r["closed"], "off", 32)
    rounds = r["ratio_rounds"]
    ratio = statistics.median(x["on_vs_offline"] for x in rounds)
    ratio_best = statistics.median(x["on_vs_two_streams"] for x in rounds)
    gain = statistics.median(x["on_vs_off"] for x in rounds)
    half, overload, recovery = r["half_load"], r["overload_4x"], r["recovery"]
    rss = max([x["server_rss_mb_max"] for x in r["closed"] + r["closed_long"] + [half] if x["server"] == "on"])
    return {
        "c32_vs_offline_batch32": {"target": 0.8, "measured": ratio, "met": ratio >= 0.8,
                                   "rounds": [x["on_vs_offline"] for x in rounds]},
        "c32_vs_best_offline_two_streams": {"target": 0.8, "measured": ratio_best, "met": ratio_best >= 0.8,
                                            "rounds": [x["on_vs_two_streams"] for x in rounds]},
        "c32_batching_beats_off": {"target": "> 1", "measured": gain,
                                   "met": gain > 1 and on32["throughput_rps"] > off32["throughput_rps"],
                                   "rounds": [x["on_vs_off"] for x in rounds]},
        "c32_60s_zero_errors": {"target": 0, "measured": on32["errors"], "met": on32["errors"] == 0
                                and on32["duration_s"] >= 60},
        "half_load_p99_ms": {"target": 100, "measured": half["latency_ms"]["99"],
                             "met": half["errors"] == 0 and half["latency_ms"]["99"] <= 100},
        "server_rss_mb": {"target": 300, "measured": rss, "met": rss <= 300},
        "overload_fast_503s": {"target": "503s, p99 of a 503 <= 100 ms at 2x and 4x",
                               "measured": [x["latency_503_ms"]["99"] for x in (r["overload_2x"], overload)],
                               "met": all(x["status"].get("503", 0) > 0 and (x["latency_503_ms"]["99"] or 1e9) <= 100
                                          for x in (r["overload_2x"], overload))},
        "overload_rss_mb": {"target": 300, "measured": overload["server_rss_mb_max"],
                            "met": overload["server_rss_mb_max"] <= 300},
        "recovers": {"target": "alive, 0 errors after", "measured": recovery["errors"],
                     "met": overload["alive_after"] and recovery["errors"] == 0},
    }  # fmt: skip


def markdown(r: dict) -> str:
    o = r["offline"]
    lines = [
        f"# {r['title']}",
        "",
        f"{r['started']} to {r['finished']}; {r['environment']['cpu']['model']}, "
        f"{r['environment']['cpu']['logical_cpus']} CPUs; load average at the end "
        f"{r['environment']['load_average_end']}." + (" **Quick run: not for the record.**" if r["quick"] else ""),
        "",
        "Client and server share the machine's 2 cores; the client's own CPU is not the server's.",
        "",
        "## Offline runtime throughput (texts/s, fresh process)",
        "",
        "| texts | batch 32, default threads | batch 32, two 1-thread batches at once | batch 1 |",
        "|---|---|---|---|",
    ]
    for kind in ("short", "long"):
        x = o[kind]
        lines.append(
            f"| {kind} ({r['texts'][kind + '_tokens_mean']} tokens) | {x['batch32_default_threads']} "
            f"({x['default_threads']} threads) | {x['batch32_two_single_thread_streams']} | "
            f"{x['batch1_default_threads']} |"
        )
    lines += ["", "## Acceptance ratio: 32 clients, measured beside the offline reference", "",
              "| round | offline batch 32, default threads | offline, two 1-thread batches | on ok/s | off ok/s | "
              "on / offline | on / two batches | on / off |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, x in enumerate(r["ratio_rounds"], 1):
        lines.append(f"| {i} | {x['offline']['batch32_default_threads']} | "
                     f"{x['offline']['batch32_two_single_thread_streams']} | {x['on']['throughput_rps']} | "
                     f"{x['off']['throughput_rps']} | {x['on_vs_offline']} | {x['on_vs_two_streams']} | "
                     f"{x['on_vs_off']} |")  # fmt: skip
    lines += [
        "",
        "## Closed loop (single-text requests)",
        "",
        "| texts | clients | server | ok/s | vs offline batch 32 (short: median of the rounds) | p50 ms | p95 ms | "
        "p99 ms | errors | "
        "server CPU cores | server RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    import statistics

    rounds = [x["offline"]["batch32_default_threads"] for x in r["ratio_rounds"]]
    for kind, runs in (("short", r["closed"]), ("long", r["closed_long"])):
        # Short texts: the median of the offline references measured beside the acceptance rounds.
        reference = statistics.median(rounds) if kind == "short" else o[kind]["batch32_default_threads"]
        for x in runs:
            lat = x["latency_ms"]
            lines.append(
                f"| {kind} | {x['concurrency']} | {x['server']} | {x['throughput_rps']} | "
                f"{x['throughput_rps'] / reference:.2f} | {lat['50']} | {lat['95']} | {lat['99']} | "
                f"{x['errors']} | {x['server_cpu_cores']} | {x['server_rss_mb_max']} |"
            )
    lines += [
        "",
        "## Open loop",
        "",
        "| phase | offered req/s | ok/s | 503s | other errors | p50 ms | p99 ms | 503 p50 / p99 ms | server RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in ("half_load", "overload_2x", "overload_4x", "recovery"):
        x = r[phase]
        other = x["errors"] - x["status"].get("503", 0)
        lines.append(
            f"| {phase.replace('_', ' ')} | {x['offered_rps']} | {x['throughput_rps']} | "
            f"{x['status'].get('503', 0)} | {other} | {x['latency_ms']['50']} | {x['latency_ms']['99']} | "
            f"{x['latency_503_ms']['50']} / {x['latency_503_ms']['99']} | {x['server_rss_mb_max']} |"
        )
    lines += ["", "## Checks", ""]
    for name, c in r["checks"].items():
        per_round = f" (rounds: {c['rounds']})" if "rounds" in c else ""
        lines.append(f"- {name}: target {c['target']}, measured {c['measured']}{per_round} → "
                     f"{'met' if c['met'] else 'MISSED'}")  # fmt: skip
    lines += ["", "Servers: " + "; ".join(f"`{k}`: `{v['command']}` (peak RSS {v.get('peak_rss_mb')} MB, "
                                          f"exit {v.get('exit_code_after_sigterm')} after SIGTERM)"
                                          for k, v in r["servers"].items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--quick", action="store_true", help="a fifth of every duration (smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if 32 not in args.levels:
        parser.error("--levels must include 32 (the acceptance level)")
    if not DATA.is_file():
        print(f"error: the BANKING77 test file {DATA} is absent", file=sys.stderr)
        return 2
    if not (BUNDLE / "manifest.json").is_file():
        if not (FP32 / "manifest.json").is_file():
            print(f"error: {FP32} is not a bundle: run `python bench/classification.py banking77` first",
                  file=sys.stderr)  # fmt: skip
            return 2
        build_variants(FP32, only=("onnx", "int8"))
    results = run(args)
    args.output.mkdir(parents=True, exist_ok=True)
    name = "serving-quick" if args.quick else "serving"
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
