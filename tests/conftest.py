"""Shared fixtures: slices of the real datasets in ../shared/data and one small trained bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

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
