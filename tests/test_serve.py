"""The HTTP service over loopback, with the kept untrained tiny bundle (``untrained_exported``, ONNX).

Every test checks the protocol (routes, validation, limits, keys, metrics), none what the model predicts,
so none needs a trained model: they run in the fast lane. Every server test runs twice: on Uvicorn in a
thread, and as two Ray Serve replicas (``--engine ray``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from slm.errors import ConfigError
from slm.runtime import load as load_runtime
from slm.serving import ServeConfig
from slm.serving.config import parse_model_specs, read_api_keys
from tests.servers import ENGINES, KEY, RayCluster, error_of, running

TEXTS = ["my card has not arrived yet", "how do I change my PIN?", "I was charged for a cash withdrawal",
         "the exchange rate looks wrong", "please refund my purchase"]  # fmt: skip


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> RayCluster | None:
    """None: one Uvicorn server; the session's Ray cluster: the same app as two Ray Serve replicas."""
    return request.getfixturevalue("ray_cluster") if request.param == "ray" else None


@pytest.fixture(scope="module")
def server(untrained_exported, engine) -> Iterator[str]:
    specs = [("tiny", untrained_exported)]
    with running(specs, ray=engine, max_texts=8, max_chars=300, max_body_bytes=4096) as (url, _):
        yield url


# ---------------------------------------------------------------- endpoints


