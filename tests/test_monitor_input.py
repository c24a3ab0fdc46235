"""Monitor input that must not take it down (issue 21, defect 8): deeply nested JSON on the HTTP ingest,
and lines of any length from a file or stdin (read in bounded pieces, rejected as ``text_too_long``)."""

from __future__ import annotations

import io
import json
import tracemalloc

import httpx

from slm.apps.monitor.config import load_config
from slm.apps.monitor.monitor import Monitor
from slm.apps.monitor.sources import FileSource, StdinSource
from tests.monitor_stream import START, UNTRAINED_LABELS, write_config, write_stream
from tests.servers import error_of, running

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON, deeper than Python's recursion limit
LONG_LINE_MB = 32


def _item(item_id: str, text: str) -> str:
    return json.dumps({"id": item_id, "timestamp": START, "text": text})


def _long_line() -> bytes:
    return (_item("huge", "Fed holds rates " * (LONG_LINE_MB * 1024 * 1024 // 16)) + "\n").encode()


def test_deeply_nested_json_is_one_rejection_not_a_failed_request(tmp_path, untrained_exported):
    stream = write_stream(tmp_path / "news.jsonl", windows=2, bad_lines=False)
    monitor = Monitor(
        load_config(write_config(tmp_path, untrained_exported, stream.path, "sqlite:///monitor.db", UNTRAINED_LABELS))
    )
    with running([], monitor=monitor) as (url, _):
        lines = [_item("a", "Fed holds rates steady"), DEEP, _item("b", "$TSLA falls after recall")]
        answer = httpx.post(f"{url}/v1/monitor/ingest", content="\n".join(lines).encode(),
                            headers={"Content-Type": "application/x-ndjson"}, timeout=120)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] == 2 and answer.json()["rejected"] == {"malformed_json": 1}
        whole = httpx.post(f"{url}/v1/monitor/ingest", content=DEEP.encode(), timeout=120)
        assert error_of(whole, 400)["code"] == "invalid_json"


def test_sources_read_an_overlong_line_in_bounded_pieces(tmp_path):
    good = [(_item(f"i{n}", "Fed holds rates") + "\n").encode() for n in range(2)]
    data = good[0] + _long_line() + good[1]
    path = tmp_path / "stream.jsonl"
    path.write_bytes(data)
    for source in (FileSource(path), StdinSource(io.BytesIO(data))):
        tracemalloc.start()
        try:
            lines = [line for batch in source.batches(16) for line in batch]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, f"{type(source).__name__} held {peak / 2**20:.1f} MiB"
        assert [end for _, end in lines] == [len(good[0]), len(data) - len(good[1]), len(data)]
        assert lines[0][0] == good[0] and lines[2][0] == good[1]
        assert data[len(good[0]) :].startswith(lines[1][0])  # the excerpt: the long line's first bytes
        from slm.apps.monitor.sources import EXCERPT_BYTES, Overlong

        assert isinstance(lines[1][0], Overlong) and len(lines[1][0]) == EXCERPT_BYTES
        assert lines[1][0].size == len(data) - len(good[0]) - len(good[1])


def test_the_monitor_rejects_an_overlong_line_and_reads_on(tmp_path, untrained_exported):
    stream = write_stream(tmp_path / "news.jsonl", windows=3, bad_lines=False)
    lines = stream.path.read_bytes().splitlines(keepends=True)
    stream.path.write_bytes(b"".join(lines[:5]) + _long_line() + b"".join(lines[5:]))
    config = load_config(
        write_config(tmp_path, untrained_exported, stream.path, "sqlite:///monitor.db", UNTRAINED_LABELS)
    )
    with Monitor(config) as monitor:
        tracemalloc.start()
        try:
            stats = monitor.run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert dict(stats.rejected) == {"text_too_long": 1} and stats.stored == stream.items
        assert peak < 16 * 1024 * 1024, f"the monitor held {peak / 2**20:.1f} MiB for a {LONG_LINE_MB} MiB line"
        assert monitor.run(monitor.source()).read == 0  # the committed offset is the end of the file
