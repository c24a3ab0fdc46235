"""The privacy audit (slm.audit, ``slm audit privacy``): membership inference, canaries and their exposure.

The fast tests use the kept tiny bundle (tests/fixtures/tiny-bundle): its transformer is untrained (random
weights that never saw a text), its n-gram baseline is fitted on ``banking_frame("train", per_class=30)``
(300 real BANKING77 texts), so the same bundle gives a model that saw nothing and one that memorised its
training texts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slm.audit.canaries import CanarySpec, exposure, load_spec, plant
from slm.audit.membership import balanced_sample, evaluate_attack
from slm.errors import ConfigError
from tests.conftest import BANKING_INTENTS, DATA, banking_frame, require
from tests.test_cli import assert_one_line_error, python, slm


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Members (the n-gram's 300 training texts), non-members (300 other train texts) and two test halves."""
    folder = tmp_path_factory.mktemp("audit-data")
    members = banking_frame("train", per_class=30)
    train = pd.read_csv(require(DATA / "banking77" / "train.csv"))
    rest = train[train["category"].isin(BANKING_INTENTS) & ~train["text"].isin(members["text"])]
    nonmembers = rest.groupby("category").sample(n=30, random_state=1)
    test = banking_frame("test", per_class=40)
    paths = {name: folder / f"{name}.csv" for name in ("members", "nonmembers", "test_a", "test_b")}
    members.to_csv(paths["members"], index=False)
    nonmembers.to_csv(paths["nonmembers"], index=False)
    test.iloc[::2].to_csv(paths["test_a"], index=False)
    test.iloc[1::2].to_csv(paths["test_b"], index=False)
    planted, spec = plant(members, 3, repetitions=[1, 2, 4], label_col="category", seed=5)
    paths["spec"] = spec.save(folder / "canaries.json")
    return paths


# ---------------------------------------------------------------- exposure and canaries


def test_exposure_on_a_known_ranking():
    losses = np.arange(1000, dtype=float)  # candidate losses 0, 1, ..., 999
    top = exposure(-1.0, losses, space=10**6)  # lower than every candidate: rank 1
    assert top.rank_in_sample == 1 and top.exposure == pytest.approx(math.log2(1001)) == pytest.approx(top.ceiling)
    assert top.rank == pytest.approx(10**6 / 1001)
    middle = exposure(499.5, losses, space=10**6)  # 500 candidates below
    assert middle.rank_in_sample == 501 and middle.exposure == pytest.approx(math.log2(1001 / 501))
    tie = exposure(10.0, losses, space=10**6)  # 10 below, one tie counted half
    assert tie.rank_in_sample == 11.5
    bottom = exposure(5000.0, losses, space=10**6)
    assert bottom.exposure == pytest.approx(math.log2(1001 / 1001)) == 0.0
    with pytest.raises(ValueError):
        exposure(1.0, [], space=10)


