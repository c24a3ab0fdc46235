"""Hostile clients against the real ``slm serve`` (issue 21, acceptance 4): every probe of the review, replayed.

    python bench/hostile_client.py      # ~1 minute on 2 cores, plus 5-10 minutes once to build its two bundles

Serves a small exported BANKING77 classifier (built once under ``runs/bench/hostile/``, like the test suite's
``exported``) with ``slm serve --max-connections 10`` (the review's setting) and the default limits, on
127.0.0.1 only; the recommender probes run against ``slm app recommend serve`` with a small MovieLens
recommender (built there too). Each probe is bounded in connections and seconds:

- slow_heads: 10 connections that trickle a request head and never finish it (slowloris);
- connection_limit: while they are open, a request past ``--max-connections`` (503, JSON body);
- slow_bodies: 9 connections (with the poller's, every slot) that send a head, then one body byte a second;
- huge_heads: 30 connections each trying to send an unfinished 16 MB header;
- disconnect_mid_body: 9 clients that hang up halfway through their body (the log must hold no 500);
- host_redirect: ``GET /v1/models/`` with ``Host: evil.example`` (no redirect may point there);
- invisible_texts: NUL-only, zero-width-only and BOM-only texts (422 ``empty_text``);
- recommend_serve_keys: ``slm app recommend serve --api-key-file`` (401 without the key);
- recommend_info: ``GET /v1/recommend`` there, with the key (no absolute path of the bundle);
- open_bind: ``slm serve --host 0.0.0.0`` without keys (refused before anything is bound).

All the while a poller asks ``/healthz`` every 0.1 s on a fresh connection. Per probe it records the status
codes, the latency of each connection's answer, the server's largest VmRSS and its VmHWM (``/proc``), and the
worst ``/healthz`` latency. Pass: no 5xx but the deliberate 503 of connection_limit, VmHWM under 400 MB,
``/healthz`` always 200 within 1 s. Writes ``bench/results/hostile_client.json`` and ``hostile_client.md``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DATA = REPO.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "results"
WORK = REPO / "runs" / "bench" / "hostile"
CLASSIFIER, RECOMMENDER = WORK / "tiny-onnx", WORK / "movies"
HOST = "127.0.0.1"
MAX_CONNECTIONS = 10
SLOTS = MAX_CONNECTIONS - 1  # the /healthz poller holds one connection; Uvicorn's rule counts the new one
RSS_LIMIT_MB, HEALTH_LIMIT_S = 400, 1.0
KEY = "hostile-bench-key-0123456789"
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked",
           "cash_withdrawal_charge", "declined_card_payment", "transfer_not_received_by_recipient",
           "change_pin", "request_refund"]  # fmt: skip


# ---------------------------------------------------------------- the bundles


def build_bundles() -> None:
    """The tests' tiny classifier (10 intents, 2 short epochs, exported) and recommender, once."""
    if not CLASSIFIER.exists():
        import pandas as pd

        import slm
        from slm.compression.export import export_bundle
        from slm.training.config import TrainConfig

        WORK.mkdir(parents=True, exist_ok=True)
        for split, per_class in (("train", 30), ("test", 12)):
            frame = pd.read_csv(DATA / f"{split}.csv")
            frame = frame[frame["category"].isin(INTENTS)].sample(frac=1.0, random_state=0)
            frame.groupby("category").head(per_class).to_csv(WORK / f"{split}.csv", index=False)
        config = TrainConfig(epochs=2, batch_size=16, max_length=48, seed=7)
        slm.train(WORK / "train.csv", output=WORK / "tiny", test=WORK / "test.csv", config=config, show_progress=False)
        export_bundle(WORK / "tiny", CLASSIFIER)
    if not RECOMMENDER.exists():
        from slm.apps.recommend import RecommendConfig, TowerTraining, movielens, train_recommender

        config = RecommendConfig(towers=TowerTraining(steps=12, batch_size=16, refresh_every=6), negatives=50,
                                 ranker_rounds=60)  # fmt: skip
        train_recommender(movielens(users=60), RECOMMENDER, config, show_progress=False)


