"""Shared fixtures: slices of the real datasets in ../shared/data, one small trained bundle, the kept untrained
one (tests/fixtures/tiny-bundle), and the marking of slow tests for the fast lane (`pytest -m "not slow"`)."""

from __future__ import annotations

import http.server
import json
import os
import threading

# numpy/SciPy's OpenBLAS threads spin while they wait. On 2 cores shared with other work, its two threads made
# the n-gram fits of test_ngram and test_ensemble 7 to 40 times slower (a 1 s fit took 40 s). One thread (unless
# set): before numpy is first imported (pandas, below), and inherited by the subprocesses the tests start.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Ten BANKING77 intents: enough classes to be a real problem, small enough to train in seconds.
BANKING_INTENTS = [
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "pin_blocked",
    "cash_withdrawal_charge",
    "declined_card_payment",
    "transfer_not_received_by_recipient",
    "change_pin",
    "request_refund",
]


# ---------------------------------------------------------------- the fast lane: `pytest -m "not slow"`
# `slow` (declared in pyproject.toml) marks every test that trains a model, directly, through a fixture, through
# the CLI or in a subprocess, and the few that take long for another reason named here. A test is marked at
# collection (pytest_collection_modifyitems below) when its fixture closure holds one of these fixtures, so
# every fixture built on top of one (``exported`` on ``tiny_bundle``...) is covered too. A test that trains
# inline, or starts a subprocess that does, carries ``@pytest.mark.slow`` itself. Keys are
# ``module::fixture``, ``module`` being the file that defines the fixture (``conftest`` here).
TRAINS = "trains a model"
# `slm train` checks for PyTorch (importing it, transformers and scikit-learn) before it reads its input, so each
# refusal costs a subprocess about 5 s of CPU. The fast lane keeps one refusal of each kind and marks the rest.
SLM_TRAIN_STARTUP = "starts `slm train`, which imports PyTorch before it reads its input (about 5 s a run)"
SLOW_FIXTURES = {
    "conftest::tiny_bundle": TRAINS,
    "conftest::fin_bundle": TRAINS,
    "conftest::assistant_bundle": TRAINS,
    "test_adapters::lora_bundle": TRAINS,
    "test_adapters::full_bundle": TRAINS,
    "test_fewshot::auto_run": TRAINS,
    "test_fewshot::head_bundle": TRAINS,
    "test_multilabel::multilabel_bundle": TRAINS,
    "test_multilingual::zh_bundle": TRAINS,
    "test_pretrain::pretrained": TRAINS,
    "test_recommend::bundle": TRAINS,
    "test_self_training::self_trained": TRAINS,
    "test_tune::tuned": TRAINS,
    # Not training, but as slow. Tests that ask for the cluster by name (request.getfixturevalue) mark their
    # "ray" parameter slow instead (tests/servers.py ENGINES).
    "conftest::ray_cluster": "starts a local Ray cluster (a minute with its Serve deployments)",
    "test_support_generation::generator": "loads the SmolLM2 language model (about 25 s)",
}


def _fixture_key(fixturedef) -> str:
    return f"{fixturedef.func.__module__.rpartition('.')[2]}::{fixturedef.argname}"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items) -> None:
    """Mark slow every test that depends, directly or through other fixtures, on one of SLOW_FIXTURES."""
    modules = {"conftest": sys.modules[__name__]}
    for item in items:
        module = getattr(item, "module", None)
        if module is not None:
            modules[module.__name__.rpartition(".")[2]] = module
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        used = {_fixture_key(d) for name in item.fixturenames for d in info.name2fixturedefs.get(name, ())}
        slow = sorted(used & SLOW_FIXTURES.keys())
        if slow and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow(reason=f"{SLOW_FIXTURES[slow[0]]} (fixture {slow[0]})"))
    # A renamed slow fixture must not silently let its tests into the fast lane.
    for key in sorted(SLOW_FIXTURES):
        module, _, name = key.partition("::")
        if module in modules and not hasattr(modules[module], name):
            raise pytest.UsageError(f"tests/conftest.py SLOW_FIXTURES names {key}, which does not exist")


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (expected the shared data folder beside the repo)")
    return path


def banking_frame(split: str = "train", per_class: int = 30, seed: int = 0) -> pd.DataFrame:
    """A class-balanced slice of BANKING77 restricted to BANKING_INTENTS."""
    frame = pd.read_csv(require(DATA / "banking77" / f"{split}.csv"))
    frame = frame[frame["category"].isin(BANKING_INTENTS)]
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("category").head(per_class).reset_index(drop=True)


