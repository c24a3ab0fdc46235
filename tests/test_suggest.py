"""``slm suggest`` (active learning): picks, duplicates, strategies, seeds, bad input and the CSV it writes.

All on the kept untrained bundle (tests/fixtures/tiny-bundle: real format, random 2-layer transformer, so
each call takes well under a second) and real BANKING77 texts. What a trained model gains from the picks
is measured in bench/active_learning.py, not here. The random transformer embeds every text much alike
(median cosine 0.91 between BANKING77 texts; 96% have a neighbour at 0.95 or more), so tests not about
near-duplicates set the threshold to 0.99 or 1.0, and the near-duplicate test sets its own from the data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slm.api.suggesting import SUGGEST_COLUMNS, suggest
from slm.data.stream import open_table
from slm.errors import BundleError, ConfigError, DataError
from slm.runtime.bundle import load
from slm.training.suggest import SuggestConfig, _Scorer, normalise, select
from tests.conftest import banking_frame
from tests.test_cli import assert_one_line_error, slm


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """100 real BANKING77 test texts (10 intents), as an unlabelled file."""
    path = tmp_path_factory.mktemp("suggest") / "pool.csv"
    banking_frame("test", per_class=10)[["text"]].to_csv(path, index=False)
    return path


def _picks(bundle: Path, pool: Path, **options) -> list[str]:
    return [s.text for s in suggest(bundle, pool, **options).suggestions]


def _embeddings(bundle: Path, texts: list[str]) -> np.ndarray:
    vectors = _Scorer(load(bundle, backend="torch"), 64).embed(texts)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_writes_n_picks_with_the_annotator_columns(untrained_bundle, pool, tmp_path):
    out = tmp_path / "to_label.csv"
    run = suggest(untrained_bundle, pool, n=12, output=out, near_duplicate=1.0)
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == SUGGEST_COLUMNS
    assert len(rows) == len(run.suggestions) == 12
    assert [int(r["rank"]) for r in rows] == list(range(1, 13))
    texts = pd.read_csv(pool)["text"].tolist()
    labels = load(untrained_bundle).labels
    for r in rows:
        assert r["text"] == texts[int(r["row"]) - 1]  # row points back into the unlabelled file
        assert r["label"] == ""
        assert r["predicted_label"] in labels
        assert 0.0 <= float(r["margin"]) <= float(r["score"]) <= 1.0
        assert r["cluster"] and "margin" in r["reason"] and "cluster" in r["reason"]  # auto says why
    margin_rows = suggest(untrained_bundle, pool, n=5, strategy="margin").suggestions
    assert all(s.cluster is None and "cluster" not in s.reason for s in margin_rows)
    assert [s.margin for s in margin_rows] == sorted(s.margin for s in margin_rows)  # most uncertain first


def test_exact_duplicates_are_never_picked(untrained_bundle, tmp_path):
    texts = banking_frame("test", per_class=3)["text"].tolist()  # 30 distinct texts
    variants = texts + [f"  {t.upper()} " for t in texts] + [t.replace(" ", "\t ") for t in texts]
    path = tmp_path / "dups.csv"
    rows = variants + ["", "   "]
    pd.DataFrame({"id": range(len(rows)), "text": rows}).to_csv(path, index=False)
    picked = _picks(untrained_bundle, path, n=30, strategy="margin", near_duplicate=1.0)
    assert len({normalise(t) for t in picked}) == 30
    with pytest.raises(DataError, match=r"31 asks for more texts than the 30 usable ones .*2 empty, 60 repeated"):
        suggest(untrained_bundle, path, n=31)


def test_near_duplicates_are_never_picked_together_or_beside_training_texts(untrained_bundle, tmp_path):
    base = banking_frame("test", per_class=4)["text"].tolist()  # 40 texts
    near = [t.rstrip("?.!") + " please?" for t in base]  # the same request, worded a little differently
    similarity = (_embeddings(untrained_bundle, base) * _embeddings(untrained_bundle, near)).sum(axis=1)
    threshold = float(np.quantile(similarity, 0.25))  # three in four pairs count as near-duplicates
    path = tmp_path / "near.csv"
    pd.DataFrame({"text": base + near}).to_csv(path, index=False)
    picked = _picks(untrained_bundle, path, n=20, strategy="margin", near_duplicate=threshold)
    vectors = _embeddings(untrained_bundle, picked)
    pairs = vectors @ vectors.T
    np.fill_diagonal(pairs, -1)
    assert pairs.max() < threshold
    twins = [(b, v) for b, v, s in zip(base, near, similarity, strict=True) if s >= threshold]
    assert not any(b in picked and v in picked for b, v in twins)
    # The same pool with the base texts as the bundle's training data: none of them, nor their twins, is picked.
    bundle = load(untrained_bundle, backend="torch")
    table = open_table(path)
    selection = select(bundle, table, SuggestConfig(n=10, strategy="margin", near_duplicate=threshold), labelled=base)
    chosen = {s.text for s in selection.suggestions}
    assert not chosen & set(base)
    assert not chosen & {v for _, v in twins}
    assert selection.in_training == 40 and selection.near_duplicates >= 1


def test_strategies_pick_differently_and_random_is_seeded(untrained_bundle, pool):
    def picks(strategy: str, seed: int = 0) -> list[str]:
        return _picks(untrained_bundle, pool, n=10, strategy=strategy, seed=seed, near_duplicate=0.99)

    first = {s: picks(s) for s in ("auto", "margin", "entropy", "random")}
    assert len({frozenset(p) for p in first.values()}) == 4, first
    assert picks("random") == first["random"]
    assert picks("random", seed=1) != first["random"]
    assert picks("auto") == first["auto"]  # k-means is seeded too


@pytest.mark.parametrize(
    ("options", "error", "phrase"),
    [
        ({"n": 0}, ConfigError, "-n must be at least 1"),
        ({"n": 3, "strategy": "best"}, ConfigError, "unknown strategy 'best'"),
        ({"n": 3, "output": "picks.xlsx"}, ConfigError, "cannot tell the output format"),
        ({"n": 3, "text_col": "utterance"}, DataError, "utterance"),
        ({"n": 101}, ConfigError, "more texts than the file's 100 rows"),
    ],
)
def test_bad_requests_are_refused_in_one_line(untrained_bundle, pool, tmp_path, options, error, phrase):
    if "output" in options:
        options = {**options, "output": tmp_path / options["output"]}
    with pytest.raises(error) as caught:
        suggest(untrained_bundle, pool, **options)
    assert phrase in str(caught.value) and "\n" not in str(caught.value)


def test_empty_file_and_bundle_without_pytorch_transformer(untrained_exported, pool, tmp_path):
    from slm.bundle.derive import derive_bundle, drop_components

    empty = tmp_path / "empty.csv"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        suggest(untrained_exported, empty, n=1)

    def onnx_only(staging: Path, manifest):
        drop_components(staging, manifest, keep={"onnx", "ngram"})
        return manifest

    derive_bundle(untrained_exported, tmp_path / "onnx-only", onnx_only, step="drop-torch")
    with pytest.raises(BundleError, match="no PyTorch transformer component .*ONNX export"):
        suggest(tmp_path / "onnx-only", pool, n=1)


def test_cli_refuses_in_one_line_before_loading_the_model(untrained_bundle, pool, tmp_path):
    out = tmp_path / "to_label.csv"
    out.write_text("kept\n")
    assert_one_line_error(slm("suggest", untrained_bundle, pool, "-n", "0", "-o", out), "-n must be at least 1")
    line = assert_one_line_error(slm("suggest", untrained_bundle, pool, "-n", "500", "-o", out), "100 rows")
    assert "500" in line
    assert out.read_text() == "kept\n"  # a refused run leaves the earlier output alone


@pytest.mark.slow  # its subprocess imports PyTorch and transformers: about 5 s on 2 idle cores, a minute under load
def test_cli_writes_the_picks(untrained_bundle, pool, tmp_path):
    out = tmp_path / "to_label.csv"
    done = slm("suggest", untrained_bundle, pool, "-n", "5", "-o", out, "--strategy", "random", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet: no progress bar, no notes
    assert pd.read_csv(out, keep_default_na=False)["label"].tolist() == [""] * 5
