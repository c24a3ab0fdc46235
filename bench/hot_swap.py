"""Hot swap under load (issue 23, acceptance 4): 32 clients while promoted bundles replace the served one.

    python bench/hot_swap.py --bundle /work/artifacts/banking77-onnx   # a real BANKING77 ONNX bundle
    python bench/hot_swap.py                                           # runs/bench/banking77-onnx, else built
    python bench/hot_swap.py --quick                                   # shorter (a smoke run, not for the record)

The real ``slm serve NAME=SERVED --watch`` (this checkout's code, its own process, access log off) serves a
copy of the bundle (version 1). Version 2 is the same model quantized to int8 with ``slm.api.compress``
(``--second copy``: re-derived unchanged, a new digest only); its lineage names version 1 by digest.
32 closed-loop clients (aiohttp, one text per request, BANKING77 test texts) run the whole time:
``--before`` seconds on version 1, then ``--cycles`` rounds of ``slm.api.promote`` (version 2 in) and
``slm.api.rollback`` (version 1 back), each held ``--hold`` seconds after the server answers with the new
version, then ``--after`` seconds. Every answer's status and ``version`` is recorded.

Reported: requests, failed requests (non-200 or no answer: target 0), answers per version, answers from any
other version (target 0), stale answers (a request sent after the new version first answered, answered by
the old one: target 0), per swap the promote/rollback call time, the server's load time (its
``model_reloaded`` log event) and when the new version first and the old one last answered, and latency
p50/p99 before, during and after the swaps. Writes ``bench/results/hot_swap.json`` and ``hot_swap.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from slm.hardware import load_average, machine_info

ROOT = Path(__file__).resolve().parent
SRC = ROOT.parent / "src"
DATA = ROOT.parent.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
WORK = ROOT.parent / "runs" / "bench" / "hot-swap"
DEFAULT_BUNDLE = ROOT.parent / "runs" / "bench" / "banking77-onnx"
MODEL = "banking77"
CLIENTS = 32


# ---------------------------------------------------------------- the two versions


def first_version(chosen: str | None) -> Path:
    """The bundle to serve first: ``--bundle``, else runs/bench/banking77-onnx, else a small one trained here."""
    if chosen:
        return Path(chosen)
    if (DEFAULT_BUNDLE / "manifest.json").is_file():
        return DEFAULT_BUNDLE
    built = WORK / "built"
    if not (built / "onnx" / "manifest.json").is_file():
        import pandas as pd

        import slm.api
        from slm.training.config import TrainConfig

        built.mkdir(parents=True, exist_ok=True)
        pd.read_csv(DATA / "train.csv").groupby("category").head(12).to_csv(built / "train.csv", index=False)
        slm.api.train(built / "train.csv", output=built / "model", show_progress=False,
                      config=TrainConfig(epochs=1, batch_size=16, max_length=64, seed=7))  # fmt: skip
        slm.api.export(built / "model", built / "onnx")
    return built / "onnx"


def second_version(v1: Path, kind: str) -> tuple[Path, str]:
    """Version 2 of ``v1`` (int8 or an unchanged re-derivation), built once and kept in runs/bench/hot-swap."""
    from slm.bundle.derive import derive_bundle
    from slm.bundle.manifest import read_manifest

    digest = read_manifest(v1).manifest_digest
    out = WORK / f"{v1.name}-{kind}"
    if (out / "manifest.json").is_file():
        lineage = read_manifest(out).lineage or []
        if digest is not None and digest.value in {step.parent_digest for step in lineage}:  # via compress's steps
            return out, kind
    if kind == "int8":
        import slm.api
        from slm.errors import SlmError

        try:
            slm.api.compress(v1, out, quantize="int8", force=True)
            return out, kind
        except SlmError as exc:  # e.g. the accuracy gate refused every recipe: measure the swap all the same
            print(f"int8 version refused ({exc}); using an unchanged re-derived copy instead", flush=True)
            out, kind = WORK / f"{v1.name}-copy", "copy"
    derive_bundle(v1, out, lambda _, manifest: manifest, step="copy")
    return out, kind


# ---------------------------------------------------------------- the server and the clients


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(served: Path, interval: float, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    command = [sys.executable, "-m", "slm", "serve", f"{MODEL}={served}", "--port", str(port), "--watch",
               "--watch-interval", str(interval), "--no-access-log"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                return process, url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"error: the server did not start; see {log}")
        time.sleep(0.2)


class Clients:
    """``CLIENTS`` closed-loop clients in a thread of their own: (sent, latency, status, version) per request."""

    def __init__(self, url: str, texts: list[str], clients: int) -> None:
        self.url, self.texts, self.clients = url + f"/v1/models/{MODEL}/predict", texts, clients
        self.records: list[tuple[float, float, int, str | None]] = []
        self.errors: Counter[str] = Counter()
        self.latest: str | None = None  # the version of the last answer received
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.clients)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    async def _client(self, session, index: int) -> None:
        import aiohttp

        at = index
        while not self.stop.is_set():
            sent = time.monotonic()
            version, status = None, 0
            try:
                async with session.post(self.url, json={"text": self.texts[at % len(self.texts)]}) as response:
                    status = response.status
                    body = await response.json(content_type=None)
                    version = body.get("version") if status == 200 else None
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                self.errors[type(exc).__name__] += 1
            self.records.append((sent - self.started, time.monotonic() - sent, status, version))
            if version is not None:
                self.latest = version
            at += self.clients

    def now(self) -> float:
        return time.monotonic() - self.started

    def wait_for(self, version: str, timeout: float = 120) -> float:
        """Until an answer from ``version`` arrives; when it did (seconds since the clients started)."""
        deadline = time.monotonic() + timeout
        while self.latest != version:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: version {version} never answered within {timeout:.0f} s")
            time.sleep(0.01)
        return self.now()


# ---------------------------------------------------------------- one run


def swaps(clients: Clients, served: Path, candidate: Path, versions: tuple[str, str], args) -> list[dict]:
    """``args.cycles`` rounds of promote (version 2 in) and rollback (version 1 back), each held ``args.hold`` s."""
    import slm.api
    from slm.bundle.rollout import previous_of

    done = []
    for cycle in range(args.cycles):
        for kind in ("promote", "rollback"):
            source = (candidate if cycle == 0 else previous_of(served)) if kind == "promote" else None
            old, new = versions if kind == "promote" else versions[::-1]
            start = clients.now()
            result = slm.api.promote(source, served) if source is not None else slm.api.rollback(served)
            called = clients.now()
            assert result.version == new, (result.version, new)
            seen = clients.wait_for(new)
            time.sleep(args.hold)
            done.append({"kind": kind, "from": old, "to": new, "at_s": round(start, 3),
                         "call_ms": round((called - start) * 1000, 1), "swapped_at_s": round(called, 3),
                         "seen_at_s": round(seen, 3),
                         "source": str(result.source)})  # fmt: skip
    return done


def run(args: argparse.Namespace) -> dict:
    from slm.bundle.manifest import read_manifest
    from slm.bundle.rollout import version_of

    v1 = first_version(args.bundle)
    v2, kind = second_version(v1, args.second)
    versions = (version_of(read_manifest(v1)), version_of(read_manifest(v2)))
    assert versions[0] and versions[1] and versions[0] != versions[1]
    import pandas as pd

    texts = [str(t) for t in pd.read_csv(DATA / "test.csv")["text"]]
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK, prefix="run-") as tmp:
        served, candidate, log = Path(tmp) / "served", Path(tmp) / "candidate", Path(tmp) / "server.log"
        shutil.copytree(v1, served)
        shutil.copytree(v2, candidate)
        load_before = load_average()
        process, url = start_server(served, args.watch_interval, log)
        clients = Clients(url, texts, CLIENTS)
        try:
            clients.thread.start()
            clients.wait_for(versions[0])
            time.sleep(args.before)
            events = swaps(clients, served, candidate, versions, args)
            time.sleep(args.after)
        finally:
            clients.stop.set()
            clients.thread.join(timeout=60)
            process.terminate()
            process.wait(timeout=60)
        server_log = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return summarise(clients, events, server_log, versions, args) | {
        "bundle_v1": str(v1), "bundle_v2": str(v2), "v2_kind": kind, "load_average_before": load_before,
    }  # fmt: skip


def _latency(records: list[tuple[float, float, int, str | None]]) -> dict:
    ok = [lat for _, lat, status, _ in records if status == 200]
    pct = {q: round(float(np.percentile(ok, q)) * 1000, 1) if ok else None for q in (50, 99)}
    return {"requests": len(records), "p50_ms": pct[50], "p99_ms": pct[99],
            "max_ms": round(max(ok) * 1000, 1) if ok else None}  # fmt: skip


def summarise(clients: Clients, events: list[dict], server_log: list[dict], versions, args) -> dict:
    records = clients.records
    reloads = [e for e in server_log if e.get("event") == "model_reloaded"]
    for event, reload in zip(events, reloads, strict=False):
        event["server_load_s"] = reload.get("seconds")
    stale = 0
    for i, event in enumerate(events):  # sent after the new version first answered, before the next swap
        end = events[i + 1]["at_s"] if i + 1 < len(events) else float("inf")
        new_at = [sent + lat for sent, lat, s, v in records if v == event["to"] and sent + lat >= event["at_s"]]
        event["first_new_answer_after_s"] = round(min(new_at) - event["swapped_at_s"], 3)
        stale += sum(
            1 for sent, _, s, v in records if event["seen_at_s"] < sent < end and s == 200 and v != event["to"]
        )
        old_after = [sent + lat for sent, lat, s, v in records if v == event["from"] and event["at_s"] <= sent < end]
        event["last_old_answer_after_s"] = round(max(old_after) - event["swapped_at_s"], 3) if old_after else None
    first, last = events[0]["at_s"], events[-1]["seen_at_s"] + args.hold
    by_version = Counter(v for _, _, s, v in records if s == 200)
    return {
        "clients": CLIENTS,
        "watch_interval_s": args.watch_interval,
        "versions": {"v1": versions[0], "v2": versions[1]},
        "total_requests": len(records),
        "failed_requests": sum(1 for _, _, s, _ in records if s != 200),
        "status": {str(k): v for k, v in sorted(Counter(s for _, _, s, _ in records).items())},
        "client_exceptions": dict(clients.errors),
        "answers_per_version": dict(by_version),
        "answers_from_other_versions": sum(n for v, n in by_version.items() if v not in versions),
        "stale_answers_after_switch": stale,
        "server_reloads_ok": len(reloads),
        "server_reloads_failed": sum(1 for e in server_log if e.get("event") == "model_reload_failed"),
        "swaps": events,
        "latency": {
            "before": _latency([r for r in records if r[0] < first]),
            "during": _latency([r for r in records if first <= r[0] < last]),
            "after": _latency([r for r in records if r[0] >= last]),
            "within_2s_of_each_swap": _latency([r for r in records if any(0 <= r[0] - e["at_s"] < 2 for e in events)]),
        }
        | {
            f"answered_by_{name}": _latency([r for r in records if r[3] == version])
            for name, version in zip(("v1", "v2"), versions, strict=True)
        },  # fmt: skip
        "duration_s": round(clients.now(), 1),
    }


def checks(r: dict) -> dict:
    reload_s = [e["first_new_answer_after_s"] for e in r["swaps"]]
    return {
        "zero_failed_requests": {"target": 0, "measured": r["failed_requests"], "met": r["failed_requests"] == 0},
        "only_the_two_versions": {"target": 0, "measured": r["answers_from_other_versions"],
                                  "met": r["answers_from_other_versions"] == 0 and len(r["answers_per_version"]) == 2},
        "no_stale_answer_after_switch": {"target": 0, "measured": r["stale_answers_after_switch"],
                                         "met": r["stale_answers_after_switch"] == 0},
        "every_swap_picked_up": {"target": f"{len(r['swaps'])} reloads, none failed",
                                 "measured": f"{r['server_reloads_ok']} ok, {r['server_reloads_failed']} failed; new "
                                 f"version answering {min(reload_s)}-{max(reload_s)} s after each swap",
                                 "met": r["server_reloads_ok"] == len(r["swaps"]) and not r["server_reloads_failed"]},
    }  # fmt: skip


def markdown(r: dict) -> str:
    env = r["environment"]
    lines = [
        "# Hot swap under load (issue 23, acceptance 4)",
        "",
        f"{r['started']} to {r['finished']}; {env['cpu']['model']}, {env['cpu']['logical_cpus']} logical CPUs; load "
        f"average before {r['load_average_before']}, at the end {env['load_average_end']}."
        + (" **Quick run: not for the record.**" if r["quick"] else ""),
        "",
        f"`python bench/hot_swap.py`: {r['clients']} closed-loop clients (aiohttp, one BANKING77 test text per "
        f"request) against `slm serve banking77=SERVED --watch --watch-interval {r['watch_interval_s']}` (its own "
        "process, on the same cores as the clients). Version 1: a copy of "
        f"`{r['bundle_v1']}` ({r['versions']['v1']}); version 2: {r['v2_kind']} of it ({r['versions']['v2']}), whose "
        "lineage names version 1 by digest. Swaps: `slm.api.promote` (version 2 in; later `promote(SERVED.previous, "
        "SERVED)`) and `slm.api.rollback` (version 1 back from SERVED.previous), alternating.",
        "",
        "| check | target | measured | met |",
        "|---|---|---|---|",
    ]
    for name, c in r["checks"].items():
        lines.append(f"| {name} | {c['target']} | {c['measured']} | {'yes' if c['met'] else 'NO'} |")
    per = ", ".join(f"{v}: {n:,}" for v, n in r["answers_per_version"].items())
    lines += ["", f"{r['total_requests']:,} requests in {r['duration_s']} s; failed {r['failed_requests']}; "
              f"answers per version: {per}; from any other version: {r['answers_from_other_versions']}; statuses "
              f"{r['status']}; client exceptions {r['client_exceptions'] or 'none'}.", "",
              "| swap | from → to | call ms | server load s | new version first answers after s | "
              "old version last answers after s |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for e in r["swaps"]:
        lines.append(f"| {e['kind']} | {e['from']} → {e['to']} | {e['call_ms']} | {e.get('server_load_s')} | "
                     f"{e['first_new_answer_after_s']} | {e['last_old_answer_after_s']} |")  # fmt: skip
    lines += ["", "Latency of answered requests (by when they were sent):", "",
              "| phase | requests | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for phase, s in r["latency"].items():
        lines.append(
            f"| {phase.replace('_', ' ')} | {s['requests']:,} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} |"
        )
    lines += [
        "",
        "Before and after the swaps version 1 answers; during them the two alternate, so compare the last rows (by "
        "the version that answered) too. The server loads and warms a new version on a worker thread while the old "
        "one keeps answering, on the same cores as the clients: no request waits for a swap, but the load competes "
        "for CPU (the row within 2 s of each swap). The promote/rollback call time is mostly verifying every "
        "file's sha256 before the rename.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", help="an exported BANKING77 bundle (default: runs/bench/banking77-onnx, else built)"
    )
    parser.add_argument("--second", choices=("int8", "copy"), default="int8", help="how version 2 is made")
    parser.add_argument("--cycles", type=int, default=3, help="promote + rollback rounds")
    parser.add_argument("--before", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=8.0, help="seconds on each version after it answers")
    parser.add_argument("--after", type=float, default=20.0)
    parser.add_argument("--watch-interval", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="1 cycle, 5 s phases (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cycles, args.before, args.hold, args.after = 1, 5.0, 3.0, 5.0
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = {"started": started, "quick": args.quick} | run(args)
    machine = machine_info(packages=("slm", "onnxruntime", "fastapi", "uvicorn", "aiohttp"))
    result |= {"finished": datetime.now(UTC).isoformat(timespec="seconds"),
               "environment": {"cpu": machine["cpu"], "load_average_end": machine["load_average"],
                               "versions": machine["versions"]}}  # fmt: skip
    result["checks"] = checks(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hot_swap.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "hot_swap.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(c["met"] for c in result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