@pytest.fixture(scope="session")
def banking_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "banking_slice.csv"
    banking_frame("train", per_class=30).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def banking_test_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "banking_test.csv"
    banking_frame("test", per_class=12).to_csv(path, index=False)
    return path


# The kept bundle: a real, current-format bundle whose transformer is untrained (random weights), written by
# tests/fixtures/make_tiny_bundle.py and committed. Tests of protocols, validation, limits and integrity use it
# (fixtures ``untrained_exported`` and ``untrained_bundle``); tests of what a model predicts use a trained one.
KEPT_BUNDLE = Path(__file__).resolve().parent / "fixtures" / "tiny-bundle"


@pytest.fixture(scope="session")
def untrained_exported(tmp_path_factory) -> Path:
    """The kept tiny bundle (tests/fixtures/tiny-bundle), like ``exported`` but untrained: no session training.

    The ten BANKING77 intents as labels, a fused fp32 ONNX model (2 layers of width 32, random weights,
    vocabulary trimmed to 667 tokens), the PyTorch weights and a fitted n-gram baseline; default component
    the transformer. Its predictions are meaningless but deterministic and decisive (no near-ties): assert
    shapes, protocols and equality between two ways of running it, never accuracy. A session copy, so no
    test can change the committed files.
    """
    from slm.bundle.manifest import read_manifest
    from slm.errors import BundleError

    regenerate = "regenerate it: python -m tests.fixtures.make_tiny_bundle (see docs/contributing.md)"
    if not (KEPT_BUNDLE / "manifest.json").is_file():
        pytest.fail(f"{KEPT_BUNDLE} is missing: {regenerate}")
    out = tmp_path_factory.mktemp("kept") / "tiny-onnx"
    shutil.copytree(KEPT_BUNDLE, out)
    try:
        read_manifest(out)
    except BundleError as exc:  # e.g. a manifest format this slm no longer reads
        pytest.fail(f"the kept bundle {KEPT_BUNDLE} does not load ({exc}): {regenerate}")
    return out


@pytest.fixture(scope="session")
def untrained_bundle(untrained_exported, tmp_path_factory) -> Path:
    """The kept bundle before export, like ``tiny_bundle`` but untrained: PyTorch transformer and n-gram only."""
    from slm.bundle.derive import derive_bundle, drop_components

    def without_onnx(staging: Path, manifest: dict) -> dict:
        drop_components(staging, manifest, keep={"transformer", "ngram"})
        return manifest

    out = tmp_path_factory.mktemp("kept") / "tiny"
    derive_bundle(untrained_exported, out, without_onnx, step="drop-onnx")
    return out


TINY_CONFIG = {"epochs": 2, "batch_size": 16, "max_length": 48, "seed": 7}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, banking_csv, banking_test_csv) -> Path:
    """A real minilm-l6 bundle trained for two short epochs on the BANKING77 slice."""
    import slm
    from slm.training.config import TrainConfig

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    slm.train(banking_csv, output=out, test=banking_test_csv, config=TrainConfig(**TINY_CONFIG), show_progress=False)
    return out