def test_planting_is_deterministic_by_seed(tmp_path):
    frame = banking_frame("train", per_class=5)
    a, spec_a = plant(frame, 4, repetitions=[1, 2, 3, 4], label_col="category", seed=11)
    b, spec_b = plant(frame, 4, repetitions=[1, 2, 3, 4], label_col="category", seed=11)
    c, spec_c = plant(frame, 4, repetitions=[1, 2, 3, 4], label_col="category", seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert spec_a == spec_b and spec_a.to_json() == spec_b.to_json()
    assert [x.secret for x in spec_c.canaries] != [x.secret for x in spec_a.canaries]
    assert len(a) == len(frame) + 10 and len({x.secret for x in spec_a.canaries}) == 4
    for canary in spec_a.canaries:
        rows = a[a["text"] == spec_a.text(canary.secret)]
        assert len(rows) == canary.repetitions and set(rows["category"]) == {canary.label}
        assert canary.label in BANKING_INTENTS and len(canary.secret) == 6 and canary.secret.isdigit()
    assert spec_a.candidate_space == 10**6
    assert load_spec(spec_a.save(tmp_path / "spec.json")) == spec_a
    with pytest.raises(ConfigError, match="secret"):
        plant(frame, 1, template="no placeholder", label_col="category")
    with pytest.raises(ConfigError, match="no column"):
        plant(frame, 1)  # this frame's labels are in 'category'
    with pytest.raises(ConfigError, match="not an slm canary spec"):
        CanarySpec.from_json({"template": "x {secret}"})


def test_balanced_sample_and_attack_statistics():
    m, n = balanced_sample(50, 3000, limit=2000, seed=0)
    assert len(m) == len(n) == 50 and len(set(n)) == 50
    assert np.array_equal(balanced_sample(50, 3000, limit=2000, seed=0)[1], n)
    labels = np.array([1] * 100 + [0] * 100)
    perfect = evaluate_attack("loss", labels, labels + 0.0)
    assert perfect.auc == 1.0 and perfect.tpr_at_low_fpr == 1.0 and perfect.auc_ci == (1.0, 1.0)
    noise = evaluate_attack("loss", labels, np.random.default_rng(0).normal(size=200))
    assert noise.auc_ci[0] < 0.5 < noise.auc_ci[1]


# ---------------------------------------------------------------- membership inference on a real bundle


def test_auc_is_chance_for_texts_the_model_never_saw(untrained_exported, files):
    """Both halves of the test split: the transformer saw neither, so no attack tells them apart."""
    import slm.api

    report = slm.api.audit_privacy(untrained_exported, train=files["test_a"], holdout=files["test_b"],
                                   component="transformer")  # fmt: skip
    for name, attack in report["membership"]["attacks"].items():
        assert 0.4 < attack["auc"] < 0.6, (name, attack)
    loss = report["membership"]["attacks"]["loss"]
    assert loss["auc_ci"][0] < 0.5 < loss["auc_ci"][1]
    assert report["membership"]["members"] == report["membership"]["nonmembers"] == 200
    assert report["privacy"] is None


def test_auc_is_high_for_memorised_texts_and_report_files(untrained_exported, files, tmp_path, caplog):
    """The n-gram baseline was fitted on the members: they stand out; the untrained transformer's do not."""
    import slm.api

    out = tmp_path / "audit"
    report = slm.api.audit_privacy(untrained_exported, train=files["members"], holdout=files["nonmembers"],
                                   component="ngram", canaries=files["spec"], candidates=500, output=out,
                                   reference=untrained_exported)  # fmt: skip
    loss = report["membership"]["attacks"]["loss"]
    assert loss["auc"] > 0.65 and loss["auc_ci"][0] > 0.55, loss
    assert report["membership"]["member_mean_loss"] < report["membership"]["nonmember_mean_loss"]
    # a reference attack runs when a reference bundle is given (here the untrained transformer: its random
    # losses only add noise to the calibration, so its AUC is not asserted)
    assert report["membership"]["attacks"]["reference"]["auc_ci"][0] < report["membership"]["attacks"]["loss"]["auc"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "report.json",
        "report.md",
        "roc.png",
    ]
    saved = json.loads((out / "report.json").read_text())
    assert saved["membership"]["attacks"]["loss"]["auc"] == loss["auc"]
    canaries = saved["canaries"]  # the canaries were never trained on: nothing exposed beyond chance
    assert "holds none of the canaries' texts" in caplog.text
    assert canaries["sampled_candidates"] == 500 and len(canaries["canaries"]) == 3
    assert canaries["max_exposure"] <= canaries["exposure_ceiling"] == pytest.approx(math.log2(501), abs=1e-3)
    assert "| loss threshold |" in (out / "report.md").read_text()
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dp_record_is_shown_beside_the_auc(untrained_exported, files, tmp_path):
    from slm.bundle.derive import derive_bundle
    from slm.bundle.schema import Privacy

    record = Privacy(dp=True, epsilon_target=8.0, epsilon_spent=7.91, delta=1e-4, noise_multiplier=0.9,
                     max_grad_norm=1.0, sample_rate=0.1, steps=100, accountant="prv", recipe="head")  # fmt: skip
    private = tmp_path / "private"
    derive_bundle(untrained_exported, private, lambda _s, m: dataclasses.replace(m, privacy=record), step="test-dp")
    proc = slm("audit", "privacy", private, "--train", files["test_a"], "--holdout", files["test_b"],
               "--component", "transformer", "--max-samples", "50")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ε = 7.91, δ = 0.0001" in proc.stdout and "loss threshold attack: AUC 0." in proc.stdout


def test_an_exported_bundle_is_audited_without_pytorch(untrained_exported, files):
    code = f"""
import sys
import slm.api
report = slm.api.audit_privacy({str(untrained_exported)!r}, train={str(files["test_a"])!r},
                               holdout={str(files["test_b"])!r}, max_samples=40)
assert report["backend"] == "onnx", report["backend"]
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- one-line refusals


def test_bad_input_is_refused_in_one_line(untrained_exported, files, tmp_path):
    """Through the CLI (one line on stderr, non-zero exit) for two cases, through the API for the rest."""
    from slm.api import audit_privacy
    from slm.errors import DataError

    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"text": ["where is my card?"] * 3, "category": ["not_an_intent"] * 3}).to_csv(unknown, index=False)
    bad_spec = tmp_path / "spec.json"
    bad_spec.write_text('{"format": "slm-canaries", "template": "pin {secret}"}')
    base = ("audit", "privacy", untrained_exported, "--train", files["members"])
    assert_one_line_error(slm(*base, "--holdout", unknown), "not seen in training", code=None)
    assert_one_line_error(slm(*base, "--holdout", files["nonmembers"], "--canaries", bad_spec), "canaries", code=None)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    audit = functools.partial(audit_privacy, untrained_exported, train=files["members"])
    with pytest.raises(DataError, match="empty"):
        audit(holdout=empty)
    with pytest.raises(DataError, match="'body' not found"):
        audit(holdout=files["nonmembers"], text_col="body")
    with pytest.raises(ConfigError, match="max-samples"):
        audit(holdout=files["nonmembers"], max_samples=3)
    with pytest.raises(ConfigError, match="no static component"):
        audit(holdout=files["nonmembers"], component="static")


def test_a_trained_bundle_leaks_membership(tiny_bundle, files):
    """slow (tiny_bundle trains): the real minilm bundle trained on the members, attacked on what it ships."""
    from slm.api import audit_privacy

    report = audit_privacy(tiny_bundle, train=files["members"], holdout=files["nonmembers"])
    member = report["membership"]
    assert member["member_mean_loss"] < member["nonmember_mean_loss"]
    assert member["attacks"]["loss"]["auc"] > 0.55 and member["attacks"]["loss"]["auc_ci"][0] > 0.5, member