# ---------------------------------------------------------------- the server and what watches it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """``slm serve`` (or another slm command that serves) in its own process, its log in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port, self.log = free_port(), log
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen([sys.executable, "-m", "slm", *args, "--host", HOST, "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)  # fmt: skip
        deadline = time.monotonic() + 120
        while get(self.port, "/readyz", timeout=1)[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the server did not start; see {log}")
            time.sleep(0.2)

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (the peak so far) of the server process, in MB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return {name: round(int(fields[name].split()[0]) / 1024, 1) for name in ("VmRSS", "VmHWM")}

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def get(port: int, path: str, *, timeout: float = 5, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes, float]:  # fmt: skip
    """One request on a fresh connection: status (0 when it failed), headers, body, seconds."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.perf_counter() - started
    except OSError:
        return 0, {}, b"", time.perf_counter() - started
    finally:
        connection.close()


class Watch:
    """Polls /healthz every 0.1 s and samples the server's memory every 0.05 s, in two threads."""

    def __init__(self, server: Server) -> None:
        self.server, self.stopping = server, threading.Event()
        self.health: list[tuple[float, int, float]] = []  # (time, status, seconds)
        self.memory: list[tuple[float, float]] = []  # (time, VmRSS MB)
        self.threads = [threading.Thread(target=self._poll, daemon=True),
                        threading.Thread(target=self._sample, daemon=True)]  # fmt: skip
        for thread in self.threads:
            thread.start()

    def _poll(self) -> None:
        while not self.stopping.is_set():
            status, _, _, seconds = get(self.server.port, "/healthz", timeout=5)
            self.health.append((time.monotonic(), status, seconds))
            self.stopping.wait(0.1)

    def _sample(self) -> None:
        while not self.stopping.is_set():
            self.memory.append((time.monotonic(), self.server.memory_mb()["VmRSS"]))
            self.stopping.wait(0.05)

    def between(self, start: float, end: float) -> dict:
        health = [(status, seconds) for t, status, seconds in self.health if start <= t <= end]
        rss = [mb for t, mb in self.memory if start <= t <= end]
        return {
            "healthz_polls": len(health),
            "healthz_not_200": sum(status != 200 for status, _ in health),
            "healthz_worst_ms": round(max((s for _, s in health), default=0) * 1000, 1),
            "rss_max_mb": max(rss, default=0.0),
        }

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)


# ---------------------------------------------------------------- raw-socket clients


def status_of(data: bytes) -> int:
    """The status code at the start of a raw answer; 0 for none (closed or reset without an answer)."""
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0


def read_answer(sock: socket.socket, deadline: float) -> bytes:
    """Whatever the server sends until it closes, or until ``deadline`` (monotonic)."""
    chunks = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def trickle(port: int, head: bytes, drip: bytes, every: float, limit_s: float) -> tuple[int, float]:
    """Send ``head``, then one byte of ``drip`` every ``every`` seconds until the server answers or closes."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(head)
        answer = b""
        for byte in drip:
            sock.settimeout(every)
            try:
                answer = sock.recv(65536)
                break  # an answer, or b"" for a close
            except TimeoutError:
                pass
            except OSError:
                break
            if time.monotonic() - started > limit_s:
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
        answer += read_answer(sock, time.monotonic() + 1) if answer else b""
        return status_of(answer), time.monotonic() - started


def huge_head(port: int, size: int, limit_s: float) -> tuple[int, float, int]:
    """Send an unfinished header of ``size`` bytes as fast as the server takes it: (status, seconds, bytes sent)."""
    started, sent = time.monotonic(), 0
    chunk = b"a" * 65536
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: bench\r\nX-Filler: ")
        answer = b""
        while sent < size and time.monotonic() - started < limit_s:
            try:
                sock.settimeout(2)
                sock.sendall(chunk)
                sent += len(chunk)
            except OSError:  # the server closed: read what it said, if it arrived
                break
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except (BlockingIOError, OSError):
                answer = b""
            sock.setblocking(True)
            if answer:
                break
        answer += read_answer(sock, time.monotonic() + 2)
        return status_of(answer), time.monotonic() - started, sent


def half_body_then_hang_up(port: int) -> None:
    body = json.dumps({"text": "my card has not arrived " * 40}).encode()
    head = (f"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)  # the app is reading the body when the client goes


# ---------------------------------------------------------------- the probes


def parallel(count: int, job: Callable[[int], object]) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(job, range(count)))


def summary(statuses: list[int], seconds: list[float]) -> dict:
    return {
        "connections": len(statuses),
        "statuses": dict(sorted(Counter(str(s) for s in statuses).items())),
        "latency_s": {"median": round(statistics.median(seconds), 3), "max": round(max(seconds), 3)},
    }


def slow_heads(port: int, limit_s: float) -> dict:
    """Ten slowloris heads; while they hold the connections, one request past the limit (``connection_limit``)."""
    head = b"GET /v1/models HTTP/1.1\r\nHost: bench\r\n"
    drip = b"X-Slow: " + b"s" * 200

    def during() -> dict:
        time.sleep(2)  # the ten heads are in
        status, headers, body, seconds = get(port, "/v1/models")
        return {"status": status, "content_type": headers.get("content-type"), "seconds": round(seconds, 3),
                "body": body.decode("utf-8", "replace")[:200]}  # fmt: skip

    with ThreadPoolExecutor(MAX_CONNECTIONS + 1) as pool:
        limited = pool.submit(during)
        results = list(pool.map(lambda _: trickle(port, head, drip, 0.5, limit_s), range(MAX_CONNECTIONS)))
        limit_answer = limited.result()
    return {**summary([s for s, _ in results], [t for _, t in results]), "connection_limit": limit_answer}


def baseline(port: int) -> dict:
    answers = [get(port, "/v1/models/tiny/predict", body=b'{"text": "my card has not arrived"}') for _ in range(20)]
    return summary([status for status, *_ in answers], [seconds for *_, seconds in answers])


def slow_bodies(port: int, limit_s: float) -> dict:
    head = (b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{\"text\": \"")  # fmt: skip
    results = parallel(SLOTS, lambda _: trickle(port, head, b"x" * 500, 1.0, limit_s))
    return summary([s for s, _ in results], [t for _, t in results])


def huge_heads(port: int) -> dict:
    results = parallel(30, lambda _: huge_head(port, 16 * 2**20, 20))
    out = summary([s for s, _, _ in results], [t for _, t, _ in results])
    out["bytes_sent_max"] = max(sent for _, _, sent in results)
    return out


def disconnects(port: int, server: Server) -> dict:
    before = len(server.events())
    parallel(SLOTS, lambda _: half_body_then_hang_up(port))
    time.sleep(1)
    events = server.events()[before:]
    requests = [e for e in events if e["event"] == "request" and e["path"] == "/v1/models/tiny/predict"]
    return {
        "connections": SLOTS,
        "statuses": dict(sorted(Counter(str(e["status"]) for e in requests).items())),
        "logged_errors": sum(e["level"] == "error" for e in events),
        "tracebacks": sum("exception" in e or "Traceback" in json.dumps(e) for e in events),
    }


def host_redirect(port: int) -> dict:
    status, headers, _, seconds = get(port, "/v1/models/", headers={"Host": "evil.example"})
    return {"statuses": {str(status): 1}, "location": headers.get("location"), "latency_s": round(seconds, 3)}


def invisible_texts(port: int) -> dict:
    codes, statuses, seconds = [], [], []
    for body in ({"text": "\u0000\u0000"}, {"text": "\u200b\u200c\u200d"}, {"texts": ["a real one", "\ufeff "]}):
        status, _, data, took = get(port, "/v1/models/tiny/predict", body=json.dumps(body).encode(),
                                    headers={"Content-Type": "application/json"})  # fmt: skip
        statuses.append(status)
        seconds.append(took)
        codes.append(json.loads(data)["error"]["code"] if status >= 400 else None)
    return {**summary(statuses, seconds), "codes": codes}


def recommend_serve_keys(port: int) -> dict:
    without = get(port, "/v1/recommend")
    with_key = get(port, "/v1/recommend", headers={"Authorization": f"Bearer {KEY}"})
    return {"statuses": dict(sorted(Counter(f"{who}: {status}" for who, status in
                                            (("without key", without[0]), ("with key", with_key[0]))).items())),
            "latency_s": round(max(without[3], with_key[3]), 3)}  # fmt: skip


def recommend_info(port: int) -> dict:
    status, _, data, seconds = get(port, "/v1/recommend", headers={"Authorization": f"Bearer {KEY}"})
    text = data.decode()
    return {"statuses": {str(status): 1}, "latency_s": round(seconds, 3),
            "leaks_path": str(RECOMMENDER.resolve()) in text or str(REPO) in text,
            "bundle_field": json.loads(text).get("bundle") if status == 200 else None}  # fmt: skip


def open_bind() -> dict:
    started = time.monotonic()
    command = [sys.executable, "-m", "slm", "serve", f"tiny={CLASSIFIER}", "--host", "0.0.0.0", "--port", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return {"exit_code": done.returncode, "message": errors[0] if errors else done.stderr[-300:],
            "latency_s": round(time.monotonic() - started, 3)}  # fmt: skip


# ---------------------------------------------------------------- the run


def run() -> dict:
    build_bundles()
    logs = Path(tempfile.mkdtemp(prefix="slm-hostile-"))
    server = Server(["serve", f"tiny={CLASSIFIER}", "--max-connections", str(MAX_CONNECTIONS)], logs / "serve.log")
    watch = Watch(server)
    probes: dict[str, dict] = {}

    def probe(name: str, job: Callable[[], dict], watched: Watch | None = None) -> dict:
        watched = watched or watch
        start = time.monotonic()
        result = job()
        end = time.monotonic()
        time.sleep(0.3)  # let the poller see the server after the probe too
        probes[name] = {**result, **watched.between(start, time.monotonic()), "seconds": round(end - start, 1),
                        "server": "recommend serve" if watched is not watch else "serve"}  # fmt: skip
        print(f"{name}: {json.dumps(probes[name])}", flush=True)
        return result

    try:
        idle = server.memory_mb()
        probe("baseline", lambda: baseline(server.port))
        limit = probe("slow_heads", lambda: slow_heads(server.port, 60)).pop("connection_limit")
        probes["slow_heads"].pop("connection_limit")
        watched = {k: v for k, v in probes["slow_heads"].items() if k.startswith(("healthz", "rss"))}
        probes["connection_limit"] = {"statuses": {str(limit["status"]): 1}, **limit, **watched}
        probe("slow_bodies", lambda: slow_bodies(server.port, 60))
        probe("huge_heads", lambda: huge_heads(server.port))
        probe("disconnect_mid_body", lambda: disconnects(server.port, server))
        probe("host_redirect", lambda: host_redirect(server.port))
        probe("invisible_texts", lambda: invisible_texts(server.port))
        probe("open_bind", open_bind)
        after = get(server.port, "/v1/models/tiny/predict", body=b'{"text": "my card has not arrived"}')[0]
        final = server.memory_mb()
    finally:
        watch.close()
        server.stop()
    (logs / "keys.txt").write_text(KEY + "\n")
    ranking = Server(["app", "recommend", "serve", str(RECOMMENDER), "--api-key-file", str(logs / "keys.txt")],
                     logs / "recommend-serve.log")  # fmt: skip
    ranking_watch = Watch(ranking)
    try:
        probe("recommend_serve_keys", lambda: recommend_serve_keys(ranking.port), ranking_watch)
        probe("recommend_info", lambda: recommend_info(ranking.port), ranking_watch)
        ranking_memory = ranking.memory_mb()
    finally:
        ranking_watch.close()
        ranking.stop()
    return {**verdict(probes, idle, final, after), "recommend_serve_memory_mb": ranking_memory}


def verdict(probes: dict[str, dict], idle: dict, final: dict, after: int) -> dict:
    """The acceptance checks over every probe."""
    five_xx = {name: codes for name, p in probes.items() if name != "connection_limit"
               for codes in [[c for c in p.get("statuses", {}) if c.split()[-1].startswith("5")]] if codes}  # fmt: skip
    health = [p for p in probes.values() if "healthz_polls" in p]
    checks = {
        "no_5xx_but_the_connection_limit": not five_xx,
        "no_path_in_recommend_info": not probes["recommend_info"]["leaks_path"],
        "connection_limit_is_json_503": probes["connection_limit"]["status"] == 503
        and probes["connection_limit"]["content_type"] == "application/json",
        "peak_rss_under_400_mb": final["VmHWM"] < RSS_LIMIT_MB,
        "healthz_always_200": all(p["healthz_not_200"] == 0 for p in health),
        "healthz_within_1_s": all(p["healthz_worst_ms"] <= HEALTH_LIMIT_S * 1000 for p in health),
        "serves_after_the_probes": after == 200,
    }
    return {"probes": probes, "idle_memory_mb": idle, "final_memory_mb": final, "five_xx": five_xx,
            "checks": checks, "passed": all(checks.values())}  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        "# Hostile clients against `slm serve`",
        "",
        f"`python bench/hostile_client.py`, {result['date']}, {result['cpus']} CPUs; `slm serve` with "
        f"`--max-connections {MAX_CONNECTIONS}` and the default limits (head 10 s / 16 KiB, body 30 s / 1 MiB), "
        "127.0.0.1 only. RSS in MB from `/proc/PID/status`; `/healthz` polled every 0.1 s on a fresh connection.",
        "",
        "| probe | server | answers (status: count) | latency median / max (s) | max RSS (MB) | "
        "/healthz worst (ms) | /healthz not 200 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in result["probes"].items():
        answers = ", ".join(f"{k}: {v}" for k, v in p.get("statuses", {}).items()) or f"exit {p.get('exit_code')}"
        latency = p.get("latency_s", p.get("seconds"))
        shown = f"{latency['median']} / {latency['max']}" if isinstance(latency, dict) else f"{latency}"
        lines.append(f"| {name} | {p.get('server', 'serve')} | {answers} | {shown} | {p.get('rss_max_mb', '-')} | "
                     f"{p.get('healthz_worst_ms', '-')} | {p.get('healthz_not_200', '-')} |")  # fmt: skip
    memory = result["final_memory_mb"]
    lines += [
        "",
        f"`slm serve`: idle RSS {result['idle_memory_mb']['VmRSS']} MB, peak (VmHWM) over the whole run "
        f"**{memory['VmHWM']} MB** (limit {RSS_LIMIT_MB}). The recommender probes ran against `slm app recommend "
        f"serve` (VmHWM {result['recommend_serve_memory_mb']['VmHWM']} MB: a MiniLM item encoder, the catalogue "
        "and LightGBM).",
        "",
        "Checks: " + ", ".join(f"{k} **{'yes' if v else 'NO'}**" for k, v in result["checks"].items()) + ".",
        "",
        f"connection_limit answer: `{result['probes']['connection_limit'].get('body', '')}`; "
        f"open_bind: `{result['probes']['open_bind']['message']}`; "
        f"disconnect_mid_body: {result['probes']['disconnect_mid_body']['logged_errors']} error lines, "
        f"{result['probes']['disconnect_mid_body']['tracebacks']} tracebacks in the server log.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    started = time.monotonic()
    result = run()
    sys.path.insert(0, str(REPO / "src"))
    from slm.fileio import write_text_atomic
    from slm.hardware import machine_info

    result.update(date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), cpus=machine_info()["cpu_count"],
                  seconds=round(time.monotonic() - started, 1))  # fmt: skip
    RESULTS.mkdir(exist_ok=True)

    write_text_atomic(RESULTS / "hostile_client.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(RESULTS / "hostile_client.md", markdown(result))
    print(markdown(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
