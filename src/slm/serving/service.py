"""The models behind the HTTP API: one micro-batcher each, a shared worker pool, hot reload.

Classification bundles are :class:`ServedModel`; support assistant bundles (``slm app support
build``) are :class:`~slm.serving.support.ServedAssistant`, sharing the workers, limits and reload.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from slm.errors import SlmError, one_line
from slm.serving import log
from slm.serving.batching import MicroBatcher
from slm.serving.config import ServeConfig
from slm.serving.conversations import ConversationLog
from slm.serving.metrics import ServiceMetrics
from slm.serving.models import LoadedBundle, decode_rows, load_bundle, manifest_signature, summary
from slm.serving.support import LoadedAssistant, ServedAssistant, is_assistant, load_assistant

# A reload that failed is tried again after this many watch intervals even if nothing changed.
RETRY_INTERVALS = 10


class _Version(Protocol):
    """One loaded version of a served bundle (:class:`LoadedBundle`, :class:`LoadedAssistant`)."""

    @property
    def signature(self) -> tuple[int, int, int] | None: ...
    @property
    def loaded_at(self) -> float: ...
    @property
    def labels(self) -> list[str]: ...


VersionT = TypeVar("VersionT", bound=_Version)


class _Served(Protocol[VersionT]):
    """What hot reload and the metrics ask of a served bundle (:class:`ServedModel`, :class:`ServedAssistant`)."""

    name: str
    path: Path
    current: VersionT
    failed: tuple[tuple[int, int, int] | None, float] | None

    def load_version(self) -> VersionT: ...
    def info_labels(self, loaded: VersionT) -> tuple[str, str, str, str, str]: ...
    def summary(self) -> dict[str, Any]: ...


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

    async def predict(self, texts: list[str], *, top_k: int, with_probabilities: bool) -> list[dict[str, Any]]:
        rows, loaded = await self.batcher.submit(texts)
        return decode_rows(rows, loaded, top_k=top_k, with_probabilities=with_probabilities)

    def summary(self) -> dict[str, Any]:
        return summary(self.name, self.current)

    def load_version(self) -> LoadedBundle:
        return load_bundle(self.path, threads=self.config.threads, max_batch=self.config.max_batch)

    def info_labels(self, loaded: LoadedBundle) -> tuple[str, str, str, str, str]:
        return _info_labels(self.name, loaded)


class ModelService:
    """Every served model, loaded and warmed before the server listens, and the workers they share."""

    def __init__(
        self,
        loaded: dict[str, tuple[Path, LoadedBundle]],
        config: ServeConfig,
        *,
        assistants: dict[str, tuple[Path, LoadedAssistant]] | None = None,
        conversations: ConversationLog | None = None,
    ) -> None:
        if assistants and conversations is None:
            raise ValueError("serving an assistant needs a conversation log")
        self.config = config
        self.metrics = ServiceMetrics()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="slm-batch")
        self.models = {
            name: ServedModel(name, path, bundle, config, self.executor, self.metrics)
            for name, (path, bundle) in loaded.items()
        }
        self.conversations = conversations
        self.assistants = (
            {
                name: ServedAssistant(name, path, version, config, self.executor, self.metrics, conversations)
                for name, (path, version) in (assistants or {}).items()
            }
            if conversations is not None  # None only without assistants (checked above)
            else {}
        )
        self.ready = False
        self._watcher: asyncio.Task[None] | None = None
        for model in self.models.values():
            self._record_model(model)
        for assistant in self.assistants.values():
            self._record_model(assistant)

    @classmethod
    def load(cls, specs: list[tuple[str, Path]], config: ServeConfig) -> ModelService:
        """Load, verify and warm every bundle; the first one that fails raises its error, naming it.

        With an assistant among them, the conversation log (``config.support_db``) is opened first.
        """
        kinds = {name: is_assistant(path) for name, path in specs}
        conversations = None
        if any(kinds.values()):
            conversations = ConversationLog.open(config.support_db, not_inside=[path for _, path in specs])
            log.event("support_log_opened", path=str(config.support_db))
        loaded, assistants = {}, {}
        try:
            for name, path in specs:
                started = time.perf_counter()
                try:
                    if kinds[name]:
                        version = load_assistant(path, threads=config.threads)
                    else:
                        bundle = load_bundle(path, threads=config.threads, max_batch=config.max_batch)
                except SlmError as exc:
                    raise type(exc)(f"cannot serve '{name}': {exc}") from None
                seconds = round(time.perf_counter() - started, 3)
                if kinds[name]:
                    assistants[name] = (Path(path), version)
                    log.event("assistant_loaded", model=name, seconds=seconds, intents=len(version.labels))
                else:
                    loaded[name] = (Path(path), bundle)
                    log.event("model_loaded", model=name, seconds=seconds, labels=len(bundle.labels),
                              component=bundle.bundle.default_component)  # fmt: skip
        except BaseException:
            if conversations is not None:
                conversations.close()
            raise
        return cls(loaded, config, assistants=assistants, conversations=conversations)

    def get(self, name: str) -> ServedModel | None:
        return self.models.get(name)

    def assistant(self, name: str) -> ServedAssistant | None:
        return self.assistants.get(name)

    def served(self) -> list[ServedModel | ServedAssistant]:
        """Every served bundle: the classification models, then the assistants."""
        return [*self.models.values(), *self.assistants.values()]

    @property
    def names(self) -> list[str]:
        return sorted([*self.models, *self.assistants])

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
        if self.conversations is not None:
            self.conversations.close()

    # ------------------------------------------------------------------ hot reload
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.watch_interval)
            # the classification models, then the assistants (as served() lists them)
            for model in list(self.models.values()):
                await self.reload_if_changed(model)
            for assistant in list(self.assistants.values()):
                await self.reload_if_changed(assistant)

    async def reload_if_changed(self, model: _Served[VersionT]) -> bool:
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
            model.failed = (signature, time.monotonic())
            self.metrics.reloads.labels(model.name, "failed").inc()
            log.event("model_reload_failed", level=40, model=model.name, error=one_line(exc),
                      kept_loaded_at=model.summary()["loaded_at"])  # fmt: skip
            return False
        previous = model.current
        model.current, model.failed = loaded, None
        self.metrics.reloads.labels(model.name, "ok").inc()
        self.metrics.model_info.remove(*model.info_labels(previous))
        self._record_model(model)
        log.event("model_reloaded", model=model.name, seconds=round(time.perf_counter() - started, 3),
                  labels=len(loaded.labels))  # fmt: skip
        return True

    def _record_model(self, model: _Served[VersionT]) -> None:
        self.metrics.model_info.labels(*model.info_labels(model.current)).set(1)
        self.metrics.model_loaded.labels(model.name).set(model.current.loaded_at)


def _info_labels(name: str, loaded: LoadedBundle) -> tuple[str, str, str, str, str]:
    facts = summary(name, loaded)
    return name, facts["task"], str(facts["num_labels"]), str(facts["backend"]), str(facts["base_model"])
