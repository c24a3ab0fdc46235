"""The web export in headless Chromium (issue 25, acceptance 2): size, cold load, latency, threads, static tier.

    python bench/web.py --int8 B77-INT8 --static B77-STATIC [--also trimmed=B77-TRIM-INT8] [--out DIR]

The bundles: BANKING77 (/work/artifacts/nondp or any bundle) exported and int8-compressed with slm's default
recipe, and its static tier::

    slm export nondp -o b77-onnx && slm compress b77-onnx --quantize int8 -o b77-int8
    slm compress nondp --static -o b77-static
    slm compress b77-onnx --trim-vocab --quantize int8 -o b77-trim-int8      # optional, --also trimmed=...

Each is exported with ``slm.api.export_web`` and served by the folder's own ``serve.py`` (a local static server)
in three ways: plain (no COOP/COEP: one WebAssembly thread, as ``python -m http.server``), cross-origin isolated
(threads on) and isolated with gzip (what a compressing host transfers). Each way is a fresh headless Chromium
(empty cache), which opens ``index.html`` and measures, in the page:

* the bytes transferred (resource timing: ``transferSize`` of the page and of every file it fetched),
* the cold load: time from navigation to the first prediction (model loaded, one text classified),
* batch-1 latency: p50/p90 of ``classify([text])`` over short BANKING77 test texts, after 20 warm-up calls,
* for the static tier, texts/s of ``classify(all 3,080 test texts)``,
* test accuracy of the page's predictions (plain way only), beside the TF-IDF n-gram baseline the source
  bundle's manifest records and slm.runtime's accuracy on the same texts.

slm.runtime's batch-1 p50 on the same texts (ONNX Runtime, 1 thread and the default threads) and its static
texts/s are measured in the same run, beside them. Results: bench/results/web.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
TARGET_MB = 30.0
TARGET_P50_MS = 30.0
TARGET_STATIC_TPS = 5000.0
WARMUP = 20
ROUNDS = 5  # latency is measured in this many rounds, each over every way and slm.runtime in turn
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")

FIRST = """
const done = arguments[arguments.length - 1];
(async () => {
  const classifier = window.slmClassifier;
  await classifier.classify([arguments[0]]);
  const firstAt = performance.now();
  const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
  done({ first_prediction_ms: firstAt, loaded_ms: window.slmLoadedAt, threads: classifier.threads,
         isolated: crossOriginIsolated, kind: classifier.kind,
         resources: entries.map((e) => ({ name: e.name.split("/").slice(3).join("/") || "index.html",
                                          transfer: e.transferSize, body: e.decodedBodySize })) });
})().catch((error) => done({ error: String(error) }));
"""
LATENCY = """
const [texts, warmup, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const classifier = window.slmClassifier;
  for (const text of texts.slice(0, warmup)) await classifier.classify([text]);
  const times = [];
  for (const text of texts) {
    const t0 = performance.now();
    await classifier.classify([text]);
    times.push(performance.now() - t0);
  }
  done({ times });
})().catch((error) => done({ error: String(error) }));
"""
BATCH = """
const [texts, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const t0 = performance.now();
  const results = await window.slmClassifier.classify(texts);
  done({ seconds: (performance.now() - t0) / 1000, labels: results.map((r) => r.label) });
})().catch((error) => done({ error: String(error) }));
"""


# ---------------------------------------------------------------- serving and the browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(folder: Path, *, isolated: bool, compress: bool) -> Iterator[str]:
    """The folder's own serve.py on a free port; its URL."""
    port = free_port()
    command = [sys.executable, str(folder / "serve.py"), "--port", str(port)]
    command += [] if isolated else ["--no-isolation"]
    command += ["--gzip"] if compress else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        if compress:  # compress every file once before the browser comes: a host that serves them precompressed
            import urllib.request

            for path in folder.rglob("*"):
                if path.is_file():
                    url = f"http://127.0.0.1:{port}/{path.relative_to(folder).as_posix()}"
                    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
                    with urllib.request.urlopen(request) as response:
                        response.read()
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A fresh headless Chromium (new profile: empty HTTP and code caches)."""
    import shutil

    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(1800)
    try:
        yield driver
    finally:
        driver.quit()


def run_script(driver, script: str, *args) -> dict:
    result = driver.execute_async_script(script, *args)
    if "error" in result:
        raise RuntimeError(f"in the page: {result['error']}")
    return result


def open_page(stack: contextlib.ExitStack, folder: Path, way: str, first_text: str) -> tuple[object, dict]:
    """A cold page load in a fresh browser (kept open on ``stack``): the driver and what the load measured."""
    isolated, compress = way != "plain", way.endswith("+gzip")
    query = f"?threads={way.split('=')[1]}" if "threads=" in way else ""
    url = stack.enter_context(served(folder, isolated=isolated, compress=compress))
    driver = stack.enter_context(chromium())
    driver.get(url + query)
    deadline = time.monotonic() + 300
    while driver.execute_script("return document.body.dataset.ready") == "false":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{folder} did not load in 300 s")
        time.sleep(0.05)
    first = run_script(driver, FIRST, first_text)
    return driver, {
        "way": way, "threads": first["threads"], "cross_origin_isolated": first["isolated"],
        "transferred_mb": round(sum(r["transfer"] for r in first["resources"]) / 1e6, 2),
        "decoded_mb": round(sum(r["body"] for r in first["resources"]) / 1e6, 2),
        "resources": first["resources"], "loaded_ms": round(first["loaded_ms"], 1),
        "first_prediction_ms": round(first["first_prediction_ms"], 1),
    }  # fmt: skip


def latency(times: list[float]) -> dict:
    return {"batch1_p50_ms": round(statistics.median(times), 2),
            "batch1_p90_ms": round(statistics.quantiles(times, n=10)[-1], 2),
            "batch1_mean_ms": round(statistics.fmean(times), 2), "batch1_texts": len(times)}  # fmt: skip


# ---------------------------------------------------------------- the Python runtime, same run


def python_times(model, texts: list[str], component: str, warmup: int) -> list[float]:
    """Milliseconds of ``model.predict([text])`` per text, after ``warmup`` untimed calls."""
    for text in texts[:warmup]:
        model.predict([text], component=component)
    times = []
    for text in texts:
        t0 = time.perf_counter()
        model.predict([text], component=component)
        times.append((time.perf_counter() - t0) * 1000)
    return times


# ---------------------------------------------------------------- sizes


def folder_sizes(folder: Path) -> dict:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".slm-output.json"):
        data = path.read_bytes()
        files[path.relative_to(folder).as_posix()] = [len(data), len(gzip.compress(data, compresslevel=6))]
    return {"raw_mb": round(sum(v[0] for v in files.values()) / 1e6, 2),
            "gzip_mb": round(sum(v[1] for v in files.values()) / 1e6, 2), "files": files}  # fmt: skip


def baseline_accuracy(bundle: Path) -> dict:
    """The accuracies the bundle (or the bundle it was derived from) records on its test split."""
    from slm.bundle.manifest import read_manifest

    recorded = read_manifest(bundle, verify=False).metrics or {}
    metrics = recorded.get("test") or recorded.get("parent_test") or {}  # a compressed bundle keeps its parent's
    return {name: round(float(m["accuracy"]), 4) for name, m in metrics.items() if "accuracy" in m}


def machine_cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def accuracy(labels: list[str], gold: list[str]) -> float:
    return round(sum(a == b for a, b in zip(labels, gold, strict=True)) / len(gold), 4)


def bench_bundle(name: str, bundle: Path, out: Path, short: list[str], test: list[str], gold: list[str]) -> dict:
    """Export, open every way's page (cold loads, one after another), then latency rounds interleaved across the
    ways and slm.runtime (so a change in the shared machine's load hits them all alike), then batched speed."""
    from slm.api import export_web
    from slm.runtime import load

    print(f"{name}: exporting {bundle} for the web", flush=True)
    written = export_web(bundle, out / f"{name}-web", force=True)
    static = written.kind == "static"
    component = "static" if static else "transformer"
    entry = {"bundle": str(bundle), "kind": written.kind, "export_check": written.check,
             "sizes": folder_sizes(written.path), "recorded_test_accuracy": baseline_accuracy(bundle)}  # fmt: skip
    cores = machine_cores()
    ways = ["plain", "isolated"] + ([f"isolated, threads={cores}"] if cores > 1 and not static else [])
    ways.append("isolated+gzip")
    runtimes = {"1 thread": load(bundle, threads=1), "default threads": load(bundle)}
    times: dict[str, list[float]] = {key: [] for key in [*ways, *runtimes]}
    with contextlib.ExitStack() as stack:
        pages = {}
        for way in ways:
            print(f"{name}: Chromium, {way}: cold load", flush=True)
            pages[way] = open_page(stack, written.path, way, short[0])
        rounds = [short[r::ROUNDS] for r in range(ROUNDS)]
        for r, chunk in enumerate(rounds):
            print(f"{name}: latency round {r + 1}/{ROUNDS}", flush=True)
            warmup = WARMUP if r == 0 else 0
            for way, (driver, _) in pages.items():
                times[way] += run_script(driver, LATENCY, chunk, warmup)["times"]
            for key, model in runtimes.items():
                times[key] += python_times(model, chunk, component, warmup)
        print(f"{name}: all {len(test)} test texts, batched", flush=True)
        driver = pages["plain"][0]
        runs = [run_script(driver, BATCH, test) for _ in range(3 if static else 1)]
    seconds = [r["seconds"] for r in runs]
    entry["page_accuracy"] = accuracy(runs[0]["labels"], gold)
    entry["page_texts_per_s"] = round(len(test) / statistics.median(seconds), 1)
    entry["page_batch_seconds"] = seconds
    t0 = time.perf_counter()
    labels = [p["label"] for p in runtimes["default threads"].predict(test, component=component)]
    entry["runtime_accuracy"] = accuracy(labels, gold)
    entry["python_runtime"] = {key: latency(times[key]) for key in runtimes}
    entry["python_runtime"]["texts_per_s"] = round(len(test) / (time.perf_counter() - t0), 1)
    entry["ways"] = [{**measured, **latency(times[way])} for way, (_, measured) in pages.items()]
    for w in entry["ways"]:
        print(f"  {w['way']}: {w['transferred_mb']} MB transferred, first prediction {w['first_prediction_ms']} ms, "
              f"batch-1 p50 {w['batch1_p50_ms']} ms ({w['threads']} threads)", flush=True)  # fmt: skip
    return entry


# ---------------------------------------------------------------- report


def verdicts(results: dict) -> list[str]:
    lines = []
    for name, entry in results["pages"].items():
        if entry["kind"] == "static":
            tps = entry["page_texts_per_s"]
            lines.append(f"- {name}: {tps:,.0f} texts/s in the browser (target ≥ {TARGET_STATIC_TPS:,.0f}): "
                         f"{'met' if tps >= TARGET_STATIC_TPS else 'MISSED'}")  # fmt: skip
            continue
        sizes = {w["way"]: w["transferred_mb"] for w in entry["ways"]}
        plain, packed = sizes["plain"], sizes["isolated+gzip"]
        best = min(entry["ways"], key=lambda w: w["batch1_p50_ms"])
        lines.append(f"- {name}: {plain} MB transferred uncompressed, {packed} MB served gzip (target ≤ "
                     f"{TARGET_MB:g} MB): {'met' if plain <= TARGET_MB else 'MISSED'} uncompressed, "
                     f"{'met' if packed <= TARGET_MB else 'MISSED'} gzip; batch-1 p50 {best['batch1_p50_ms']} ms "
                     f"({best['way']}; target ≤ {TARGET_P50_MS:g} ms): "
                     f"{'met' if best['batch1_p50_ms'] <= TARGET_P50_MS else 'MISSED'}")  # fmt: skip
    return lines


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = ["# The web export in headless Chromium (issue 25, acceptance 2)", "",
             "`python bench/web.py`: each bundle exported with `slm export --target web`, served by the folder's "
             "`serve.py` on this machine and opened in a fresh headless Chromium per row (empty cache; the pages "
             "load one after another, then stay open). *plain*: no "
             "COOP/COEP headers (as `python -m http.server`: one WebAssembly thread); *isolated*: COOP/COEP, "
             "the page's default threads (half the logical cores, at most 4); *threads=N*: N asked for with "
             "`index.html?threads=N`; *+gzip*: responses gzip-compressed (compressed before the browser "
             "comes, as a host serving precompressed files). Transferred = resource timing's transferSize of "
             "the page and every file it fetched. First prediction = navigation to the first classified text. "
             "Batch-1 = `classify([text])` one short BANKING77 test text at a time (texts of at most the median "
             f"length; {results['short_texts']} per row), in {ROUNDS} rounds that go through every page and "
             "slm.runtime in turn, so a change in the shared machine's load hits them alike. A page that is not "
             "cross-origin isolated reads its clock in 0.1 ms steps (5 µs isolated): the static tier's plain "
             "p50 is below that step.", "",
             f"Machine: {machine['cpu'].get('model')}, {machine['cpu'].get('logical_cpus')} logical CPUs (shared), "
             f"{results['chromium'].split(' built ')[0]}, node {results['node']}; "
             f"load before: {results['load_before']}.", ""]  # fmt: skip
    lines += verdicts(results) + [""]
    for name, entry in results["pages"].items():
        sizes, py = entry["sizes"], entry["python_runtime"]
        lines += [f"## {name}: `{entry['bundle']}` ({entry['kind']})", "",
                  f"Folder {sizes['raw_mb']} MB ({sizes['gzip_mb']} MB gzip); largest files: " + ", ".join(
                      f"{f} {v[0] / 1e6:.1f} MB ({v[1] / 1e6:.1f} gz)"
                      for f, v in sorted(sizes["files"].items(), key=lambda kv: -kv[1][0])[:3]) + ".", "",
                  "| way | threads | transferred MB | loaded ms | first prediction ms | batch-1 p50 ms | p90 ms |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for w in entry["ways"]:
            lines.append(f"| {w['way']} | {w['threads']} | {w['transferred_mb']} | {w['loaded_ms']:,.0f} | "
                         f"{w['first_prediction_ms']:,.0f} | {w['batch1_p50_ms']} | "
                         f"{w['batch1_p90_ms']} |")  # fmt: skip
        check = entry["export_check"]
        acc = entry["recorded_test_accuracy"]
        lines += ["", f"- slm.runtime, same run (interleaved): batch-1 p50 {py['1 thread']['batch1_p50_ms']} ms "
                  f"on 1 thread, {py['default threads']['batch1_p50_ms']} ms on its default threads; "
                  f"{py['texts_per_s']:,.0f} "
                  f"texts/s batched (the page: {entry['page_texts_per_s']:,.0f} texts/s, `classify(all)`)",
                  f"- test accuracy (3,080 BANKING77 test texts): page {entry['page_accuracy']:.2%}, slm.runtime "
                  f"{entry['runtime_accuracy']:.2%}; recorded by the source bundle on the same split: "
                  + ", ".join(f"{k} {v:.2%}" for k, v in acc.items()),
                  f"- export check (node vs slm.runtime, {check['texts']} texts): labels agree "
                  f"{check['label_agreement']:.1%}, probability difference median {check['median_abs_diff']:.1e}, "
                  f"max {check['max_abs_diff']:.1e}", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", type=Path, help="the int8 ONNX bundle")
    parser.add_argument("--static", type=Path, help="the static tier bundle")
    parser.add_argument("--also", action="append", default=[], help="NAME=BUNDLE: another bundle to measure")
    parser.add_argument("--texts", type=int, default=200, help="short test texts for batch-1 latency")
    parser.add_argument("--out", type=Path, help="where the web folders go (default: a temporary folder)")
    args = parser.parse_args()
    bundles = {"int8": args.int8, "static": args.static, **dict(a.split("=", 1) for a in args.also)}
    bundles = {k: Path(v) for k, v in bundles.items() if v}
    if not bundles:
        parser.error("give --int8 and/or --static (see the docstring for how to build them)")
    import pandas as pd

    from slm.hardware import load_average, machine_info

    frame = pd.read_csv(DATA / "test.csv")
    test, gold = frame["text"].astype(str).tolist(), frame["category"].astype(str).tolist()
    shortest = sorted(range(len(test)), key=lambda i: (len(test[i].split()), i))[: len(test) // 2]
    short = [test[i] for i in sorted(shortest)][: args.texts]  # texts of at most the median length
    results = {
        "machine": machine_info(["onnxruntime", "tokenizers", "selenium"]),
        "chromium": subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip(),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "load_before": load_average(), "short_texts": len(short), "test_texts": len(test), "pages": {},
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slm-bench-web-")))
        out.mkdir(parents=True, exist_ok=True)
        for name, bundle in bundles.items():
            results["pages"][name] = bench_bundle(name, bundle, out, short, test, gold)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "web.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
