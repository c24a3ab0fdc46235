"""``slm serve --engine ray``: the real command, two Ray Serve replicas, and its one-line refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest

from slm.runtime import load as load_runtime
from tests.servers import free_port
from tests.test_serve import TEXTS
from tests.test_serve_ops import _metric, _serve, _wait_ready

pytest.importorskip("ray.serve", reason="the Ray Serve tests need the ray extra (pip install 'slm[ray]')")


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_two_replicas_answer_like_the_runtime_and_stop_on_sigterm(exported) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["SLM_SERVE_REPLICA_CPUS"] = "0.5"  # an option from the environment, like the others
    process = subprocess.Popen([sys.executable, "-m", "slm", "serve", f"tiny={exported}", "--engine", "ray",
                                "--replicas", "2", "--port", str(port), "--no-access-log"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, timeout=180)
        reference = load_runtime(exported, threads=1)
        expected = reference.predict_proba(TEXTS)
        replicas: set[str] = set()
        sent = 0
        while len(replicas) < 2 and sent < 40:
            answer = httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": TEXTS, "probabilities": True})
            assert answer.status_code == 200, answer.text
            sent += 1
            replicas.add(answer.headers["x-slm-replica"])
            assert "," not in answer.headers["x-request-id"]  # one request id, not the proxy's and the app's
            predictions = answer.json()["predictions"]
            assert [p["label"] for p in predictions] == [reference.labels[i] for i in expected.argmax(axis=1)]
            got = np.array([[p["probabilities"][label] for label in reference.labels] for p in predictions])
            np.testing.assert_allclose(got, expected, atol=1e-5)
        assert len(replicas) == 2, f"{sent} requests all went to one replica"
        metrics = httpx.get(f"{url}/metrics").text  # one replica answers, for both
        assert _metric(metrics, "slm_replicas") == 2
        assert _metric(metrics, 'slm_predicted_texts_total{model="tiny"}') == sent * len(TEXTS)
        assert "slm_ready 1.0" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=1)
    own = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
    names = [event["event"] for event in own]  # this process's lines; the replicas' come prefixed by Ray
    assert names.index("listening") < names.index("shutting_down") < names.index("stopped")
    listening = own[names.index("listening")]
    assert listening["engine"] == "ray" and listening["replicas"] == 2 and listening["url"] == url
    assert listening["replica_cpus"] == 0.5 and listening["workers"] == 2


def test_autoscaling_bounds_deploy_the_same_app(exported, ray_cluster) -> None:
    with ray_cluster.running([("tiny", exported)], autoscale=(1, 3)) as (url, _):
        assert httpx.get(f"{url}/readyz").json()["models"] == ["tiny"]
        answer = httpx.post(f"{url}/v1/models/tiny/predict", json={"text": TEXTS[0]})
        assert answer.status_code == 200 and answer.headers["x-slm-replica"]
        assert _metric(httpx.get(f"{url}/metrics").text, "slm_replicas") == 1  # starts at the lower bound


MULTIPROCESS_SCRIPT = """
import os, sys
from slm.serving.metrics import ServiceMetrics
metrics = ServiceMetrics()
metrics.texts.labels("tiny").inc(int(sys.argv[1]))
metrics.ready.set(1)
metrics.model_info.labels("tiny", "single_label", "10", "onnx", "v1").set(1)
if sys.argv[1] == "2":  # a reload in this process only: v1 is still served by the other one
    metrics.model_info.remove("tiny", "single_label", "10", "onnx", "v1")
    metrics.model_info.labels("tiny", "single_label", "10", "onnx", "v2").set(1)
print(os.getpid())
print(metrics.exposition().decode())
"""


def test_metrics_of_several_processes_add_up(tmp_path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def process(texts: int) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRIPT, str(texts)], env=env, capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        pid, _, text = done.stdout.partition("\n")
        return int(pid), text

    first, _ = process(3)
    _, text = process(2)
    info = 'slm_model_info{backend="onnx",base_model="%s",labels="10",model="tiny",task="single_label"}'
    assert _metric(text, 'slm_predicted_texts_total{model="tiny"}') == 5 and _metric(text, "slm_replicas") == 2
    assert _metric(text, "slm_ready") == 1 and _metric(text, info % "v1") == 1 and _metric(text, info % "v2") == 1
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(first, str(tmp_path))  # what a replica does when it stops
    _, text = process(2)
    assert _metric(text, 'slm_predicted_texts_total{model="tiny"}') == 7  # counts stay; live gauges go
    assert _metric(text, "slm_replicas") == 2 and _metric(text, info % "v1") == 0


def test_bad_option_combinations_get_one_line(untrained_exported, tmp_path) -> None:
    cases = [
        (("--replicas", "2"), "--replicas is for --engine ray only"),
        (("--address", "auto", "--replica-cpus", "2"), "--address, --replica-cpus are for --engine ray only"),
        (("--engine", "ray", "--min-replicas", "1"), "give both or neither"),
        (("--engine", "ray", "--replicas", "2", "--min-replicas", "1", "--max-replicas", "3"), "not both"),
        (("--engine", "ray", "--min-replicas", "3", "--max-replicas", "2"), "cannot exceed --max-replicas"),
        (("--engine", "ray", "--replicas", "0"), "--replicas must be at least 1"),
        (("--engine", "ray", "--replica-cpus", "0"), "--replica-cpus must be positive"),
        (("--engine", "ray", "--max-batch", "0"), "--max-batch must be at least 1"),
        (("--engine", "ray", "--monitor", str(tmp_path / "monitor.yaml")), "--monitor is not served on Ray Serve"),
    ]
    for args, message in cases:
        done = _serve(str(untrained_exported), "--port", "0", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in _one_error_line(done), (args, done.stderr)
    absent = _serve(str(tmp_path / "absent"), "--engine", "ray")  # checked here, before Ray starts
    assert absent.returncode == 4 and "bundle not found" in _one_error_line(absent)


def test_without_ray_the_hint_names_the_extra(untrained_exported) -> None:
    code = "import sys; sys.modules['ray'] = None; from slm.cli import app; app(prog_name='slm')"
    done = subprocess.run([sys.executable, "-c", code, "serve", str(untrained_exported), "--engine", "ray"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "pip install 'slm[ray]'" in _one_error_line(done)


@pytest.mark.slow(reason="starts a local Ray cluster to read its CPUs")
def test_replicas_that_cannot_fit_this_machine_are_refused(untrained_exported) -> None:
    done = _serve(str(untrained_exported), "--engine", "ray", "--replicas", "64", "--port", "0")
    assert done.returncode == 2 and "lower --replicas or --replica-cpus" in _one_error_line(done)
