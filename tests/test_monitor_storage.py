"""The monitor's storage on SQLite and on a real PostgreSQL server: idempotent ingest, offsets, windows,
alerts, and a SIGKILL mid-stream that a restart recovers from with nothing lost or duplicated.

PostgreSQL comes from SLM_TEST_POSTGRES_URL (``.ci/run`` starts one with ``.ci/postgres``); without a
reachable server those cases skip, saying so, unless SLM_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from slm.apps.monitor.config import load_config
from slm.apps.monitor.monitor import Monitor
from slm.apps.monitor.storage import MonitorStore, metadata
from tests.monitor_stream import BAD_LINES, write_config, write_stream

DEFAULT_POSTGRES = "postgresql+psycopg://slm:slm@127.0.0.1:5432/slm_test"


def _postgres_url() -> str:
    import sqlalchemy as sa

    url = os.environ.get("SLM_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except Exception as exc:  # no server, no driver, bad credentials: one reason either way
        reason = (f"no PostgreSQL server reachable at {sa.engine.make_url(url).render_as_string()} "
                  f"({type(exc).__name__}); start one with .ci/postgres and set SLM_TEST_POSTGRES_URL")  # fmt: skip
        if os.environ.get("SLM_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path) -> str:
    """An empty monitor database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitor.db'}"
    import sqlalchemy as sa

    url = _postgres_url()
    engine = sa.create_engine(url)
    metadata.drop_all(engine)  # each test starts from empty tables
    engine.dispose()
    return url


def _row(item_id: str, ts_ms: int, polarity: int) -> dict:
    return {"id": item_id, "ts_ms": ts_ms, "source": None, "text": f"text {item_id}", "sentiment": str(polarity),
            "sentiment_score": 0.9, "polarity": polarity, "topic": None, "topic_score": None,
            "ingested_at": 0.0}  # fmt: skip


def test_batches_are_idempotent_and_windows_count_per_series(storage_url):
    store = MonitorStore.open(storage_url)
    try:
        rows = [_row("a", 1_000, -1), _row("b", 2_000, 1), _row("c", 61_000, -1)]
        mentions = [{"item_id": "a", "entity": "AAPL", "ts_ms": 1_000, "polarity": -1},
                    {"item_id": "c", "entity": "AAPL", "ts_ms": 61_000, "polarity": -1}]  # fmt: skip
        rejects = [{"key": "f:10", "reason": "empty_text", "detail": "text is empty", "excerpt": "{}", "at": 0.0}]
        for _ in range(2):  # the same batch twice: stored once
            store.commit_batch(rows, mentions, rejects, source="f", offset=120)
        assert store.totals() == {"items": 3, "mentions": 2, "rejected": 1, "alerts": 0, "alerts_pending": 0}
        assert store.offset("f") == 120 and store.offset("other") == 0
        assert store.known_ids(["a", "z", "c"]) == {"a", "c"}
        counts = store.counts(60_000, 0, 1)
        assert counts[("entity", "AAPL")][0].negative == 1 and counts[("entity", "AAPL")][1].negative == 1
        assert (counts[("all", "*")][0].total, counts[("all", "*")][0].positive) == (2, 1)
        assert store.reject_counts() == {"empty_text": 1}
        alert = {"kind": "entity", "series": "AAPL", "window_start_ms": 60_000, "window_ms": 60_000, "negatives": 9,
                 "total": 9, "baseline": 1.0, "score": 8.0}  # fmt: skip
        first = store.record_scoring([alert], scored_through=1, key="scored")
        again = store.record_scoring([alert], scored_through=1, key="scored")
        assert len(first) == 1 and again == [] and store.get_state("scored") == 1
        store.mark_delivery(first[0], delivered=False, error="HTTP 500")
        assert store.pending_alerts()[0]["attempts"] == 1
        store.mark_delivery(first[0], delivered=True)
        assert store.pending_alerts() == [] and store.last_alert_windows(60_000) == {("entity", "AAPL"): 1}
    finally:
        store.close()


