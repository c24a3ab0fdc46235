"""``slm predict``'s columnar output (issue 27): the rows written from the probability arrays are the rows the
per-row path (:func:`slm.data.stream.labelled`, a dict of every label's probability per row) writes.

Text formats must match byte for byte, Parquet table for table (values, types and pandas metadata). Fast: the
probabilities are made up, except one end-to-end run with the kept untrained bundle.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from slm.bundle.predictions import MICRO, decode_columns
from slm.data.prediction_columns import micro_texts
from slm.data.stream import WRITE_ROWS, labelled, writing

LABELS = ["card_arrival", "100% refund", 'say "hi"', "a,b", "=SUM(A1)", "日本語", "new\nline", "tab\there"]
NAMES = ("label", "score", "probabilities")
EDGE_TEXTS = ["", "plain", "comma, here", 'a "quote"', "line\nbreak", "carriage\rreturn", "=1+1", "-0.5",
              "@user", "\tindent", "emoji 😀 and 中文", "null", " ", "é"]  # fmt: skip


def _rows(n: int) -> list[dict]:
    return [{"text": EDGE_TEXTS[i % len(EDGE_TEXTS)], "id": i, "note": None if i % 3 else f"n{i}"} for i in range(n)]


def _proba(n: int, k: int, dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (n, k))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba[:, 0] = np.where(np.arange(n) % 5 == 0, 0.0, proba[:, 0])
    # Values whose rounding or text is special: ties at half a millionth, scientific notation, 0 and 1.
    special = [0.0078125, 5e-7, 1e-6, 1.5e-5, 9.9995e-5, 1e-4, 0.5, 1.0, 2.5e-6, 0.0099995, 0.01]
    for i, value in enumerate(special):
        proba[i % n, (i + 1) % k] = value
    return proba.astype(dtype)


def _write(path: Path | None, fmt: str | None, rows: list[dict], proba: np.ndarray, thresholds, columnar: bool,
           labels: list[str] = LABELS, names: tuple[str, str, str] = NAMES, raw: bool = False) -> None:  # fmt: skip
    columns = [*dict.fromkeys(k for row in rows for k in row), *names]
    with writing(fmt, path, columns, multi_label=thresholds is not None, raw_csv=raw) as write:
        if columnar:
            write.predictions(rows, proba, labels, thresholds, names)
        else:
            for part in labelled(rows, proba, labels, thresholds, names):
                write(part)


def _same(tmp_path: Path, fmt: str, rows, proba, thresholds, **kwargs) -> None:
    paths = [tmp_path / f"{kind}.{fmt}" for kind in ("rows", "columns")]
    for path, columnar in zip(paths, (False, True), strict=True):
        _write(path, fmt, rows, proba, thresholds, columnar, **kwargs)
    if fmt == "parquet":
        old, new = (pq.read_table(p) for p in paths)
        assert new.schema.equals(old.schema, check_metadata=True)
        assert new.to_pylist() == old.to_pylist()
        assert pq.ParquetFile(paths[1]).metadata.num_row_groups == pq.ParquetFile(paths[0]).metadata.num_row_groups
    else:
        assert paths[1].read_bytes() == paths[0].read_bytes()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_columns_write_the_rows_of_the_row_path(tmp_path, fmt, multi):
    n = 2 * WRITE_ROWS + 37  # three slices, the last one short
    thresholds = np.linspace(0.05, 0.6, len(LABELS)).astype(np.float32) if multi else None
    _same(tmp_path, fmt, _rows(n), _proba(n, len(LABELS)), thresholds)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_float64_probabilities_and_raw_csv(tmp_path, fmt):
    n = 300
    _same(tmp_path, fmt, _rows(n), _proba(n, len(LABELS), np.float64, seed=3), None, raw=fmt == "csv")


def test_json_lines_on_stdout(capsys):
    rows, proba = _rows(40), _proba(40, len(LABELS))
    outs = []
    for columnar in (False, True):
        _write(None, None, rows, proba, None, columnar)
        outs.append(capsys.readouterr().out)
    assert outs[1] == outs[0]
    first = json.loads(outs[1].splitlines()[0])
    assert list(first) == ["text", "id", "note", *NAMES] and list(first["probabilities"]) == LABELS


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_rows_the_columns_cannot_write_exactly_go_through_the_row_path(tmp_path, fmt):
    """NaN and negative probabilities, a label named twice, an input column named like a prediction column."""
    rows, proba = _rows(50), _proba(50, len(LABELS))
    proba[3, 2] = np.nan
    proba[7, 1] = -1e-9  # rounds to -0.0
    twice = [*LABELS[:-1], LABELS[0]]
    clash = [{**row, "predicted_label": "old"} for row in rows]
    renamed = ("predicted_label", "predicted_score", "predicted_probabilities")
    cases = {"odd": (rows, proba, {}), "twice": (rows, _proba(50, len(LABELS)), {"labels": twice}),
             "clash": (clash, _proba(50, len(LABELS)), {"names": renamed})}  # fmt: skip
    if fmt == "parquet":
        del cases["clash"]  # two columns of one name: Parquet refuses them on either path
    for name, (case_rows, case_proba, kwargs) in cases.items():
        (tmp_path / name).mkdir()
        _same(tmp_path / name, fmt, case_rows, case_proba, None, **kwargs)


def test_rounding_matches_python_round():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.random(20000), rng.random(2000) * 1e-4, np.arange(2001) / 2e6, [0.0, 1.0]])
    for dtype in (np.float32, np.float64):
        proba = values.astype(dtype).reshape(1, -1)
        decoded = decode_columns(proba, None)
        assert decoded is not None
        expected = [round(float(p), 6) for p in proba[0]]
        assert (decoded.micro[0] / MICRO).tolist() == expected
        assert micro_texts(decoded.micro[0]).tolist() == [repr(v) for v in expected]
    assert decode_columns(np.array([[0.5, np.nan]]), None) is None
    assert decode_columns(np.array([[0.5, -0.0000001]]), None) is None


def test_predict_file_writes_what_the_row_path_writes(untrained_exported, tmp_path):
    """End to end with a real bundle: CSV with edge texts in, every format out, same as the row path."""
    from slm.api.predicting import predict_file
    from slm.runtime import load

    model = load(untrained_exported)
    texts = [EDGE_TEXTS[i % len(EDGE_TEXTS)] + f" {i}" * (i % 4) for i in range(700)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    rows = [{"text": t, "id": i} for i, t in enumerate(texts)]
    proba = model.predict_proba(texts)
    thresholds = model.thresholds() if model.multi_label else None
    for fmt in ("csv", "jsonl", "parquet"):
        predict_file(model, source, tmp_path / f"out.{fmt}")
        _write(tmp_path / f"rows.{fmt}", fmt, rows, proba, thresholds, False, labels=model.labels)
        if fmt == "parquet":
            got, want = pq.read_table(tmp_path / "out.parquet"), pq.read_table(tmp_path / "rows.parquet")
            assert got.schema.equals(want.schema, check_metadata=True) and got.to_pylist() == want.to_pylist()
        else:
            assert (tmp_path / f"out.{fmt}").read_bytes() == (tmp_path / f"rows.{fmt}").read_bytes()
    assert io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8")).readline().startswith("text,id,label")


def test_small_batches_tokenize_one_by_one_to_the_same_ids(untrained_exported):
    """Under POOL_TEXTS texts are encoded one at a time (no thread pool): the ids are encode_batch's."""
    from slm.runtime import load
    from slm.runtime.onnx import POOL_TEXTS

    onnx = load(untrained_exported)._transformer
    texts = [EDGE_TEXTS[i % len(EDGE_TEXTS)] + " word" * (i % 300) for i in range(POOL_TEXTS + 5)]
    for batch in (texts[:1], texts[:32], texts):
        assert onnx.encode(batch) == [e.ids for e in onnx.tokenizer.encode_batch(batch)]


def test_background_writes_keep_order_and_surface_a_failed_write() -> None:
    import threading

    from slm.api.predicting import _BackgroundWrites

    written: list[int] = []
    with _BackgroundWrites() as behind:
        for n in range(5):
            behind.submit(written.append, n)
    assert written == [0, 1, 2, 3, 4]  # all done, in order, when the block ends

    def fail(_: int) -> None:
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"), _BackgroundWrites() as behind:
        behind.submit(fail, 0)
        behind.submit(written.append, 5)  # the failure surfaces here, before this write is queued
    assert written[-1] == 4

    started, release = threading.Event(), threading.Event()

    def slow(_: int) -> None:
        started.set()
        release.wait(5)
        written.append(6)

    with pytest.raises(KeyboardInterrupt), _BackgroundWrites() as behind:
        behind.submit(slow, 0)
        started.wait(5)
        threading.Timer(0.2, release.set).start()
        raise KeyboardInterrupt  # Ctrl-C while a write runs: the block still waits for it to end
    assert written[-1] == 6