@pytest.fixture(scope="session")
def exported(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle exported to fused fp32 ONNX (``slm export``): what the runtime and server run."""
    from slm.compression.export import export_bundle

    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    export_bundle(tiny_bundle, out)
    return out


@pytest.fixture(scope="session")
def static_bundle(tiny_bundle, banking_csv, tmp_path_factory) -> Path:
    """The tiny bundle's static turbo tier (model2vec distillation, 128 dimensions; about 2 minutes)."""
    from slm.compression.static import build_static_bundle
    from slm.pipeline import DataSource

    out = tmp_path_factory.mktemp("static") / "tiny-static"
    build_static_bundle(tiny_bundle, out, DataSource(banking_csv), dims=128, show_progress=False)
    return out


# Hand-written FAQ answers for three BANKING77 intents that get no template; the questions are real
# BANKING77 training texts of those intents (see support_files).
FAQ_ANSWERS = {
    "exchange_rate": "Our exchange rates follow the interbank rate and are shown in the app before you confirm.",
    "top_up_failed": "If a top-up fails, check the card details and try again; failed top-ups are never charged.",
    "request_refund": "Refunds are issued by the merchant; they usually appear within 5 to 10 working days.",
}
SUPPORT_TEMPLATES = {
    "card_arrival": {"answer": "Cards arrive within {days} working days, {name}.",
                     "slots": {"days": {"default": "3-5"}, "name": {"default": "there"}}},
    "change_pin": {"answer": "You can change your PIN at any cash machine."},
    "cash_withdrawal_charge": {"answer": "Withdrawals over {amount} cost 2%.",
                               "slots": {"amount": {"pattern": r"(\d+)\s*(?:eur|euros|gbp|pounds|\$)",
                                                    "prompt": "How much did you withdraw?"}}},
    "lost_or_stolen_card": {"handoff": True},
}  # fmt: skip


@pytest.fixture(scope="session")
def support_files(tmp_path_factory) -> dict[str, Path]:
    """A knowledge base (8 real questions per FAQ answer, one exact duplicate row) and templates file."""
    import json

    folder = tmp_path_factory.mktemp("support")
    pool = pd.read_csv(require(DATA / "banking77" / "train.csv"))
    used = set(banking_frame("train", per_class=30)["text"])
    rows = []
    for intent, answer in FAQ_ANSWERS.items():
        questions = [q for q in pool[pool["category"] == intent]["text"] if q not in used][:8]
        rows += [{"question": q, "answer": answer, "intent": intent} for q in questions]
    rows.append(dict(rows[0]))  # a duplicate row: dropped with a warning
    pd.DataFrame(rows).to_csv(folder / "kb.csv", index=False)
    (folder / "templates.json").write_text(json.dumps(SUPPORT_TEMPLATES))
    return {"kb": folder / "kb.csv", "templates": folder / "templates.json"}


@pytest.fixture(scope="session")
def assistant_bundle(tmp_path_factory, tiny_bundle, banking_csv, support_files) -> Path:
    """A real assistant: the tiny BANKING77 intent bundle reused, the FAQ knowledge base and templates."""
    from slm.apps.support.build import SupportConfig, build_assistant

    out = tmp_path_factory.mktemp("assistants") / "assistant"
    build_assistant(
        banking_csv,
        support_files["kb"],
        output=out,
        templates=support_files["templates"],
        intent_bundle=tiny_bundle,
        config=SupportConfig(target_accuracy=0.9),
        show_progress=False,
    )
    return out


def fin_frame(per_class: int, seed: int = 0, skip: int = 0) -> pd.DataFrame:
    """A class-balanced slice of the financial tweets (labels 0 bearish, 1 bullish, 2 neutral), rows
    ``skip..skip+per_class`` of each class after a seeded shuffle: disjoint slices for train and stream."""
    frame = pd.read_csv(require(DATA / "fin_tweets_sentiment" / "sent_train.csv"), dtype=str, keep_default_na=False)
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label").nth(list(range(skip, skip + per_class))).reset_index(drop=True)


@pytest.fixture(scope="session")
def fin_bundle(tmp_path_factory) -> Path:
    """A real minilm-l6 sentiment bundle (three short epochs on 80 tweets per class), exported to ONNX."""
    import slm
    from slm.compression.export import export_bundle
    from slm.training.config import TrainConfig

    folder = tmp_path_factory.mktemp("fin")
    fin_frame(80).to_csv(folder / "train.csv", index=False)
    fin_frame(20, skip=80).to_csv(folder / "test.csv", index=False)
    slm.train(folder / "train.csv", output=folder / "model", test=folder / "test.csv",
              config=TrainConfig(**{**TINY_CONFIG, "epochs": 3}), show_progress=False)  # fmt: skip
    export_bundle(folder / "model", folder / "onnx")
    return folder / "onnx"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with Serve, started on first use and shut down after the last test."""
    pytest.importorskip("ray.serve", reason="the Ray Serve tests need the ray extra (pip install 'slm[ray]')")
    from tests.servers import RayCluster

    cluster = RayCluster()
    yield cluster
    cluster.close()


class _Hook(http.server.BaseHTTPRequestHandler):
    """A real webhook receiver: answers 500 to the first ``failures`` POSTs, then 204."""

    failures = 0
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).failures > 0:
            type(self).failures -= 1
            self.send_response(500)
        else:
            type(self).received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_):
        pass


@pytest.fixture
def webhook():
    """``(url, receiver)``: a local webhook receiver that fails the first two POSTs, then records each body."""
    _Hook.failures, _Hook.received = 2, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", _Hook
    server.shutdown()
