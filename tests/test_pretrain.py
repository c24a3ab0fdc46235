"""``slm pretrain``: domain-adaptive pre-training writes a base model that ``slm train`` reads, and refuses bad input.

The real MiniLM base model and real finance tweets (../shared/data/fin_tweets_sentiment); runs are cut to a few
seconds by ``--max-minutes`` and a small corpus, which is enough to see the held-out loss fall and the weights move.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from slm.api.pretraining import RECORD, TEXT_CHARS, sample_corpus
from slm.cli import app
from slm.errors import ConfigError, DataError
from slm.training.pretrain_config import PretrainConfig
from tests.conftest import DATA, banking_frame, require

runner = CliRunner()
FIN = DATA / "fin_tweets_sentiment" / "sent_train.csv"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """600 real finance tweets, unlabelled (text column only)."""
    frame = pd.read_csv(require(FIN), dtype=str, keep_default_na=False).head(600)
    path = tmp_path_factory.mktemp("corpus") / "tweets.csv"
    frame[["text"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory) -> Path:
    """MiniLM after 25 s of masked-language modelling on the tweets, through the CLI."""
    out = tmp_path_factory.mktemp("pre") / "fin-base"
    result = runner.invoke(
        app, ["pretrain", str(corpus), "-o", str(out), "--base-model", "minilm-l6", "--max-minutes", "0.4", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "held-out loss" in result.output and f"--base-model {out}" in result.output
    return out


def _base_weights() -> dict:
    from slm.models.registry import resolve_base_model

    return load_file(str(resolve_base_model("minilm-l6").path / "model.safetensors"))


def test_mlm_writes_a_base_model_whose_held_out_loss_fell(pretrained: Path) -> None:
    record = json.loads((pretrained / RECORD).read_text())
    assert record["objective"] == "mlm" and record["base_model"] == "minilm-l6"
    assert record["head_initialised"] is True  # all-MiniLM-L6-v2 ships no MLM head
    assert record["steps"] > 0 and record["texts"] + record["held_out"] == 600
    assert record["held_out_loss_after"] < record["held_out_loss_before"] - 1.0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in pretrained.iterdir()}


def test_mlm_moves_the_encoder_and_keeps_the_word_embeddings(pretrained: Path) -> None:
    import numpy as np

    base, tuned = _base_weights(), load_file(str(pretrained / "model.safetensors"))
    layer = "encoder.layer.5.output.dense.weight"
    assert not np.allclose(base[layer], tuned[f"bert.{layer}"])
    table = "embeddings.word_embeddings.weight"
    np.testing.assert_array_equal(base[table], tuned[f"bert.{table}"])


def test_train_reads_the_pretrained_directory(pretrained: Path, tmp_path: Path) -> None:
    import slm
    from slm.training.config import TrainConfig

    data = tmp_path / "banking.csv"
    banking_frame(per_class=20).to_csv(data, index=False)
    config = TrainConfig(base_model=str(pretrained), epochs=1, ensemble=False, robustness=False)
    bundle = slm.train(data, output=tmp_path / "bundle", config=config, show_progress=False)
    assert bundle is not None
    manifest = bundle.manifest.to_json()
    assert manifest["base_model"]["name"] == str(pretrained)
    assert manifest["metrics"]["test"]["transformer"]["accuracy"] > 0.3  # 10 intents: chance is 0.1


@pytest.mark.slow
def test_simcse_writes_a_plain_encoder(corpus: Path, tmp_path: Path) -> None:
    from slm.api.pretraining import pretrain

    config = PretrainConfig(objective="simcse", max_minutes=0.15, epochs=1)
    result = pretrain(corpus, output=tmp_path / "simcse", base_model="minilm-l6", config=config, show_progress=False)
    assert result.steps > 0 and not result.head_initialised
    tuned = load_file(str(tmp_path / "simcse" / "model.safetensors"))
    assert "encoder.layer.0.attention.self.query.weight" in tuned  # no MLM head, no "bert." prefix
    assert json.loads((tmp_path / "simcse" / "config.json").read_text())["architectures"] == ["BertModel"]


# ---------------------------------------------------------------- the fast lane: input, no model


def test_corpus_sample_is_bounded_uniform_and_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.jsonl"
    pd.DataFrame({"text": [f"text {i}" for i in range(300)] + ["   "]}).to_csv(first, index=False)
    pd.DataFrame({"text": [f"json {i}" for i in range(300)]}).to_json(second, orient="records", lines=True)
    sample = sample_corpus([first, second], None, limit=100, seed=3)
    assert len(sample) == len(set(sample)) == 100
    assert sample == sample_corpus([first, second], None, limit=100, seed=3)
    assert any(t.startswith("text") for t in sample) and any(t.startswith("json") for t in sample)
    assert len(sample_corpus([first, second], None)) == 600  # the blank row is skipped


def test_corpus_texts_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    pd.DataFrame({"text": ["word " * 2000] * 30}).to_csv(path, index=False)
    assert max(len(t) for t in sample_corpus([path], None)) == TEXT_CHARS


@pytest.mark.parametrize(
    ("rows", "expected"),
    [(5, "pre-training needs at least 20"), (0, "has no data rows")],
)
def test_too_small_a_corpus_is_one_line_exit_2(tmp_path: Path, rows: int, expected: str) -> None:
    path = tmp_path / "small.csv"
    pd.DataFrame({"text": [f"tweet {i}" for i in range(rows)]}).to_csv(path, index=False)
    result = runner.invoke(app, ["pretrain", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_foreign_output_folder_is_refused_before_reading(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["pretrain", str(tmp_path / "missing.csv"), "-o", str(out)])
    assert result.exit_code == 2 and "notes.txt" in result.output
    assert (out / "notes.txt").read_text() == "keep me"


def test_missing_corpus_file_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pretrain", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing.csv" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("field", "value"),
    [("objective", "bert"), ("max_minutes", 0), ("mask_probability", 1.0), ("batch_size", 1), ("max_length", 4)],
)
def test_config_refuses_values_that_cannot_run(field: str, value: object) -> None:
    with pytest.raises(ConfigError):
        PretrainConfig(**{field: value})


def test_sample_refuses_an_empty_list() -> None:
    from slm.api.pretraining import pretrain

    with pytest.raises(DataError, match="no corpus"):
        pretrain([], output="unused")


def test_schedule_refitted_to_the_budget_reaches_zero_in_time() -> None:
    import torch

    from slm.training.pretrain import _fit_plan, _Plan, _schedule

    plan = _Plan(total=1000, head_only=100, warmup=54)
    config = PretrainConfig()
    _fit_plan(plan, done=10, elapsed=10.0, budget=100.0, config=config)  # 1 s a step: ~97 steps fit, not 1000
    assert 90 <= plan.total <= 100 and plan.head_only == 10  # the head-only phase keeps its share
    _fit_plan(plan, done=50, elapsed=60.0, budget=100.0, config=config)  # slower than the first steps promised
    assert 50 < plan.total < 90
    encoder, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [encoder], "lr": 1.0}, {"params": [head], "lr": 1.0}])
    scheduler = _schedule(optimizer, plan)
    rates = []
    for _ in range(plan.total):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates[0][0] == 0.0 and rates[plan.head_only][0] > 0  # the encoder waits for the head
    assert [group["lr"] for group in optimizer.param_groups] == [0.0, 0.0]  # both at zero once the plan ends
    _fit_plan(plan, done=60, elapsed=1.0, budget=100.0, config=config)  # faster now: never lengthened
    assert plan.total < 90
