"""The monitor over HTTP on a real Uvicorn server: ingest (JSON and JSON lines), summary, series, alerts,
charts, and the dashboard page in headless Chromium."""

from __future__ import annotations

import json

import httpx
import pytest

from slm.apps.monitor.config import load_config
from slm.apps.monitor.monitor import Monitor
from tests.browser import headless_chromium
from tests.monitor_stream import BAD_LINES, UNTRAINED_LABELS, write_config, write_stream
from tests.servers import error_of, running


@pytest.fixture(scope="module")
def served(tmp_path_factory, fin_bundle):
    folder = tmp_path_factory.mktemp("monitor-serve")
    stream = write_stream(folder / "news.jsonl")
    monitor = Monitor(load_config(write_config(folder, fin_bundle, stream.path, "sqlite:///monitor.db")))
    with running([], monitor=monitor) as (url, _):
        yield url, stream


def test_ingest_over_http_stores_counts_rejections_and_alerts(served):
    url, stream = served
    lines = stream.path.read_text(encoding="utf-8").splitlines()
    half = len(lines) // 2
    objects = [json.loads(line) for line in lines[:half] if _is_object(line)]
    first = httpx.post(f"{url}/v1/monitor/ingest", json={"items": objects}, timeout=120).json()
    assert first["stored"] == len({o["id"] for o in objects if isinstance(o, dict) and "id" in o} - {"bad-2", "bad-3",
                                   "bad-4", "bad-5"})  # fmt: skip
    rest = "\n".join(lines[half:]) + "\n"
    second = httpx.post(f"{url}/v1/monitor/ingest", content=rest.encode(),
                        headers={"Content-Type": "application/x-ndjson"}, timeout=120).json()  # fmt: skip
    assert first["stored"] + second["stored"] == stream.items
    assert {**first["rejected"], **second["rejected"]}.keys() <= set(BAD_LINES)
    again = httpx.post(f"{url}/v1/monitor/ingest", json=objects, timeout=120).json()
    assert again["stored"] == 0 and again["duplicates"] >= first["stored"]
    summary = httpx.get(f"{url}/v1/monitor/summary").json()
    assert summary["totals"]["items"] == stream.items
    tsla = next(row for row in summary["series"] if row["series"] == "TSLA")
    assert tsla["alerts"] == 1
    alerts = httpx.get(f"{url}/v1/monitor/alerts", params={"series": "TSLA"}).json()["alerts"]
    assert len(alerts) == 1 and alerts[0]["type"] == "negative_spike" and alerts[0]["negatives"] >= 5
    windows = httpx.get(f"{url}/v1/monitor/series/entity/TSLA").json()["windows"]
    surge = next(w for w in windows if w["window_start"] == alerts[0]["window_start"])
    assert surge["negative"] == alerts[0]["negatives"] and surge["total"] >= 26  # 25 injected + 1 background
    chart = httpx.get(f"{url}/v1/monitor/chart/entity/TSLA.png")
    assert chart.headers["content-type"] == "image/png" and chart.content.startswith(b"\x89PNG")


def _is_object(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


@pytest.fixture(scope="module")
def served_untrained(tmp_path_factory, untrained_exported):
    """A monitor on the kept untrained bundle: for what the ingest refuses, not what the model says."""
    folder = tmp_path_factory.mktemp("monitor-serve-untrained")
    stream = write_stream(folder / "news.jsonl", windows=2, bad_lines=False)
    config = write_config(folder, untrained_exported, stream.path, "sqlite:///monitor.db", UNTRAINED_LABELS)
    with running([], monitor=Monitor(load_config(config))) as (url, _):
        yield url


def test_bad_requests_get_clear_errors(served_untrained):
    url = served_untrained
    error_of(httpx.post(f"{url}/v1/monitor/ingest", content=b"{not json"), 400)
    error_of(httpx.get(f"{url}/v1/monitor/series/sector/x"), 422)
    bad = httpx.post(f"{url}/v1/monitor/ingest", content=b'{"id": 1}\nnot json\n',
                     headers={"Content-Type": "application/x-ndjson"}).json()  # fmt: skip
    assert bad["rejected"] == {"malformed_json": 1, "missing_timestamp": 1} and bad["stored"] == 0


def test_without_a_monitor_the_endpoints_say_so(untrained_exported):
    with running([("tiny", untrained_exported)]) as (url, _):
        assert error_of(httpx.get(f"{url}/v1/monitor/summary"), 404)["code"] == "no_monitor"


def test_the_dashboard_shows_series_alerts_and_the_chart(served):
    url, _ = served
    with headless_chromium() as driver:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(f"{url}/monitor")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alerts tbody tr.alert-row"))
        names = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#series tbody tr td:nth-child(2)")]
        assert "TSLA" in names
        alert_series = [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#alerts tbody td.alert")]
        assert "TSLA" in alert_series
        row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#series tbody tr") if "TSLA" in r.text)
        row.click()
        wait.until(lambda d: "TSLA" in d.find_element(By.ID, "chart-title").text)
        wait.until(
            lambda d: d.execute_script(
                "const i = document.getElementById('chart');"
                "return i.complete && i.naturalWidth > 0 && i.src.includes('TSLA');"
            )
        )
        assert driver.find_element(By.ID, "error").text == ""
        assert "items" in driver.find_element(By.ID, "totals").text
