"""Personal data sent through every path that keeps text, then every file the run wrote scanned for it.

A real ``slm serve`` process (a classifier, a support assistant and the monitor, feedback on, access log on,
its stdout and stderr kept in a file) gets the planted identifiers of tests/pii.py in predict texts, support
questions and conversation ids, monitor items (valid and rejected ones), feedback texts and notes, and a bad
body. Then ``slm train --redact`` trains on data holding them. Nothing planted may survive anywhere in the
run's folder: databases (with their WAL files), logs, the bundle, its report and checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from tests.conftest import TINY_CONFIG, banking_frame
from tests.monitor_stream import write_config
from tests.pii import PLANTED, leaks, sentences
from tests.servers import free_port
from tests.test_serve_ops import _wait_ready

pytestmark = pytest.mark.slow


def _exercise(url: str) -> None:
    """Every request path that may keep a text, each given the planted identifiers."""
    texts = sentences()
    predicted = httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": texts}, timeout=60)
    assert predicted.status_code == 200, predicted.text
    for text in texts:
        answer = httpx.post(f"{url}/v1/support/assistant/answer", timeout=60,
                            json={"question": text, "conversation_id": PLANTED["CN_MOBILE"]})  # fmt: skip
        assert answer.status_code == 200, answer.text
    items = [{"id": f"item-{i}", "timestamp": 1_735_689_600 + i, "text": text} for i, text in enumerate(texts)]
    lines = [json.dumps(item) for item in items] + [json.dumps({"id": "bad", "text": texts[0]})]  # no timestamp
    ingested = httpx.post(f"{url}/v1/monitor/ingest", content="\n".join(lines), timeout=60,
                          headers={"content-type": "application/x-ndjson"})  # fmt: skip
    assert ingested.status_code == 200 and ingested.json()["stored"] == len(texts), ingested.text
    request_id = predicted.json()["request_id"]
    feedback = [{"request_id": request_id, "index": 1, "label": "card_arrival", "note": texts[2]},
                {"text": texts[3], "label": "card_arrival", "user_id": PLANTED["EMAIL"]}]  # fmt: skip
    for body in feedback:
        sent = httpx.post(f"{url}/v1/models/tiny/feedback", json=body, timeout=60)
        assert sent.status_code == 201, sent.text
    bad = httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": texts[0]}, timeout=60)  # not a list
    assert bad.status_code == 422


def test_no_planted_identifier_survives_serving_or_training_with_redact(
    exported, assistant_bundle, fin_bundle, tmp_path
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stream.jsonl").write_text("")  # the config names an input; the items come over HTTP
    config = write_config(run, fin_bundle, run / "stream.jsonl", f"sqlite:///{run / 'monitor.db'}")
    port = free_port()
    with (run / "server.log").open("w") as logfile:
        server = subprocess.Popen(
            [sys.executable, "-m", "slm", "serve", f"tiny={exported}", f"assistant={assistant_bundle}",
             "--monitor", str(config), "--port", str(port)],
            cwd=run, stdout=logfile, stderr=subprocess.STDOUT, env={**os.environ, "SLM_SERVE_LOG_LEVEL": "debug"},
        )  # fmt: skip
        try:
            _wait_ready(f"http://127.0.0.1:{port}", server, timeout=120)
            _exercise(f"http://127.0.0.1:{port}")
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
    written = {p.name for p in run.iterdir()}
    assert {"slm-support.sqlite", "slm-feedback.sqlite", "monitor.db", "server.log"} <= written, written
    assert '"event": "request"' in (run / "server.log").read_text()  # the access log was on

    assert leaks([run]) == []


def test_no_planted_identifier_survives_training_with_redact(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = banking_frame("train", per_class=16)
    intents = sorted(data["category"].unique())[:5]
    data = data[data["category"].isin(intents)].rename(columns={"category": "label"})
    planted = pd.DataFrame({"text": sentences() * 4, "label": intents * 4})
    pd.concat([data, planted]).to_csv(run / "train.csv", index=False)
    trained = subprocess.run(
        [sys.executable, "-m", "slm", "train", "train.csv", "-o", "model", "--redact", "--val-size", "0.2",
         "--test-size", "0.3", "--epochs", "1", "--batch-size", str(TINY_CONFIG["batch_size"]), "--max-length",
         "48", "--quiet"],
        cwd=run, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert (run / "model" / "report").is_dir() and leaks([run / "train.csv"])  # the data did hold them
    (run / "train.csv").unlink()  # the user's file: everything else in the folder slm wrote
    assert leaks([run], trained.stdout, trained.stderr) == []
