"""The sentiment monitor end to end on real tweets and a real model: parsing, detection, alerts, webhook, report."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from slm.apps.monitor.config import AlertConfig, load_config
from slm.apps.monitor.detect import spike
from slm.apps.monitor.items import Item, Rejection, parse_line, parse_timestamp
from slm.apps.monitor.monitor import Monitor
from slm.apps.monitor.sources import FileSource
from slm.apps.monitor.storage import Counts
from slm.errors import ConfigError
from tests.monitor_stream import BAD_LINES, START, UNTRAINED_LABELS, WINDOW, write_config, write_stream


@pytest.mark.parametrize(("reason", "line"), sorted(BAD_LINES.items()))
def test_each_kind_of_bad_line_is_rejected_with_its_reason(reason, line):
    parsed = parse_line(line)
    assert isinstance(parsed, Rejection) and parsed.reason == reason and parsed.detail


def test_timestamps_in_iso_and_epoch_forms_agree():
    assert parse_timestamp("2025-01-01T00:00:00Z") == parse_timestamp("2025-01-01 00:00:00") == START
    assert parse_timestamp(START) == parse_timestamp(START * 1000) == parse_timestamp(str(START)) == START
    assert parse_timestamp("2025-01-01T01:00:00+01:00") == START
    assert parse_timestamp(-5) is None and parse_timestamp(True) is None and parse_timestamp("soon") is None
    item = parse_line(json.dumps({"id": 7, "timestamp": "2025-01-01T00:00:00Z", "text": "Fed holds", "source": "x"}))
    assert item == Item("7", START, "Fed holds", "x")


def _counts(negatives: list[int]) -> dict[int, Counts]:
    return {w: Counts(total=n + 10, negative=n, positive=2) for w, n in enumerate(negatives)}


def test_a_surge_three_times_the_base_rate_alerts_and_steady_noise_does_not():
    config = AlertConfig()
    steady = [2, 3, 1, 2, 4, 2, 3, 2, 1, 3, 2, 2]
    assert spike(_counts(steady + [12]), len(steady), config, None) is not None  # 12 against a median of 2
    assert all(spike(_counts(steady), w, config, None) is None for w in range(len(steady)))
    assert spike(_counts(steady + [4]), len(steady), config, None) is None  # 2x of a small base: noise
    quiet = [0] * 12
    assert spike(_counts(quiet + [4]), 12, config, None) is None  # under min_volume
    assert spike(_counts(quiet + [6]), 12, config, None) is not None


def test_cooldown_and_history_keep_one_event_to_one_alert():
    config = AlertConfig(cooldown=3, min_history=6)
    series = _counts([2] * 10 + [12, 14, 2, 2, 2, 13])
    assert spike(series, 10, config, None) is not None
    assert spike(series, 11, config, last_alert=10) is None  # still inside the cooldown
    assert spike(series, 15, config, last_alert=10) is not None  # a new event after it
    assert spike(_counts([2, 2, 2, 12]), 3, config, None) is None  # too little history to judge


def test_ewma_baseline_also_detects_the_surge():
    config = AlertConfig(method="ewma")
    found = spike(_counts([2, 3, 1, 2, 4, 2, 3, 2, 1, 3, 12]), 10, config, None)
    assert found is not None and 1.5 < found.baseline < 3.5


def test_the_stream_alerts_on_the_injected_surge_once_counts_bad_lines_and_posts_the_webhook(
    tmp_path, fin_bundle, webhook
):
    url, hook = webhook
    stream = write_stream(tmp_path / "news.jsonl")
    config_path = write_config(tmp_path, fin_bundle, stream.path, "sqlite:///monitor.db",
                               alerts={"webhook": url, "backoff_seconds": 0.05})  # fmt: skip
    seen = []
    with Monitor(load_config(config_path), on_alert=seen.append) as monitor:
        stats = monitor.run()
        assert stats.stored == stream.items and stats.duplicates == 1
        assert dict(stats.rejected) == {reason: 1 for reason in BAD_LINES}
        alerts = monitor.store.list_alerts()
        tsla = [a for a in alerts if a["series"] == "TSLA"]
        assert [a["window_start_ms"] // (WINDOW * 1000) for a in tsla] == [stream.surge_window]
        assert tsla[0]["negatives"] >= 5 and tsla[0]["negatives"] > 3 * max(tsla[0]["baseline"], 1)
        assert seen == [{k: a[k] for k in seen[0]} for a in sorted(alerts, key=lambda a: a["id"])]
        again = monitor.run(monitor.source())  # the committed offset is the end of the file: nothing new
        assert again.read == 0
        rerun = monitor.run(FileSource(stream.path))  # the whole file again, from byte 0
        assert rerun.stored == 0 and rerun.duplicates == stream.items + 1
        assert monitor.store.totals()["items"] == stream.items
    # Delivered through two 500s (retries), once per alert, after the monitor closed at the latest.
    assert sorted(b["id"] for b in hook.received) == sorted(a["id"] for a in alerts)
    assert {b["series"] for b in hook.received} >= {"TSLA"}


def test_report_writes_the_table_and_one_png_per_series(tmp_path, fin_bundle):
    stream = write_stream(tmp_path / "news.jsonl", bad_lines=False)
    config_path = write_config(tmp_path, fin_bundle, stream.path, "sqlite:///monitor.db")
    slm = [sys.executable, "-m", "slm", "app", "monitor"]
    done = subprocess.run([*slm, "run", "-c", str(config_path), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == stream.items
    done = subprocess.run([*slm, "report", "-c", str(config_path), "-o", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "TSLA" in done.stdout
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    tsla = next(row for row in summary["series"] if row["series"] == "TSLA")
    assert tsla["alerts"] == 1 and tsla["items"] >= stream.windows + 25  # + tweets that name Tesla themselves
    png = (tmp_path / "report" / tsla["chart"]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "| entity | TSLA |" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": "soon"}, "window: cannot read duration 'soon'"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"storage": "monitor.db"}, "storage: 'monitor.db' is not a database URL"),
        ({"sentiment": {"bundle": "nowhere"}}, "nowhere"),
        ({"sentiment": {"bundle": "{bundle}", "negative": ["bearish"]}}, "sentiment.negative: bearish not among"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_one_line_and_exit_2_from_the_cli(tmp_path, untrained_exported, change, message):
    import yaml

    stream = write_stream(tmp_path / "news.jsonl", windows=2, bad_lines=False)
    path = write_config(tmp_path, untrained_exported, stream.path, "sqlite:///monitor.db", UNTRAINED_LABELS)
    data = yaml.safe_load(path.read_text())
    data.update(json.loads(json.dumps(change).replace("{bundle}", str(untrained_exported))))
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, "-m", "slm", "app", "monitor", "run", "-c", str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode in (2, 4), done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "monitor.db").exists()


def test_an_unreachable_database_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"storage: cannot open 'postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x"):
        from slm.apps.monitor.storage import MonitorStore

        MonitorStore.open("postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2")


def test_a_followed_file_is_read_as_it_grows_and_stdin_works_too(tmp_path, untrained_exported):
    stream = write_stream(tmp_path / "full.jsonl", windows=8, bad_lines=False)
    lines = stream.path.read_text(encoding="utf-8").splitlines(keepends=True)
    growing = tmp_path / "growing.jsonl"
    growing.write_text("".join(lines[:20]), encoding="utf-8")
    config = load_config(
        write_config(tmp_path, untrained_exported, growing, "sqlite:///monitor.db", UNTRAINED_LABELS, poll_seconds=0.05)
    )
    stop = threading.Event()
    with Monitor(config) as monitor:
        result = {}
        reader = threading.Thread(target=lambda: result.update(stats=monitor.run(monitor.source(follow=True),
                                                                                 stop=stop.is_set)))  # fmt: skip
        reader.start()
        with growing.open("a", encoding="utf-8") as handle:
            handle.write(lines[20][:15])  # half a line: not read until its newline arrives
            handle.flush()
            deadline = time.monotonic() + 60
            while monitor.store.totals()["items"] < 20:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            handle.write(lines[20][15:] + "".join(lines[21:]))
        deadline = time.monotonic() + 60
        while monitor.store.totals()["items"] < stream.items:
            assert time.monotonic() < deadline, monitor.store.totals()
            time.sleep(0.05)
        stop.set()
        reader.join(timeout=30)
        assert result["stats"].stored == stream.items and result["stats"].duplicates == 1
    stdin_db = f"sqlite:///{tmp_path / 'stdin.db'}"
    done = subprocess.run([sys.executable, "-m", "slm", "app", "monitor", "run", "-c", str(tmp_path / "monitor.yaml"),
                           "--input", "-", "--storage", stdin_db, "--json"], input="".join(lines), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == stream.items


def test_the_monitor_never_imports_pytorch(tmp_path, untrained_exported):
    stream = write_stream(tmp_path / "news.jsonl", windows=3, bad_lines=False)
    config_path = write_config(tmp_path, untrained_exported, stream.path, "sqlite:///monitor.db", UNTRAINED_LABELS)
    script = ("import sys; from slm.apps.monitor import Monitor, load_config\n"
              f"with Monitor(load_config({str(config_path)!r})) as m: stored = m.run().stored\n"
              "print(stored, sorted(k for k in ('torch', 'transformers') if k in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(stream.items), "[]"]


def test_a_topic_bundle_adds_topic_series(tmp_path, untrained_exported):
    stream = write_stream(tmp_path / "news.jsonl", windows=3, bad_lines=False)
    # The kept tiny BANKING77 bundle stands in for a topic model (any single-label bundle can be one), and for
    # the sentiment model: what is checked is the series, not what either model says.
    config = load_config(write_config(tmp_path, untrained_exported, stream.path, "sqlite:///monitor.db",
                                      UNTRAINED_LABELS, topic={"bundle": str(untrained_exported)}))  # fmt: skip
    with Monitor(config) as monitor:
        monitor.run()
        topics = dict(monitor.store.series_names("topic", limit=100))
        assert sum(topics.values()) == stream.items
        labels = set(monitor.classify.topic.labels)
        assert set(topics) <= labels
        first = min(
            w for w in monitor.store.counts(3_600_000, 0, 10**7, kinds=["topic"])[("topic", next(iter(topics)))]
        )
        assert first >= START // WINDOW
