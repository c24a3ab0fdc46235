"""slm tune: Optuna search under a wall-clock budget, on a real slice, with the real model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from slm.data.dataset import TextDataset
from slm.errors import ConfigError
from slm.training.config import TrainConfig
from slm.training.tune import auto_train_examples, parse_budget, sample_indices
from tests.conftest import SLM_TRAIN_STARTUP, banking_frame
from tests.test_cli import assert_one_line_error, slm

BUDGET_S = 75.0


def test_parse_budget() -> None:
    assert parse_budget("20m") == 1200
    assert parse_budget("90s") == 90
    assert parse_budget("1.5h") == 5400
    assert parse_budget("3") == 180  # plain numbers are minutes
    for bad in ("soon", "-5m", "0", "m", "nanm"):
        with pytest.raises(ConfigError):
            parse_budget(bad)


def test_trials_train_on_a_stratified_sample_sized_to_the_budget() -> None:
    frame = banking_frame("train", per_class=30)
    ds = TextDataset(frame["text"].tolist(), frame["category"].tolist())
    kept = sample_indices(ds, 100, seed=0)
    assert len(kept) == 100 and len(set(kept.tolist())) == 100
    assert set(ds.subset(kept.tolist()).label_counts().values()) == {10}  # 30 per class -> 10 per class
    assert sample_indices(ds, 10_000, seed=0).tolist() == list(range(len(ds)))
    # a bigger budget allows more examples; longer texts and more default epochs fewer
    default = TrainConfig()
    assert auto_train_examples(4800, default, 14) > auto_train_examples(2400, default, 14) > 1000
    assert auto_train_examples(4800, default, 40) < auto_train_examples(4800, default, 14)
    assert auto_train_examples(4800, TrainConfig(epochs=10), 14) < auto_train_examples(4800, default, 14)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "few.csv"
    banking_frame("train", per_class=12).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, small_csv):
    import slm as api

    out = tmp_path_factory.mktemp("tune") / "study"
    base = TrainConfig(max_length=48, seed=3, method="head", contrastive_epochs=3)
    started = time.monotonic()
    result = api.tune(
        small_csv,
        output=out,
        budget=BUDGET_S,
        val_size=0.2,
        config=base,
        methods=("head", "fewshot"),
        show_progress=False,
    )
    return result, out, time.monotonic() - started


def test_tune_records_default_first_and_best(tuned) -> None:
    result, out, seconds = tuned
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) >= 2, trials
    assert trials[0]["default"] is True and trials[0]["method"] == "head"
    assert all(not t["default"] for t in trials[1:])
    finished = [t for t in trials if t["state"] == "complete"]
    assert result.best_value == pytest.approx(max(t["val_macro_f1"] for t in finished), abs=1e-5)
    assert result.default_value == pytest.approx(trials[0]["val_macro_f1"], abs=1e-5)
    assert result.best_value >= result.default_value
    assert 0.3 < result.best_value <= 1.0  # ten intents: far above chance (0.1)
    # The budget holds: a trial is only started with time left, and runs with what is left as its limit.
    assert seconds < BUDGET_S + 60, seconds
    table = (out / "trials.md").read_text()
    assert table.count("\n") == len(trials) + 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["default_val_macro_f1"] == pytest.approx(result.default_value, abs=1e-5)
    assert (out / "study.db").stat().st_size > 0


def test_best_config_trains_with_explicit_flags_on_top(tuned, small_csv, tmp_path) -> None:
    result, out, _ = tuned
    saved = json.loads((out / "best_config.json").read_text())
    assert TrainConfig.from_dict(saved) == result.best_config
    assert saved["method"] in ("head", "fewshot")
    # Train from the saved configuration, overriding two settings on the command line.
    proc = slm(
        "train", small_csv, "-o", tmp_path / "b", "--config", out / "best_config.json",
        "--method", "head", "--max-length", "40", "--no-ensemble", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    config = manifest["training"]["config"]
    assert config["method"] == "head" and config["max_length"] == 40
    assert config["seed"] == saved["seed"] == 3  # from the file, not the flag default (42)
    assert manifest["training"]["method"] == "head"


def test_tune_continues_the_study(tuned, small_csv) -> None:
    import slm as api

    result, out, _ = tuned
    before = len(result.trials)
    again = api.tune(
        small_csv,
        output=out,
        budget=35.0,
        val_size=0.2,
        config=TrainConfig(max_length=48, seed=3, method="head", contrastive_epochs=3),
        methods=("head", "fewshot"),
        show_progress=False,
    )
    assert len(again.trials) > before
    assert sum(1 for t in again.trials if t["default"]) == 1  # the default is not re-run


@pytest.mark.slow(reason=SLM_TRAIN_STARTUP + "; `slm tune` too")
def test_tune_bad_input_is_one_line(small_csv, tmp_path) -> None:
    assert_one_line_error(slm("tune", small_csv, "-o", tmp_path / "t", "--budget", "soon"), "budget")
    assert_one_line_error(
        slm("tune", small_csv, "-o", tmp_path / "t", "--budget", "1m", "--methods", "full,magic"), "methods"
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": "three"}')
    assert_one_line_error(slm("train", small_csv, "-o", tmp_path / "b", "--config", bad), "configuration")
