"""Roll-out (issue 23): promote and roll back a bundle folder by lineage digest, and hot swaps under load.

Two real versions of the kept tiny bundle: ``v1`` derived from it, ``v2`` derived from ``v1`` with renamed
labels (so its answers differ visibly); each lineage step records its parent's manifest digest.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from slm.bundle.derive import derive_bundle
from slm.bundle.manifest import read_manifest, write_manifest
from slm.bundle.rollout import previous_of, promote, rollback
from slm.errors import BundleError, ConfigError
from slm.serving import ModelService, ServeConfig
from tests.servers import running
from tests.test_cli import assert_one_line_error, slm
from tests.test_install import NOT_IN_CORE, run_cli


def _digest(bundle: Path) -> str:
    digest = read_manifest(bundle).manifest_digest
    assert digest is not None
    return digest.value


@pytest.fixture
def versions(untrained_exported, tmp_path) -> tuple[Path, Path, str, str]:
    """``v1`` (a copy of the kept bundle) and ``v2`` (derived from ``v1``, labels renamed), and their digests.

    A promote moves its candidate, so the digests are read here, once.
    """
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    derive_bundle(untrained_exported, v1, lambda _, manifest: manifest, step="copy")
    derive_bundle(v1, v2, lambda _, m: replace(m, labels=["v2:" + x for x in m.labels or []]), step="relabel")
    return v1, v2, _digest(v1), _digest(v2)


def _served_copy(bundle: Path, tmp_path: Path) -> Path:
    served = tmp_path / "served"
    shutil.copytree(bundle, served)
    return served


# ---------------------------------------------------------------- lineage, promote, rollback


def test_lineage_records_the_parent_digest(versions) -> None:
    v1, v2, d1, d2 = versions
    step = (read_manifest(v2).lineage or [])[-1]
    assert step.step == "relabel" and step.parent == str(v1.resolve()) and step.parent_digest == d1


def test_promote_keeps_the_replaced_version_and_replaces_only_its_own_older_copy(versions, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    served = _served_copy(v1, tmp_path)
    candidate = tmp_path / "candidate"
    shutil.copytree(v2, candidate)
    assert promote(candidate, served) == previous_of(served)
    assert _digest(served) == d2 and _digest(previous_of(served)) == d1
    assert not candidate.exists()  # moved in, not copied
    # A third version: the older kept one (v1, written by slm) goes, v2 is kept.
    v3 = tmp_path / "v3"
    derive_bundle(served, v3, lambda _, manifest: manifest, step="copy")
    d3 = _digest(v3)
    promote(v3, served)
    assert _digest(served) == d3 and _digest(previous_of(served)) == d2
    assert promote(previous_of(served), tmp_path / "fresh") is None and _digest(tmp_path / "fresh") == d2
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left behind


def test_rollback_restores_the_parent_by_digest_and_can_be_undone(versions, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    served = _served_copy(v1, tmp_path)
    promote(v2, served)
    done = slm("rollback", served)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert f"now version {d1[:12]}" in text and f"version {d2[:12]} kept at" in text
    assert _digest(served) == d1 and _digest(previous_of(served)) == d2
    undo = slm("promote", previous_of(served), served)  # the command the rollback printed
    assert undo.returncode == 0, undo.stderr
    assert _digest(served) == d2 and _digest(previous_of(served)) == d1


def test_rollback_copies_the_recorded_parent_when_no_previous_is_kept(versions, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    served = tmp_path / "served"
    promote(v2, served)  # a new path: nothing kept beside it
    assert rollback(served) == previous_of(served)
    assert _digest(served) == d1 and _digest(previous_of(served)) == d2
    assert d1 == _digest(served) and v1.is_dir()  # the recorded parent is copied, never moved
    read_manifest(served)  # verified: every file of the copy


def test_rollback_passes_over_a_parent_that_was_a_temporary_intermediate(versions, tmp_path) -> None:
    # As `slm compress` does: trim into a temporary folder, quantize from there, delete the folder.
    v1, _, d1, _ = versions
    served, middle, chained = _served_copy(v1, tmp_path), tmp_path / "middle", tmp_path / "chained"
    derive_bundle(served, middle, lambda _, manifest: manifest, step="trim")
    derive_bundle(middle, chained, lambda _, manifest: manifest, step="quantize")
    shutil.rmtree(middle)
    promote(chained, served)
    assert rollback(served) == previous_of(served) and _digest(served) == d1


def test_rollback_refusals_are_one_line(versions, untrained_exported, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    # The kept bundle's lineage predates recorded digests.
    assert_one_line_error(slm("rollback", untrained_exported), "does not record its parent's digest")
    bare = _served_copy(v1, tmp_path / "bare")
    write_manifest(bare, replace(read_manifest(bare), lineage=None))
    assert_one_line_error(slm("rollback", bare), "has no lineage")
    # The parent's recorded path now holds another version, and nothing is kept beside the served one.
    served = tmp_path / "served"
    promote(v2, served)
    other = tmp_path / "other"
    derive_bundle(untrained_exported, other, lambda _, manifest: manifest, step="another")
    shutil.rmtree(v1)
    shutil.copytree(other, v1)
    line = assert_one_line_error(slm("rollback", served), "digest mismatch", code=4)
    assert str(v1) in line and _digest(other)[:12] in line
    shutil.rmtree(v1)
    assert_one_line_error(slm("rollback", served), "is gone", code=4)
    assert _digest(served) == d2  # every refusal left the served bundle as it was


def test_files_slm_did_not_write_are_never_moved_or_deleted(versions, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    served = _served_copy(v1, tmp_path)
    (served / "notes.txt").write_text("mine")
    assert_one_line_error(slm("promote", v2, served), "notes.txt", code=2)
    (served / "notes.txt").unlink()
    promote(v2, served)
    (previous_of(served) / "notes.txt").write_text("mine")
    v3 = tmp_path / "v3"
    derive_bundle(v1, v3, lambda _, manifest: manifest, step="copy")
    with pytest.raises(ConfigError, match=r"served\.previous holds files slm did not write \(notes\.txt\)"):
        promote(v3, served)
    assert (previous_of(served) / "notes.txt").read_text() == "mine" and _digest(served) == d2
    broken = tmp_path / "broken"
    shutil.copytree(v3, broken)
    (broken / "manifest.json").write_text((broken / "manifest.json").read_text().replace('"copy"', '"edited"'))
    with pytest.raises(BundleError, match="has been modified"):
        promote(broken, served)  # a candidate that fails verification never goes live


def test_rollback_works_on_the_core_install(versions, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    served = _served_copy(v1, tmp_path)
    promote(v2, served)
    done = run_cli(["rollback", str(served)], NOT_IN_CORE)
    assert done.returncode == 0, done.stderr
    assert _digest(served) == d1


# ---------------------------------------------------------------- the server during a swap


def _failed_reloads(service: ModelService) -> float | None:
    return service.metrics.registry.get_sample_value("slm_model_reloads_total", {"model": "tiny", "result": "failed"})


def test_a_reload_overtaken_by_a_swap_is_retried_not_counted_as_failed(versions, tmp_path) -> None:
    # The watcher reads a folder that a promote or rollback renames away mid-read (exactly their renames,
    # done around the real loader), first making the load fail, then after a load that succeeded.
    v1, v2, d1, d2 = versions
    served = _served_copy(v1, tmp_path)
    previous, away = previous_of(served), tmp_path / "away"

    async def scenario() -> None:
        service = ModelService.load([("tiny", served)], ServeConfig(workers=1))
        model = service.models["tiny"]
        real = model.load_version

        def vanishing():  # a rollback starts as the load starts and ends when it has failed
            os.replace(served, away)
            try:
                return real()
            finally:
                os.replace(previous, served)
                os.replace(away, previous)

        def overtaken():  # a rollback right after the load read everything
            loaded = real()
            rollback(served)
            return loaded

        try:
            for load in (vanishing, overtaken):
                promote(previous if previous.exists() else v2, served)  # v2 at the served path: a new signature
                model.load_version = load  # type: ignore[method-assign]
                assert not await service.reload_if_changed(model)
                assert model.current.version == d1[:12] == _digest(served)[:12]
                assert model.failed is None and not _failed_reloads(service)
            model.load_version = real  # type: ignore[method-assign]
            assert not await service.reload_if_changed(model)  # v1 is back and loaded: nothing to do
            promote(previous, served)
            assert await service.reload_if_changed(model) and model.current.version == d2[:12]
        finally:
            await service.close()

    asyncio.run(scenario())


class Load:
    """``clients`` threads posting predictions without pause; every answer's version and every failure kept."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.stop = url + "/v1/models/tiny/predict", threading.Event()
        self.answers: list[tuple[float, str]] = []  # (when the request was sent, the version that answered)
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(self.url, json={"text": f"my card has not arrived ({index})"})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                else:
                    self.answers.append((sent, response.json()["version"]))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def settle_on(self, version: str, timeout: float = 30) -> float:
        """Wait until the server answers with ``version``; returns the moment from which only it may answer.

        That is when the answer arrived, not when its request was sent: requests on other connections sent a
        little later may reach the server first, and be answered by the version before.
        """
        deadline = time.monotonic() + timeout
        while True:
            answer = httpx.post(self.url, json={"text": "change my pin"}).json()["version"]
            if answer == version:
                return time.monotonic()
            assert time.monotonic() < deadline, f"version {version} was not picked up"
            time.sleep(0.05)


def test_hot_swap_under_load_fails_no_request_and_never_mixes_versions(versions, tmp_path) -> None:
    v1, v2, d1, d2 = versions
    served = _served_copy(v1, tmp_path)
    old, new = d1[:12], d2[:12]
    with running([("tiny", served)], watch=True, watch_interval=0.2) as (url, _), Load(url, clients=8) as load:
        load.settle_on(old)
        time.sleep(0.5)
        promote(v2, served)
        switched = load.settle_on(new)
        time.sleep(0.5)
        rolling_back = time.monotonic()
        rollback(served)
        back = load.settle_on(old)
        time.sleep(0.5)
    assert not load.failures, load.failures[:5]
    versions_seen = [version for _, version in load.answers]
    assert set(versions_seen) == {old, new} and len(versions_seen) > 50
    # Once the new version answered, no request sent later got the other one.
    assert {v for sent, v in load.answers if switched < sent < rolling_back} == {new}
    assert {v for sent, v in load.answers if sent > back} == {old}
