"""``slm export BUNDLE --target web``: the static folder, its refusals, and the page in a real headless Chromium.

The fast tests use the kept untrained bundle: refusals in one line (no npm needed), and the folder's content and
its JavaScript helpers run in node (these need node and npm; the first run fetches the pinned packages into
slm's cache, later runs reuse them). The slow tests serve exported folders of a trained BANKING77 bundle, fp32
ONNX and the static tier, with a real static HTTP server and drive them in Debian's Chromium through Selenium:
the page must give slm.runtime's labels and probabilities (issue 25, acceptance 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from slm.bundle.textlimit import cut_text
from slm.errors import BundleError
from slm.runtime.onnx import length_chunks
from tests.test_cli import assert_one_line_error, slm

NPM = shutil.which("npm") and shutil.which("node")
needs_npm = pytest.mark.skipif(not NPM, reason="node and npm are not installed (apt-get install nodejs npm)")


def export_web(bundle: Path, out: Path, **options):
    """slm.api.export_web; skipped (not failed) where npm cannot reach its registry, except in CI (CI=true)."""
    from slm.api import export_web as export
    from slm.errors import ConfigError

    if not NPM:
        pytest.skip("node and npm are not installed (apt-get install nodejs npm)")
    try:
        return export(bundle, out, **options)
    except ConfigError as exc:
        if "npm could not fetch" not in str(exc) or os.environ.get("CI"):
            raise
        pytest.skip(f"the npm packages are not in slm's cache and npm cannot fetch them: {exc}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- refusals (no npm needed)


def test_pytorch_only_bundle_is_refused_naming_the_commands_to_run(untrained_bundle, tmp_path) -> None:
    proc = slm("export", untrained_bundle, "--target", "web", "-o", tmp_path / "web")
    line = assert_one_line_error(proc, "has no ONNX model", code=4)
    assert f"slm export {untrained_bundle}" in line and "--quantize int8" in line
    assert not (tmp_path / "web").exists()


def test_missing_npm_is_named_with_what_to_install(untrained_exported, tmp_path) -> None:
    # An empty cache, and a PATH where neither npm nor node can be found.
    proc = slm("export", untrained_exported, "--target", "web", "-o", tmp_path / "web",
               PATH=str(tmp_path / "empty-bin"), SLM_CACHE=str(tmp_path / "cache"))  # fmt: skip
    assert_one_line_error(proc, "apt-get install nodejs npm", code=2)
    assert not (tmp_path / "web").exists()


@needs_npm
def test_unreachable_registry_is_one_line_and_leaves_no_half_install(untrained_exported, tmp_path) -> None:
    # An empty slm cache and npm cache, and a registry address where nothing listens.
    proc = slm("export", untrained_exported, "--target", "web", "-o", tmp_path / "web",
               SLM_CACHE=str(tmp_path / "cache"), npm_config_cache=str(tmp_path / "npm-cache"),
               npm_config_registry="http://127.0.0.1:9/", npm_config_fetch_retries="0")  # fmt: skip
    # A progress line ("fetching ... with npm"), then the error in one line.
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[-1]
    assert line.startswith("error: npm could not fetch the web runtime (code ECONNREFUSED")
    assert "npm config get registry" in line
    assert not (tmp_path / "web").exists()
    assert not list((tmp_path / "cache" / "web-runtime").iterdir())  # the staging install was removed


def test_output_that_is_a_file_or_holds_foreign_files_is_refused(untrained_exported, tmp_path) -> None:
    file = tmp_path / "page.html"
    file.write_text("mine")
    assert_one_line_error(slm("export", untrained_exported, "--target", "web", "-o", file), "not a folder")
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert_one_line_error(slm("export", untrained_exported, "--target", "web", "-o", folder), "--force")
    assert (folder / "notes.txt").read_text() == "mine" and file.read_text() == "mine"


def test_ngram_only_bundle_is_refused(untrained_exported, tmp_path) -> None:
    from slm.bundle.derive import derive_bundle, drop_components
    from slm.compression.web import _plan

    def ngram_only(staging: Path, manifest: dict) -> dict:
        drop_components(staging, manifest, keep={"ngram"})
        return manifest

    bundle = tmp_path / "ngram-only"
    derive_bundle(untrained_exported, bundle, ngram_only, step="drop")
    with pytest.raises(BundleError, match="no transformer or static model"):
        _plan(bundle)


# ---------------------------------------------------------------- the folder (node and npm)


@pytest.fixture(scope="module")
def web_folder(untrained_exported, tmp_path_factory) -> Path:
    """The kept untrained bundle exported for the web (the npm packages come from slm's cache)."""
    out = tmp_path_factory.mktemp("web") / "tiny-web"
    written = export_web(untrained_exported, out)
    assert written.path == out and written.kind == "onnx"
    return out


@needs_npm
def test_folder_holds_the_page_the_model_and_the_vendored_runtime(web_folder, untrained_exported) -> None:
    manifest = json.loads((untrained_exported / "manifest.json").read_text())
    files = sorted(p.relative_to(web_folder).as_posix() for p in web_folder.rglob("*") if p.is_file())
    assert files == sorted([
        ".slm-output.json", "README.md", "index.html", "model.json", "model.onnx", "serve.py", "slm-classifier.mjs",
        "tokenizer.json", "vendor/NOTICE.md", "vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs",
        "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm", "vendor/onnxruntime-web/ort.wasm.min.mjs",
        "vendor/tokenizers/LICENSE", "vendor/tokenizers/tokenizers.min.mjs",
    ])  # fmt: skip
    # The bundle's own model and tokenizer, unchanged.
    assert sha256(web_folder / "model.onnx") == manifest["files"]["onnx/model.onnx"]
    assert sha256(web_folder / "tokenizer.json") == manifest["files"]["tokenizer/tokenizer.json"]
    config = json.loads((web_folder / "model.json").read_text())
    assert config["format"] == "slm-web" and config["kind"] == "onnx" and config["labels"] == manifest["labels"]
    assert config["onnx"]["max_length"] == manifest["components"]["onnx"]["max_length"]
    assert config["runtime"] == {"@huggingface/tokenizers": "0.2.0", "onnxruntime-web": "1.31.1"}
    check = config["check"]  # the page's module, run in node, against slm.runtime
    assert check["token_ids_equal"] and check["label_agreement"] == 1.0 and check["max_abs_diff"] <= 1e-3
    # The untrained fixture's ensemble: the n-gram side is not exported, and model.json says so.
    assert any("n-gram" in note for note in config["notes"])
    # Every file is recorded as slm's, so a second export replaces the folder without --force.
    record = json.loads((web_folder / ".slm-output.json").read_text())
    assert set(record["files"]) | {".slm-output.json"} == set(files)
    notice = (web_folder / "vendor" / "NOTICE.md").read_text()
    assert "onnxruntime-web 1.31.1: license MIT" in notice and "Apache-2.0" in notice
    assert not list(web_folder.rglob("node_modules")) and not list(web_folder.rglob("package*.json"))


@needs_npm
def test_page_javascript_cuts_and_batches_texts_as_slm_runtime(web_folder) -> None:
    """slm-classifier.mjs's text cut (code points, Python's whitespace) and length batching equal the Python ones."""
    texts = ["short", "a b " * 30_000, "😀" * 60_000, "x\x1c" * 40_000 + "tail", "\u3000word " * 20_000, "é" * 51_299]
    lengths = [[3, 3, 4, 9, 12, 40, 41, 41, 41, 200], [1] * 70, list(range(1, 100, 7))]
    script = """
        const m = await import(process.argv[1]);
        const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
        console.log(JSON.stringify({cuts: input.texts.map((t) => m.cutText(t, 51300)),
                                    chunks: input.lengths.map((l) => m.lengthChunks(l, 32))}));
    """
    done = subprocess.run(["node", "--input-type=commonjs", "-e", f"(async () => {{ {script} }})()",
                           (web_folder / "slm-classifier.mjs").as_uri()],
                          input=json.dumps({"texts": texts, "lengths": lengths}), capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    result = json.loads(done.stdout)
    assert result["cuts"] == [cut_text(t, 51300) for t in texts]
    assert [[list(c) for c in chunks] for chunks in result["chunks"]] == [
        [[s.start, s.stop] for s in length_chunks(lengths_, 32)] for lengths_ in lengths
    ]


NODE_CLASSIFY = """
const { readFile } = require("node:fs/promises");
const { fileURLToPath } = require("node:url");
(async () => {
  const folder = process.argv[1];
  const { load } = await import(new URL("slm-classifier.mjs", folder).href);
  const texts = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
  const classifier = await load(folder, { fetch: async (url) => new Response(await readFile(fileURLToPath(url))) });
  console.log(JSON.stringify(await classifier.classify(texts)));
})();
"""


def node_classify(folder: Path, texts: list[str]) -> list[dict]:
    """The folder's own ``classify(texts)``, run by node (the page's code, without a browser)."""
    done = subprocess.run(["node", "--input-type=commonjs", "-e", NODE_CLASSIFY, folder.as_uri() + "/"],
                          input=json.dumps(texts), capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(done.stdout)


@needs_npm
def test_multi_label_page_applies_the_bundles_thresholds_as_slm_runtime(untrained_exported, tmp_path) -> None:
    from dataclasses import replace

    from slm.bundle.derive import derive_bundle
    from slm.runtime import load
    from tests.conftest import banking_frame

    def multi_label(staging: Path, manifest):
        thresholds = [0.2 + 0.06 * i for i in range(len(manifest.labels))]
        return replace(manifest, task="multi_label", thresholds={"transformer": thresholds}, ensemble=None)

    bundle = tmp_path / "multi"
    derive_bundle(untrained_exported, bundle, multi_label, step="multi-label")
    folder = export_web(bundle, tmp_path / "web").path
    config = json.loads((folder / "model.json").read_text())
    assert config["task"] == "multi_label" and len(config["thresholds"]) == len(config["labels"])
    texts = banking_frame("test", per_class=3)["text"].tolist()
    page, expected = node_classify(folder, texts), load(bundle).predict(texts)
    assert [r["label"] for r in page] == [e["label"] for e in expected]  # lists of labels at their thresholds
    assert len({len(e["label"]) for e in expected}) > 1  # the thresholds select different numbers of labels
    for got, want in zip(page, expected, strict=True):
        assert max(abs(got["probabilities"][k] - v) for k, v in want["probabilities"].items()) <= 1e-5


@needs_npm
def test_force_moves_a_folder_with_foreign_files_aside_and_writes_the_page(untrained_exported, tmp_path) -> None:
    out = export_web(untrained_exported, tmp_path / "web").path
    (out / "mine.txt").write_text("mine")  # now the folder holds a file slm did not write
    assert_one_line_error(slm("export", untrained_exported, "--target", "web", "-o", out), "--force")
    proc = slm("export", untrained_exported, "--target", "web", "-o", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert "web folder written" in proc.stdout and "labels agree on 100.0%" in proc.stdout
    assert json.loads((out / "model.json").read_text())["format"] == "slm-web" and not (out / "mine.txt").exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("web.replaced-")]
    assert len(aside) == 1 and (aside[0] / "mine.txt").read_text() == "mine"


# ---------------------------------------------------------------- in Chromium (acceptance 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def static_server(folder: Path, *, isolated: bool = False, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """A real static HTTP server for ``folder``: Python's http.server, or the folder's serve.py (COOP/COEP)."""
    port = _free_port()
    if isolated:
        command = [sys.executable, str(folder / "serve.py"), "--port", str(port), *extra]
    else:
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the static server for {folder} did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


CLASSIFY = """
const [texts, options, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const { load } = await import("./slm-classifier.mjs");
  const classifier = await load("./", options);
  const results = await classifier.classify(texts);
  const probabilities = (await classifier.probabilities(texts)).map((row) => Array.from(row));
  done({ results, probabilities, ids: classifier.tokenize(texts), threads: classifier.threads,
         isolated: crossOriginIsolated, labels: classifier.labels });
})().catch((error) => done({ error: String(error) }));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from tests.browser import headless_chromium

    with headless_chromium() as driver:
        driver.set_script_timeout(300)
        yield driver


@pytest.fixture(scope="module")
def banking_texts() -> list[str]:
    """200 BANKING77 test texts of the ten intents the tiny bundle knows."""
    from tests.conftest import banking_frame

    return banking_frame("test", per_class=20)["text"].tolist()


# Beside the 200 test texts: empty, characters the vocabulary only knows as [UNK], longer than any max_length
# (truncated), one enormous word, whitespace the tokenizer drops.
EDGE_TEXTS = ["", "\u2603\u2603 \U0001f600", "my card still has not arrived " * 200, "x" * 5000, " \u3000\t\n "]


def _classify_in_page(browser, url: str, texts: list[str], options: dict | None = None) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)

    def state(driver) -> str:
        return driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready")

    WebDriverWait(browser, 60).until(lambda d: state(d) != "false")
    assert state(browser) == "true", browser.find_element(By.ID, "error").text
    page = browser.execute_async_script(CLASSIFY, texts, options or {})
    assert "error" not in page, page
    return page


def _assert_page_matches_runtime(page: dict, bundle: Path, component: str, texts: list[str]) -> None:
    """Labels 100% equal, probabilities within 1e-3, token ids equal to the Python tokenizer's."""
    from slm.compression.web import _plan, reference_ids
    from slm.runtime import load

    model = load(bundle)
    expected = model.predict(texts, component=component)
    assert [r["label"] for r in page["results"]] == [e["label"] for e in expected]
    proba = model.predict_proba(texts, component=component)
    assert np.abs(np.asarray(page["probabilities"]) - proba).max() <= 1e-3
    assert page["ids"] == reference_ids(_plan(bundle), texts)
    for got, want in zip(page["results"], expected, strict=True):
        assert abs(got["score"] - want["score"]) <= 1e-3
        assert got["probabilities"].keys() == want["probabilities"].keys()


def test_onnx_page_in_chromium_gives_slm_runtime_predictions(browser, exported, banking_texts, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = export_web(exported, tmp_path / "web").path
    with static_server(folder) as url:  # a plain static host: no COOP/COEP, so one thread
        texts = banking_texts + EDGE_TEXTS
        page = _classify_in_page(browser, url, texts)
        assert page["threads"] == 1 and page["isolated"] is False
        _assert_page_matches_runtime(page, exported, "transformer", texts)

        # The demo page: type, classify, probability bars in order.
        text = "I still have not received my new card, it has been two weeks"
        browser.find_element(By.ID, "text").send_keys(text)
        browser.find_element(By.ID, "classify").click()
        WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 5)
        from slm.runtime import load

        assert browser.find_element(By.ID, "label").text == load(exported).predict([text])[0]["label"]
        widths = [b.find_element(By.CSS_SELECTOR, ".bar-fill").size["width"] for b in
                  browser.find_elements(By.CSS_SELECTOR, "#bars .bar")]  # fmt: skip
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        browser.save_screenshot(str(tmp_path / "web-page.png"))

    # Served with COOP/COEP by the folder's serve.py: cross-origin isolated, so onnxruntime-web can use threads
    # (by default half the logical cores, at most 4: 1 on a 2-core machine; here 2, asked for).
    with static_server(folder, isolated=True) as url:
        page = _classify_in_page(browser, url, banking_texts[:40], {"numThreads": 2})
        assert page["isolated"] is True and page["threads"] == 2
        _assert_page_matches_runtime(page, exported, "transformer", banking_texts[:40])
        assert browser.execute_script("return window.slmClassifier.threads") == min(
            4, -(-browser.execute_script("return navigator.hardwareConcurrency") // 2)
        )  # the demo page's own classifier: the default number


def test_static_tier_page_in_chromium_runs_without_onnx(browser, static_bundle, banking_texts, tmp_path) -> None:
    written = export_web(static_bundle, tmp_path / "web")
    assert written.kind == "static"
    assert not (written.path / "vendor" / "onnxruntime-web").exists() and not list(written.path.glob("*.onnx"))
    with static_server(written.path) as url:
        page = _classify_in_page(browser, url, banking_texts + EDGE_TEXTS)
        _assert_page_matches_runtime(page, static_bundle, "static", banking_texts + EDGE_TEXTS)


@needs_npm
def test_preview_server_sends_isolation_headers_and_gzip_on_request(web_folder) -> None:
    """serve.py: COOP/COEP (threads on) unless --no-isolation, and gzip only with --gzip; the bytes are the files'."""
    import httpx

    with static_server(web_folder, isolated=True) as url:
        response = httpx.get(url + "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert response.headers["cross-origin-embedder-policy"] == "require-corp"
        assert response.headers["content-type"] == "application/wasm" and "content-encoding" not in response.headers
    with static_server(web_folder, isolated=True, extra=("--no-isolation", "--gzip")) as url:
        response = httpx.get(url + "model.onnx", headers={"Accept-Encoding": "gzip"})
        assert "cross-origin-opener-policy" not in response.headers
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) < (web_folder / "model.onnx").stat().st_size
        assert response.content == (web_folder / "model.onnx").read_bytes()  # httpx decodes the gzip
