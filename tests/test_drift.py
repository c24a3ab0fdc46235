"""Drift signals: the manifest's reference, the statistics, the alert rule, and the monitor in a real server.

Fast lane: the kept tiny bundle (``untrained_exported``) makes the predictions, real BANKING77 and CLINC150
texts go in; nothing trains. The tiny model is untrained, so its own answers stand in for "in distribution"
(the warm-up reference, or a manifest reference built from them); what these tests check is the monitor,
not the model. The acceptance numbers on a trained BANKING77 model are bench/drift.py's.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from slm.bundle.derive import derive_bundle
from slm.bundle.drift_reference import confidence_profile, drift_reference, rate_below
from slm.bundle.manifest import read_manifest
from slm.bundle.schema import Malformed, check
from slm.errors import DataError
from slm.runtime import load as load_runtime
from slm.serving.config import DriftSettings
from slm.serving.drift import AlertRule, Reference, Window, assess, psi, psi_threshold
from slm.storage.webhook import MemoryOutbox, WebhookSender
from tests.conftest import DATA, banking_frame, require
from tests.servers import error_of, running

SMALL = DriftSettings(window=40, every=5, warmup=60)


# ---------------------------------------------------------------- real texts and the tiny model's answers
@pytest.fixture(scope="module")
def answered(untrained_exported) -> tuple[list[str], np.ndarray, list[str]]:
    """BANKING77 test texts of the ten intents, the tiny model's probabilities for them, and its labels."""
    texts = banking_frame("test", per_class=40)["text"].tolist()
    bundle = load_runtime(untrained_exported)
    return texts, bundle.predict_proba(texts), list(bundle.labels)


@pytest.fixture(scope="module")
def referenced(untrained_exported, answered, tmp_path_factory) -> Path:
    """The tiny bundle with a drift reference in its manifest, from its own answers on real texts (the
    untrained model's answers stand in for the training labels)."""
    texts, proba, labels = answered
    reference = drift_reference([labels[i] for i in proba.argmax(axis=1)], labels, proba)
    out = tmp_path_factory.mktemp("drift") / "tiny-ref"
    derive_bundle(untrained_exported, out, lambda _, m: replace(m, drift_reference=reference), step="drift-reference")
    return out


