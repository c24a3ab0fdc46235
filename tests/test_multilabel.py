"""Multi-label classification end to end on a real multi-intent set built from CLINC150."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import slm
from slm.training.config import TrainConfig
from tests.conftest import DATA, require
from tests.servers import running

INTENTS = [
    "transfer",
    "balance",
    "bill_due",
    "freeze_account",
    "report_fraud",
    "pin_change",
    "credit_limit",
    "interest_rate",
    "exchange_rate",
    "spending_history",
]


def _multi_intent_rows(pairs: list, n_pairs: int, rng: random.Random) -> list[dict]:
    """Real utterances alone (one label) and joined in twos (two labels), as users write them."""
    rows = [{"text": text, "labels": intent} for text, intent in pairs]
    for _ in range(n_pairs):
        (a, ia), (b, ib) = rng.sample(pairs, 2)
        if ia != ib:
            rows.append({"text": f"{a.rstrip('?. ')} and also {b}", "labels": f"{ia}|{ib}"})
    return rows


@pytest.fixture(scope="module")
def clinc_multilabel(tmp_path_factory) -> tuple[Path, Path]:
    data = json.loads(require(DATA / "clinc150" / "data_full.json").read_text())
    rng = random.Random(0)
    out = tmp_path_factory.mktemp("clinc")
    paths = []
    for split, per_intent, n_pairs in (("train", 30, 300), ("test", 15, 150)):
        pairs = [(t, i) for t, i in data[split] if i in INTENTS]
        by_intent = {i: [p for p in pairs if p[1] == i][:per_intent] for i in INTENTS}
        chosen = [p for rows in by_intent.values() for p in rows]
        frame = pd.DataFrame(_multi_intent_rows(chosen, n_pairs, rng)).sample(frac=1.0, random_state=0)
        path = out / f"{split}.jsonl"
        frame.to_json(path, orient="records", lines=True)
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def multilabel_bundle(clinc_multilabel, tmp_path_factory):
    train, test = clinc_multilabel
    return slm.train(
        train,
        output=tmp_path_factory.mktemp("ml") / "ml",
        test=test,
        label_sep="|",
        show_progress=False,
        config=TrainConfig(epochs=3, batch_size=16, max_length=64, seed=1),
    )


def test_multi_label_end_to_end_beats_baseline(multilabel_bundle) -> None:
    bundle = multilabel_bundle
    assert bundle.task == "multi_label"
    assert sorted(bundle.labels) == sorted(INTENTS)
    metrics = bundle.manifest.metrics["test"]
    assert metrics["ensemble"]["micro_f1"] > metrics["ngram_baseline"]["micro_f1"], metrics
    thresholds = bundle.thresholds()
    assert thresholds.shape == (len(INTENTS),) and np.all((thresholds > 0) & (thresholds < 1))
    pred = bundle.predict(["what is my balance and also when is my bill due"])[0]
    assert isinstance(pred["label"], list)
    assert {"balance", "bill_due"} <= set(pred["label"])


def test_multi_label_onnx_export_matches_pytorch(multilabel_bundle, clinc_multilabel, tmp_path: Path) -> None:
    from slm.compression.export import export_bundle

    texts = pd.read_json(clinc_multilabel[1], lines=True)["text"].tolist()
    manifest = export_bundle(multilabel_bundle.path, tmp_path / "onnx", texts=texts)
    spec = manifest.components.onnx
    assert spec.parity["max_abs_diff"] <= 1e-4 and spec.parity["texts"] == len(texts[:256])
    exported = slm.load(tmp_path / "onnx")
    assert exported.backend == "onnx" and exported.multi_label
    torch_proba = multilabel_bundle.predict_proba(texts, component="transformer")
    onnx_proba = exported.predict_proba(texts, component="transformer")
    np.testing.assert_allclose(onnx_proba, torch_proba, atol=1e-4)
    # Multi-label decisions use the same per-label thresholds in both.
    assert [p["label"] for p in exported.predict(texts[:20], component="transformer")] == [
        p["label"] for p in multilabel_bundle.predict(texts[:20], component="transformer")
    ]
    # Served over HTTP, the same label lists come back.
    with running([("multi", tmp_path / "onnx")]) as (url, _):
        answer = httpx.post(f"{url}/v1/models/multi/predict", json={"texts": texts[:20]}).json()
    served = [p["label"] for p in answer["predictions"]]
    assert served == [p["label"] for p in exported.predict(texts[:20])]  # the server serves the bundle's default
    assert all(isinstance(labels, list) for labels in served) and any(len(labels) == 2 for labels in served)
