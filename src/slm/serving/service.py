"""The models behind the HTTP API: one micro-batcher each, a shared worker pool, hot reload.

Classification bundles are :class:`ServedModel`. A bundle an app owns (a support assistant, by its
manifest's task) is served by that app's :class:`~slm.serving.extensions.BundleGroup`, sharing the
workers, limits, reload and metrics; this module knows no app (:mod:`slm.serving.extensions`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from slm.errors import SlmError, one_line
from slm.serving import log
from slm.serving.batching import MicroBatcher
from slm.serving.config import ServeConfig
from slm.serving.extensions import BundleGroup, Served, VersionT, app_servers, bundle_owners
from slm.serving.metrics import ServiceMetrics
from slm.serving.models import LoadedBundle, decode_rows, load_bundle, manifest_signature, summary
from slm.serving.observers import ObserverList

# A reload that failed is tried again after this many watch intervals even if nothing changed.
RETRY_INTERVALS = 10


class ServedModel:
    """A named bundle: its current loaded version and the batcher that feeds it."""

    def __init__(
        self,
        name: str,
        path: Path,
        loaded: LoadedBundle,
        config: ServeConfig,
        executor: ThreadPoolExecutor,
        metrics: ServiceMetrics,
    ) -> None:
        self.name, self.path, self.config = name, Path(path), config
        self.current = loaded
        self.failed: tuple[tuple[int, int, int] | None, float] | None = None
        self.batcher = MicroBatcher(
            self._run, executor=executor, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue, concurrency=config.workers, observer=metrics.observer(name),
        )  # fmt: skip

    def _run(self, texts: list[str]) -> tuple[Any, LoadedBundle]:
        loaded = self.current  # read once: a reload during this batch does not mix versions
        return loaded.bundle.predict_proba(texts, batch_size=self.config.max_batch), loaded

    async def predict(
        self, texts: list[str], *, top_k: int, with_probabilities: bool
    ) -> tuple[list[dict[str, Any]], LoadedBundle]:
        """The predictions and the version that made them (one version per batch, even during a reload)."""
        rows, loaded = await self.batcher.submit(texts)
        return decode_rows(rows, loaded, top_k=top_k, with_probabilities=with_probabilities), loaded

    def summary(self) -> dict[str, Any]:
        return summary(self.name, self.current)

    def load_version(self) -> LoadedBundle:
        return load_bundle(
            self.path, threads=self.config.threads, max_batch=self.config.max_batch, backend=self.config.backend
        )

    def info_labels(self, loaded: LoadedBundle) -> tuple[str, str, str, str, str]:
        return _info_labels(self.name, loaded)


class ModelService:
    """Every served model, loaded and warmed before the server listens, and the workers they share."""

    def __init__(self, config: ServeConfig) -> None:
        """An empty service (:meth:`load` fills it): its metrics, its workers, no model yet."""
        self.config = config
        self.metrics = ServiceMetrics()
        self.executor = ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="slm-batch", initializer=lower_priority,
            initargs=(config.batch_nice,),
        )  # fmt: skip
        self.models: dict[str, ServedModel] = {}
        self.groups: dict[str, BundleGroup] = {}  # by app name: the bundles each app serves here
        self.observers = ObserverList()  # drift signals, recall of recent predictions by request id
        self.ready = False
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def load(cls, specs: list[tuple[str, Path]], config: ServeConfig) -> ModelService:
        """Load, verify and warm every bundle; the first one that fails raises its error, naming it.

        An app whose bundles are among them opens its group first (the support app: its conversation
        log, ``config.support_db``), before any bundle is loaded.
        """
        service = cls(config)
        try:
            owners = bundle_owners(specs)
            servers = app_servers()
            for app in dict.fromkeys(owners.values()):
                service.groups[app] = servers[app].open_bundles(service, [path for _, path in specs])
            for name, path in specs:
                service._load(name, Path(path), owners.get(name))
        except BaseException:
            service._release()
            raise
        for model in service.served():
            service._record_model(model)
        return service

    def _load(self, name: str, path: Path, app: str | None) -> None:
        started = time.perf_counter()
        try:
            if app is not None:
                self.groups[app].load(name, path)  # the group logs its own event
                return
            bundle = load_bundle(
                path, threads=self.config.threads, max_batch=self.config.max_batch, backend=self.config.backend
            )
        except SlmError as exc:
            raise type(exc)(f"cannot serve '{name}': {exc}") from None
        self.models[name] = ServedModel(name, path, bundle, self.config, self.executor, self.metrics)
        log.event("model_loaded", model=name, seconds=round(time.perf_counter() - started, 3),
                  labels=len(bundle.labels), component=bundle.bundle.default_component)  # fmt: skip

    def _release(self) -> None:
        """Close what a failed :meth:`load` opened (no batcher runs yet)."""
        self.executor.shutdown(wait=True)
        for group in self.groups.values():
            group.close()

    def get(self, name: str) -> ServedModel | None:
        return self.models.get(name)

    def served(self) -> list[Served[Any]]:
        """Every served bundle: the classification models, then each app's."""
        return [*self.models.values(), *(model for group in self.groups.values() for model in group.served.values())]

    def find(self, name: str) -> Served[Any] | None:
        """The served bundle called ``name``, of any kind."""
        return next((model for model in self.served() if model.name == name), None)

    def group_of(self, name: str) -> BundleGroup | None:
        """The app group serving ``name``; None for a classification model or an unknown name."""
        return next((group for group in self.groups.values() if name in group.served), None)

    @property
    def names(self) -> list[str]:
        return sorted(model.name for model in self.served())

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for model in self.served():
            model.batcher.start()
        if self.config.watch:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self.ready = True
        self.metrics.ready.set(1)

    async def close(self) -> None:
        """Stop watching, finish every queued and running batch, then release the workers."""
        self.ready = False
        self.metrics.ready.set(0)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await asyncio.gather(*(m.batcher.close() for m in self.served()))
        self.executor.shutdown(wait=True)
        await asyncio.to_thread(self.observers.close)  # e.g. the drift monitor sends its pending alerts
        for group in self.groups.values():
            group.close()

    # ------------------------------------------------------------------ hot reload
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval)
            for model in self.served():  # the classification models, then each app's
                await self.reload_if_changed(model)

    async def reload_if_changed(self, model: Served[VersionT]) -> bool:
        """Load ``model``'s bundle again if its manifest changed; keep the old version if that fails."""
        signature = manifest_signature(model.path)
        if signature is None or signature == model.current.signature:
            return False
        if model.failed is not None:
            failed_signature, failed_at = model.failed
            retry_at = failed_at + RETRY_INTERVALS * self.config.watch_interval
            if signature == failed_signature and time.monotonic() < retry_at:
                return False
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(model.load_version)
        except Exception as exc:  # a broken new version must never take the served one down
            if manifest_signature(model.path) != signature:
                # The folder was swapped while it was read (promote, rollback, an update's -o: renames that
                # leave the path briefly absent or holding another version): not a broken bundle, and no
                # failure to count. The next poll loads whatever is there now.
                return False
            model.failed = (signature, time.monotonic())
            self.metrics.reloads.labels(model.name, "failed").inc()
            log.event("model_reload_failed", level=40, model=model.name, error=one_line(exc),
                      kept_loaded_at=model.summary()["loaded_at"])  # fmt: skip
            return False
        if manifest_signature(model.path) != loaded.signature:
            # Swapped during the load: the manifest and the weights may come from two versions. Drop it; the
            # next poll loads the version there now.
            return False
        previous = model.current
        model.current, model.failed = loaded, None
        self.metrics.reloads.labels(model.name, "ok").inc()
        self.metrics.model_info.remove(*model.info_labels(previous))
        self._record_model(model)
        log.event("model_reloaded", model=model.name, seconds=round(time.perf_counter() - started, 3),
                  labels=len(loaded.labels))  # fmt: skip
        return True

    def _record_model(self, model: Served[VersionT]) -> None:
        self.metrics.model_info.labels(*model.info_labels(model.current)).set(1)
        self.metrics.model_loaded.labels(model.name).set(model.current.loaded_at)


def _info_labels(name: str, loaded: LoadedBundle) -> tuple[str, str, str, str, str]:
    facts = summary(name, loaded)
    return name, facts["task"], str(facts["num_labels"]), str(facts["backend"]), str(facts["base_model"])


def lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (a batch thread, at its start: see ``ServeConfig.batch_nice``).

    Linux sets niceness per thread; elsewhere it is per process, which would slow the event loop too, so
    nothing is done there. ONNX Runtime runs a one-thread session in the calling thread, so this covers it.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
    except OSError as exc:  # e.g. a sandbox that forbids it: the server runs, only without the priority
        log.event("batch_nice_failed", level=logging.WARNING, error=str(exc))