def _oos_texts(n: int) -> list[str]:
    data = json.loads(require(DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    return [text for key in ("oos_test", "oos_val") for text, _ in data[key]][:n]


# ---------------------------------------------------------------- the manifest record
def test_the_reference_is_a_typed_manifest_field_that_derived_bundles_keep(referenced, untrained_exported, tmp_path):
    manifest = read_manifest(referenced)
    reference = manifest.drift_reference
    assert reference is not None and reference.source == "training"
    assert set(reference.label_counts) == set(manifest.labels) and sum(reference.label_counts.values()) == 400
    profile = reference.confidence["transformer"]
    assert profile.texts == 400 and len(profile.quantiles) == 101
    assert profile.quantiles == sorted(profile.quantiles) and profile.quantiles[0] <= profile.mean <= 1
    # exact at its own threshold, read off the percentiles elsewhere (within a point of the truth)
    assert rate_below(profile, profile.low_threshold) == profile.low_rate
    top = np.sort(load_runtime(referenced).predict_proba(banking_frame("test", per_class=40)["text"].tolist()).max(1))
    assert abs(rate_below(profile, 0.6) - float((top < 0.6).mean())) <= 0.011
    # a derived bundle (export, compress, ...) copies the manifest: the reference goes with it
    derived = derive_bundle(referenced, tmp_path / "copy", lambda _, m: m, step="copy")
    assert derived.drift_reference == reference and read_manifest(tmp_path / "copy").drift_reference == reference
    # a bundle from before the drift monitor has none, and loads
    old = read_manifest(untrained_exported)
    assert old.drift_reference is None and "drift_reference" not in json.loads(
        (untrained_exported / "manifest.json").read_text()
    )


def test_a_malformed_reference_is_refused_in_one_line(referenced):
    data = json.loads((referenced / "manifest.json").read_text())
    data["drift_reference"]["label_counts"]["card_arrival"] = "many"
    with pytest.raises(Malformed, match=r"drift_reference\.label_counts\.card_arrival' must be an integer"):
        check(data)
    data = json.loads((referenced / "manifest.json").read_text())
    del data["drift_reference"]["confidence"]["transformer"]["quantiles"]
    with pytest.raises(Malformed, match="quantiles' is missing"):
        check(data)


def test_drift_reference_refuses_inputs_that_do_not_fit(answered):
    _, proba, labels = answered
    with pytest.raises(DataError, match="not among the model's labels"):
        drift_reference(["card_arrival", "no_such_intent"], labels, proba)
    with pytest.raises(DataError, match="do not match 9 labels"):
        drift_reference(["card_arrival"], labels[:9], proba)
    with pytest.raises(DataError, match="non-empty"):
        confidence_profile(np.zeros((0, 3)))


# ---------------------------------------------------------------- the statistics
def test_the_psi_threshold_holds_the_sampling_noise_of_77_labels_and_catches_a_shift():
    """BANKING77's real training label counts (77 intents, 35 to 187 texts each) as the reference."""
    counts = pd.read_csv(require(DATA / "banking77" / "train.csv"))["category"].value_counts().to_numpy(float)
    share = counts / counts.sum()
    limit = psi_threshold(77, 500, int(counts.sum()), DriftSettings().alpha)
    rng = np.random.default_rng(0)
    same = [psi(rng.multinomial(500, share).astype(float), counts) for _ in range(2000)]
    balanced = [psi(rng.multinomial(500, np.full(77, 1 / 77)).astype(float), counts) for _ in range(2000)]
    assert np.mean(same) > 0.1  # noise alone passes the usual "small shift" mark: why the threshold allows for it
    assert max(same) < limit and max(balanced) < limit  # the test split's balanced labels are no alert either
    # a third of the traffic moving onto three intents is
    shifted = 0.67 * share + 0.33 * np.isin(np.arange(77), [3, 40, 60]) / 3
    assert min(psi(rng.multinomial(500, shifted).astype(float), counts) for _ in range(200)) > limit


def _window(labels: list[int], confidences: np.ndarray, settings: DriftSettings, n_labels: int) -> Window:
    window = Window(len(labels), n_labels, settings.low_confidence)
    for label, confidence in zip(labels, confidences, strict=True):
        window.add(label, float(confidence))
    return window


def test_confidence_signals_on_the_models_real_answers(answered):
    _, proba, labels = answered
    settings = DriftSettings()
    top, predicted = proba.max(axis=1), proba.argmax(axis=1)
    order = np.random.default_rng(1).permutation(len(top))
    first, second = order[:200], order[200:]
    reference = Reference.from_sample(predicted[first].tolist(), top[first].tolist(), len(labels), 0.5)
    calm = assess(_window(predicted[second].tolist(), top[second], settings, len(labels)), reference, settings)
    assert not any(result["breached"] for result in calm.values()), calm
    unsure = np.argsort(top)[:150]  # the texts the model is least sure of
    worried = assess(_window(predicted[unsure].tolist(), top[unsure], settings, len(labels)), reference, settings)
    assert worried["low_confidence"]["breached"] and worried["mean_confidence"]["breached"]
    assert worried["low_confidence"]["value"] > calm["low_confidence"]["value"]


def test_the_alert_rule_fires_once_and_re_arms_after_a_quiet_window():
    rule = AlertRule(quiet=100)
    assert rule.update(False, 10) is False
    assert rule.update(True, 20) is True  # crosses: one alert
    assert [rule.update(True, t) for t in range(25, 200, 5)] == [False] * 35  # stays high: no more
    assert rule.update(False, 250) is False and not rule.armed  # 51 texts quiet: not yet
    assert rule.update(False, 300) is False and rule.armed  # a whole window quiet: re-armed
    assert rule.update(True, 305) is True


# ---------------------------------------------------------------- webhook delivery


def _wait(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_memory_outbox_is_sent_at_least_once_through_retries(webhook):
    url, hook = webhook
    outbox = MemoryOutbox(capacity=2)
    sender = WebhookSender(url, outbox, lambda alert: {"id": alert["id"]}, backoff_seconds=0.01, idle_seconds=0.05)
    for n in range(3):
        outbox.add({"id": n})
    assert outbox.dropped == 1  # bounded: the oldest went
    sender.start()
    _wait(lambda: len(hook.received) == 2, "the pending alerts were not delivered")
    sender.stop()
    assert [body["id"] for body in hook.received] == [1, 2] and len(outbox) == 0 and sender.sent == 2
    with pytest.raises(ValueError, match="no webhook"):
        WebhookSender("", outbox, dict)


# ---------------------------------------------------------------- the monitor in a real server
def _predict(url: str, model: str, texts: list[str]) -> dict:
    response = httpx.post(f"{url}/v1/models/{model}/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    return response.json()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_a_warm_up_reference_then_one_alert_on_a_shifted_stream_with_metrics_and_webhook(
    untrained_exported, answered, webhook
):
    texts, proba, labels = answered
    url_hook, hook = webhook
    predicted = np.asarray(labels)[proba.argmax(axis=1)]
    # a real shift for this model: only the texts it files under one intent (most traffic is card_arrival)
    shifted = [t for t, label in zip(texts, predicted, strict=True) if label == "exchange_rate"]
    settings = replace(SMALL, webhook=url_hook)
    with running([("tiny", untrained_exported)], drift=settings) as (url, _):
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["reference"] == {"source": "warm-up", "ready": False, "texts": 0, "needed": 60}
        for start in range(0, 120, 8):  # the warm-up, then a window of the same kind of traffic
            _predict(url, "tiny", texts[start * 3 : start * 3 + 8])
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["reference"]["source"] == "warm-up" and drift["reference"]["ready"]
        assert drift["window"]["texts"] == 40 and not any(drift["alerting"].values()) and drift["alerts"] == []
        assert drift["signals"]["psi"]["value"] is not None and drift["thresholds"]["psi"] == "auto"
        for _ in range(4):
            _predict(url, "tiny", shifted[:20])
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["alerting"]["psi"] and [a["signal"] for a in drift["alerts"]].count("psi") == 1
        alert = next(alert for alert in drift["alerts"] if alert["signal"] == "psi")
        assert alert["model"] == "tiny" and alert["value"] > alert["threshold"]
        assert not any(text in json.dumps(drift) for text in shifted)  # no request text, ever
        metrics = httpx.get(url + "/metrics").text
        assert _metric(metrics, 'slm_drift_alerts_total{model="tiny",signal="psi"}') == 1
        assert _metric(metrics, 'slm_drift_psi{model="tiny"}') > alert["threshold"]
        assert 'slm_drift_mean_confidence{model="tiny"}' in metrics
        _wait(lambda: len(hook.received) >= 1, "the alert did not reach the webhook")  # after two 500s
        _wait(lambda: len(hook.received) == len(drift["alerts"]), "not every alert reached the webhook")
        assert alert in hook.received
        # back to ordinary traffic for a whole window: re-armed, and still one alert
        for start in range(0, 64, 8):
            _predict(url, "tiny", texts[start * 5 : start * 5 + 8])
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert not drift["alerting"]["psi"] and len(drift["alerts"]) == len(hook.received)


def test_a_manifest_reference_is_ready_at_once_and_drift_answers_404s(referenced, answered):
    texts, _, _ = answered
    with running([("tiny", referenced)], drift=SMALL) as (url, _):
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["reference"]["source"] == "manifest" and drift["reference"]["component"] == "transformer"
        assert drift["reference"]["label_texts"] == 400
        for start in range(0, 48, 8):
            _predict(url, "tiny", texts[start * 7 : start * 7 + 8])
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["window"]["texts"] == 40 and drift["signals"]["psi"] is not None
        assert not any(drift["alerting"].values())
        assert error_of(httpx.get(url + "/v1/models/nope/drift"), 404)["code"] == "unknown_model"
    with running([("tiny", referenced)], drift=replace(SMALL, enabled=False)) as (url, service):
        assert error_of(httpx.get(url + "/v1/models/tiny/drift"), 404)["code"] == "drift_off"
        _predict(url, "tiny", texts[:4])
        assert "slm_drift_psi" not in httpx.get(url + "/metrics").text


def test_the_low_confidence_signal_fires_on_out_of_scope_queries(referenced, answered):
    """A stream the model is unsure of: CLINC150 out-of-scope queries it is less confident about than its
    reference texts (the least confident ones, so the untrained model's answers show a clear drop)."""
    texts, proba, _ = answered
    bundle = load_runtime(referenced)
    oos = _oos_texts(300)
    unsure = [oos[i] for i in np.argsort(bundle.predict_proba(oos).max(axis=1))[:60]]
    with running([("tiny", referenced)], drift=SMALL) as (url, _):
        for start in range(0, 60, 10):
            _predict(url, "tiny", unsure[start : start + 10])
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["alerting"]["low_confidence"] and drift["alerting"]["mean_confidence"], drift["signals"]
        assert drift["window"]["low_confidence_rate"] > drift["reference"]["low_confidence_rate"] + 0.1


def test_a_reload_starts_a_new_window(untrained_exported, answered, tmp_path):
    texts, _, _ = answered
    served = tmp_path / "served"
    shutil.copytree(untrained_exported, served)
    with running([("tiny", served)], drift=SMALL, watch=True, watch_interval=0.1) as (url, _):
        first = _predict(url, "tiny", texts[:30])["version"]
        before = httpx.get(url + "/v1/models/tiny/drift").json()
        assert before["version"] == first and before["reference"]["texts"] == 30
        derive_bundle(untrained_exported, served, lambda _, m: m, step="copy")  # a new version, same model
        _wait(lambda: _predict(url, "tiny", texts[30:32])["version"] != first, "the new version was not loaded")
        after = httpx.get(url + "/v1/models/tiny/drift").json()
        assert after["version"] != first and after["window"]["texts_seen"] <= 2
        assert after["reference"] == {"source": "warm-up", "ready": False, "texts": after["window"]["texts_seen"],
                                      "needed": 60}  # fmt: skip


# ---------------------------------------------------------------- training writes it; the command takes the options
def test_training_records_the_reference_and_export_keeps_it(tiny_bundle, exported, banking_csv):
    """Slow lane (trains through ``tiny_bundle``): the real run's reference is the training split's label counts
    and the validation confidence of the transformer and of the shipped component."""
    manifest = read_manifest(tiny_bundle)
    reference = manifest.drift_reference
    assert reference is not None and reference.source == "training"
    assert set(reference.label_counts) == set(manifest.labels)
    assert sum(reference.label_counts.values()) == manifest.data["n_train"]  # the train split, not the file
    assert {"transformer", manifest.default_component} == set(reference.confidence)
    assert reference.confidence["transformer"].texts == manifest.data["n_validation"]
    assert read_manifest(exported).drift_reference == reference  # slm export copies it


def test_a_bad_drift_option_is_one_line(untrained_exported):
    from tests.test_cli import assert_one_line_error, slm

    assert_one_line_error(slm("serve", f"tiny={untrained_exported}", "--port", "0", "--drift-window", "0"),
                          "--drift-window must be at least 1", code=None)  # fmt: skip


def test_feedback_errors_raise_one_alert_and_other_versions_feedback_is_not_counted(untrained_exported, answered):
    texts, _, _ = answered
    settings = replace(SMALL, min_feedback=10, feedback_window=20)
    with running([("tiny", untrained_exported)], drift=settings) as (url, service):
        version = _predict(url, "tiny", texts[:2])["version"]
        for _ in range(10):
            service.observers.corrected("tiny", "an-old-version", False)  # about a version no longer served
            service.observers.corrected("tiny", version, None)  # unsure: neither right nor wrong
        for correct in [True] * 6 + [False] * 10:  # as the feedback endpoint records them
            service.observers.corrected("tiny", version, correct)
        drift = httpx.get(url + "/v1/models/tiny/drift").json()
        assert drift["signals"]["feedback_error"]["records"] == 16 and drift["window"]["feedback_records"] == 16
        assert drift["signals"]["feedback_error"]["value"] == pytest.approx(10 / 16)
        assert [alert["signal"] for alert in drift["alerts"]] == ["feedback_error"]  # once, though it stayed high
        assert drift["alerts"][0]["window_texts"] == 10  # at the 10th record (6 right, 4 wrong: 0.4 > 0.3)
        metrics = httpx.get(url + "/metrics").text
        assert _metric(metrics, 'slm_feedback_error_rate{model="tiny"}') == pytest.approx(10 / 16)
        assert _metric(metrics, 'slm_drift_alerts_total{model="tiny",signal="feedback_error"}') == 1