def test_predict_matches_the_runtime(server, untrained_exported) -> None:
    reference = load_runtime(untrained_exported, threads=1)
    expected = reference.predict_proba(TEXTS)
    one = httpx.post(f"{server}/v1/models/tiny/predict", json={"text": TEXTS[0]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "tiny" and body["latency_ms"] > 0 and len(body["predictions"]) == 1
    digest = json.loads((untrained_exported / "manifest.json").read_text())["manifest_digest"]["value"]
    assert body["version"] == digest[:12] and body["request_id"] == one.headers["x-request-id"]
    prediction = body["predictions"][0]
    assert prediction["label"] == reference.labels[int(expected[0].argmax())]
    assert [item["label"] for item in prediction["top_k"]][0] == prediction["label"]
    assert len(prediction["top_k"]) == 5 and "probabilities" not in prediction and prediction["truncated"] is False
    scores = [item["score"] for item in prediction["top_k"]]
    assert scores == sorted(scores, reverse=True)

    many = httpx.post(f"{server}/v1/models/tiny/predict", json={"texts": TEXTS, "top_k": 2, "probabilities": True})
    assert many.status_code == 200, many.text
    predictions = many.json()["predictions"]
    assert [p["label"] for p in predictions] == [reference.labels[i] for i in expected.argmax(axis=1)]
    got = np.array([[p["probabilities"][label] for label in reference.labels] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(len(p["top_k"]) == 2 for p in predictions)


def test_models_health_ready_docs(server, untrained_exported) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["tiny"]
    listed = httpx.get(f"{server}/v1/models").json()["models"]
    manifest = json.loads((untrained_exported / "manifest.json").read_text())
    assert [m["name"] for m in listed] == ["tiny"]
    tiny = listed[0]
    assert tiny["labels"] == manifest["labels"] and tiny["task"] == "single_label" and tiny["backend"] == "onnx"
    assert "export" in tiny["lineage"] and str(untrained_exported) not in json.dumps(listed)  # no paths leak out
    assert httpx.get(f"{server}/v1/models/tiny").json()["name"] == "tiny"
    schema = httpx.get(f"{server}/openapi.json").json()
    predict = schema["paths"]["/v1/models/{name}/predict"]["post"]
    assert "text" in predict["requestBody"]["content"]["application/json"]["schema"]["properties"]
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn" not in docs.text  # the Swagger UI assets come from this server: docs work offline
    bundle = httpx.get(f"{server}/static-offline-docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


def test_metrics_count_requests_batches_and_models(server, engine) -> None:
    httpx.post(f"{server}/v1/models/tiny/predict", json={"texts": TEXTS})
    httpx.post(f"{server}/v1/models/nope/predict", json={"text": "x"})
    text = httpx.get(f"{server}/metrics").text
    assert 'slm_http_requests_total{method="POST",route="/v1/models/{name}/predict",status="200"}' in text
    assert 'slm_http_requests_total{method="POST",route="/v1/models/{name}/predict",status="404"}' in text
    assert 'slm_http_request_duration_seconds_bucket{le="0.1",route="/v1/models/{name}/predict"}' in text
    assert 'slm_batch_size_texts_count{model="tiny"}' in text
    assert 'slm_queue_depth_texts{model="tiny"} 0.0' in text
    assert (
        'slm_model_info{backend="onnx",base_model="tiny-random-bert",labels="10",model="tiny",task="single_label"} 1.0'
        in text
    )
    assert "slm_ready 1.0" in text and "process_resident_memory_bytes" in text
    texts = [line for line in text.splitlines() if line.startswith('slm_predicted_texts_total{model="tiny"}')]
    assert texts and float(texts[0].split()[-1]) >= len(TEXTS)
    if engine is not None:  # whichever replica answers, the numbers add up both
        assert f"slm_replicas {RayCluster.REPLICAS}.0" in text


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"text": "unterminated', 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"text": 5}', 422, "invalid_request"),
        (b'{"texts": "not a list"}', 422, "invalid_request"),
        (b'{"texts": ["ok", 7]}', 422, "invalid_request"),
        (b'{"text": "ok", "top_k": "3"}', 422, "invalid_request"),
        (b'{"text": "ok", "top_k": 0}', 422, "invalid_request"),
        (b'{"text": "ok", "colour": "red"}', 422, "invalid_request"),
        (b'{"text": "ok", "texts": ["ok"]}', 422, "invalid_request"),
        (b"{}", 422, "invalid_request"),
        (b'["a list"]', 422, "invalid_request"),
        (b'{"text": ""}', 422, "empty_text"),
        (b'{"texts": ["fine", "   "]}', 422, "empty_text"),
        (b'{"texts": []}', 422, "invalid_request"),
        (json.dumps({"texts": ["a"] * 9}).encode(), 422, "too_many_texts"),
    ],
)
def test_bad_bodies_get_a_json_4xx(server, body: bytes, status: int, code: str) -> None:
    response = httpx.post(
        f"{server}/v1/models/tiny/predict", content=body, headers={"content-type": "application/json"}
    )
    assert error_of(response, status)["code"] == code


def test_oversized_bodies_unknown_models_and_routes(server) -> None:
    big = json.dumps({"text": "x" * 5000}).encode()
    assert error_of(httpx.post(f"{server}/v1/models/tiny/predict", content=big), 413)["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies to the stream itself
        yield b'{"text": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    streamed = httpx.post(f"{server}/v1/models/tiny/predict", content=chunks())
    assert error_of(streamed, 413)["code"] == "body_too_large"
    unknown = error_of(httpx.post(f"{server}/v1/models/missing/predict", json={"text": "hi"}), 404)
    assert unknown["code"] == "unknown_model" and "tiny" in unknown["message"]
    assert error_of(httpx.get(f"{server}/v1/models/missing"), 404)["code"] == "unknown_model"
    assert error_of(httpx.get(f"{server}/etc/passwd"), 404)["code"] == "not_found"
    assert error_of(httpx.get(f"{server}/v1/models/tiny/predict"), 405)["code"] == "method_not_allowed"
    assert httpx.get(f"{server}/healthz").status_code == 200  # still up


def test_long_texts_are_cut_or_refused(untrained_exported, server, engine) -> None:
    long = "my card has not arrived " * 20  # 480 characters, over max_chars=300
    cut = httpx.post(f"{server}/v1/models/tiny/predict", json={"texts": ["short one", long]})
    assert [p["truncated"] for p in cut.json()["predictions"]] == [False, True]
    with running([("tiny", untrained_exported)], ray=engine, max_chars=300, long_texts="reject") as (url, _):
        refused = error_of(httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": ["short one", long]}), 422)
        assert refused["code"] == "text_too_long" and "texts.1" in refused["message"]


# ---------------------------------------------------------------- security


def test_api_keys_guard_everything_but_health(untrained_exported, engine, tmp_path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# keys\n{KEY}\nsecond-key-abcdefghijklmnop\n")
    with running([("tiny", untrained_exported)], ray=engine, api_keys=read_api_keys(key_file)) as (url, _):
        for path in ("/healthz", "/readyz"):
            assert httpx.get(url + path).status_code == 200
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/"), ("GET", "/docs"),
                             ("GET", "/openapi.json"), ("POST", "/v1/models/tiny/predict")]:  # fmt: skip
            denied = httpx.request(method, url + path, json={"text": "hi"})
            assert error_of(denied, 401)["code"] == "unauthorized" and "www-authenticate" in denied.headers
            wrong = httpx.request(method, url + path, json={"text": "hi"}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert httpx.get(url + "/", headers={}).headers["www-authenticate"].startswith("Basic")
        predict = f"{url}/v1/models/tiny/predict"
        assert httpx.post(predict, json={"text": "hi"}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert (
            httpx.post(predict, json={"text": "hi"}, headers={"X-API-Key": "second-key-abcdefghijklmnop"}).status_code
            == 200
        )
        assert httpx.get(url + "/", auth=("anyone", KEY)).status_code == 200  # a browser's Basic prompt


def test_without_keys_nothing_is_asked_and_cors_is_off(server, untrained_exported, engine) -> None:
    response = httpx.get(f"{server}/v1/models", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    with running([("tiny", untrained_exported)], ray=engine, cors_origins=("http://app.example",)) as (url, _):
        allowed = httpx.get(f"{url}/v1/models", headers={"Origin": "http://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.get(f"{url}/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_key_files_and_names_are_checked(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_api_keys(tmp_path / "absent")
    (tmp_path / "empty").write_text("# nothing\n\n")
    with pytest.raises(ConfigError, match="holds no key"):
        read_api_keys(tmp_path / "empty")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_api_keys(tmp_path / "short")
    assert parse_model_specs(["runs/a-int8", "b=runs/x"]) == [("a-int8", Path("runs/a-int8")), ("b", Path("runs/x"))]
    with pytest.raises(ConfigError, match="two bundles are named"):
        parse_model_specs(["x/m", "y/m"])
    with pytest.raises(ConfigError, match="must be at least 1"):
        ServeConfig(max_batch=0).validated()
    config = ServeConfig(api_keys=(KEY,))
    assert config.key_is_valid(KEY) and not config.key_is_valid(KEY[:-1]) and not config.key_is_valid(None)