def test_monitor_results_are_the_same_on_either_database(storage_url, tmp_path, fin_bundle):
    stream = write_stream(tmp_path / "news.jsonl")
    config = load_config(write_config(tmp_path, fin_bundle, stream.path, storage_url))
    with Monitor(config) as monitor:
        stats = monitor.run()
        assert stats.stored == stream.items and sum(stats.rejected.values()) == len(BAD_LINES)
        alerts = monitor.store.list_alerts()
        assert ("entity", "TSLA") in {(a["kind"], a["series"]) for a in alerts}
        assert monitor.store.reject_counts() == {reason: 1 for reason in BAD_LINES}


def _count(url: str) -> tuple[int, int]:
    import sqlalchemy as sa

    from slm.apps.monitor.storage import items, offsets

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() or 0
            offset = conn.execute(sa.select(sa.func.max(offsets.c.offset))).scalar() or 0
        return int(n), int(offset)
    except sa.exc.DBAPIError:
        return 0, 0  # tables not created yet
    finally:
        engine.dispose()


def _snapshot(url: str) -> dict[str, list[tuple]]:
    store = MonitorStore.open(url)
    try:
        return store.snapshot()
    finally:
        store.close()


def test_a_monitor_killed_mid_stream_resumes_to_the_same_state_as_a_clean_run(storage_url, tmp_path, fin_bundle):
    stream = write_stream(tmp_path / "news.jsonl", windows=60, per_window=12)
    size = stream.path.stat().st_size
    command = [sys.executable, "-m", "slm", "app", "monitor", "run", "--json"]
    # The run that is killed: SIGKILL once some batches are committed and most of the file is not.
    crash = write_config(tmp_path, fin_bundle, stream.path, storage_url, batch_size=8)
    process = subprocess.Popen([*command, "-c", str(crash)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while True:
            stored, offset = _count(storage_url)
            if stored >= 40:
                break
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the monitor stored nothing in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    killed_at = _count(storage_url)
    assert process.returncode == -signal.SIGKILL and 0 < killed_at[1] < size, killed_at
    done = subprocess.run([*command, "-c", str(crash)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after_crash = _snapshot(storage_url)
    # The clean run, uninterrupted, into a fresh SQLite file.
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = tmp_path / "clean"
    clean.mkdir()
    done = subprocess.run([*command, "-c", str(write_config(clean, fin_bundle, stream.path, clean_url, batch_size=8))],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = _snapshot(clean_url)
    assert len(expected["monitor_items"]) == stream.items
    assert len(expected["monitor_rejects"]) == len(BAD_LINES)
    assert any(row[1] == "TSLA" for row in expected["monitor_alerts"])
    for table in expected:
        assert after_crash[table] == expected[table], table


def test_purge_deletes_old_items_their_mentions_and_rejected_lines_only(storage_url):
    store = MonitorStore.open(storage_url)
    now = time.time()
    day = 86400.0
    try:
        rows = [{**_row("old", 1_000, -1), "ingested_at": now - 40 * day},
                {**_row("new", 2_000, 1), "ingested_at": now - 10 * day}]  # fmt: skip
        mentions = [{"item_id": name, "entity": "AAPL", "ts_ms": ts, "polarity": 1}
                    for name, ts in (("old", 1_000), ("new", 2_000))]  # fmt: skip
        rejects = [{"key": f"f:{i}", "reason": "empty_text", "detail": None, "excerpt": "{}", "at": now - age * day}
                   for i, age in enumerate((40, 10))]  # fmt: skip
        store.commit_batch(rows, mentions, rejects)
        assert store.purge(30 * day, now=now) == 1
        assert store.known_ids(["old", "new"]) == {"new"}
        assert store.totals() == {"items": 1, "mentions": 1, "rejected": 1, "alerts": 0, "alerts_pending": 0}
        assert store.purge(30 * day, now=now) == 0  # nothing more is that old
    finally:
        store.close()
