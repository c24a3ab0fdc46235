"""Support assistants behind the HTTP API: loading, warming, summarising, answering and logging each turn.

An assistant bundle (``slm app support build``) is recognised by its manifest's task and served
beside the classification models, under the same names, workers and limits: :class:`Assistants` is
the support app's :class:`~slm.serving.extensions.BundleGroup` in a :class:`ModelService`. Its questions go
through a :class:`MicroBatcher` like predict's texts (queue bound, 503 with Retry-After, ``workers``
runs at once in the shared pool, drained on shutdown), and the thread that answered a question
stores its turn in the conversation log before the reply leaves.

Each question runs alone (:data:`QUESTIONS_PER_RUN`): the assistant's encoders are dynamic-int8,
whose activation scales are computed over the whole batch, so a question batched with others can
score differently and, near a threshold, get another decision (measured: "what is the exchange
rate for euros" is ``no_answer`` alone and ``out_of_scope`` beside "hi"). A customer's answer must
not depend on who else asked at the same moment: it is what ``slm app support ask BUNDLE QUESTION``
answers for that question.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from slm.apps.support.conversations import ConversationLog, Turn
from slm.errors import BundleError, SlmError, one_line
from slm.serving import log
from slm.serving.batching import MicroBatcher
from slm.serving.config import ServeConfig
from slm.serving.metrics import ServiceMetrics
from slm.serving.models import WARMUP_TEXT, manifest_signature

if TYPE_CHECKING:
    from slm.serving.service import ModelService

KIND = "support_assistant"
QUESTIONS_PER_RUN = 1  # see the module's docstring: batching would make answers depend on concurrent questions


@dataclass(frozen=True)
class LoadedAssistant:
    """One loaded version of an assistant bundle."""

    assistant: Any  # slm.apps.support.assistant.Assistant
    signature: tuple[int, int, int] | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def labels(self) -> list[str]:
        labels: list[str] = self.assistant.labels
        return labels


def load_assistant(path: Path, *, threads: int) -> LoadedAssistant:
    """Open and verify the assistant at ``path`` and answer once, so load errors surface now."""
    from slm.apps.support.assistant import Assistant

    signature = manifest_signature(path)
    try:
        assistant = Assistant(path, threads=threads)
        if assistant.generator is not None:  # de-quantizing the GGUF takes a while: not on a customer's time
            assistant.generator.load()
        assistant.answer(WARMUP_TEXT)
    except SlmError:
        raise
    except Exception as exc:  # onnxruntime / tokenizers / a malformed assistant.json raise their own types
        raise BundleError(f"{path}: the assistant fails to load: {type(exc).__name__}: {exc}") from None
    return LoadedAssistant(assistant, signature)


def assistant_summary(name: str, loaded: LoadedAssistant) -> dict[str, Any]:
    """What ``GET /v1/models`` says about an assistant: counts and settings, never a path."""
    assistant = loaded.assistant
    manifest = assistant.manifest
    intents = [label for label in assistant.labels if label != assistant.oos_label]
    templates = assistant.templates
    return {
        "name": name,
        "kind": KIND,
        "task": manifest.task,
        "intents": len(intents),
        "faq_entries": 0 if assistant.knowledge is None else len(assistant.knowledge.kb),
        "templates": len(templates),
        "handoff_intents": sorted(intent for intent, template in templates.items() if template.handoff),
        "faq_threshold": assistant.faq_threshold,
        "base_model": manifest.base_model_name or None,
        "created": manifest.created,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded.loaded_at)),
    }


@dataclass(slots=True)
class Question:
    """One question waiting in an assistant's batcher."""

    text: str
    context: dict[str, Any] | None
    conversation_id: str


class SupportMetrics:
    """The support counters, on a service's registry: answers by decision and reason, turns the log lost."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        r = metrics.registry
        self.answers = Counter("slm_support_answers", "Support assistant answers, by assistant, decision and (for "
                               "handoffs) reason.", ["assistant", "decision", "reason"], registry=r)  # fmt: skip
        self.log_failures = Counter("slm_support_log_failures", "Turns the conversation log failed to store.",
                                    ["assistant"], registry=r)  # fmt: skip


class ServedAssistant:
    """A named assistant bundle: its current loaded version, its batcher and the conversation log."""

    kind = KIND

    def __init__(
        self,
        name: str,
        path: Path,
        loaded: LoadedAssistant,
        config: ServeConfig,
        executor: ThreadPoolExecutor,
        metrics: ServiceMetrics,
        conversations: ConversationLog,
        counters: SupportMetrics,
    ) -> None:
        self.name, self.path, self.config = name, Path(path), config
        self.current = loaded
        self.failed: tuple[tuple[int, int, int] | None, float] | None = None
        self.conversations, self.counters = conversations, counters
        self.batcher = MicroBatcher(
            self._run, executor=executor, max_batch=QUESTIONS_PER_RUN, max_wait_ms=0.0, max_queue=config.max_queue,
            concurrency=config.workers, observer=metrics.observer(name),
        )  # fmt: skip

    def _run(self, questions: list[Question]) -> tuple[list[dict[str, Any]], LoadedAssistant]:
        """One run, in a worker thread: answer the questions, then store the turns (one transaction)."""
        loaded = self.current  # read once: a reload during this batch does not mix versions
        replies = loaded.assistant.answer_many([q.text for q in questions], contexts=[q.context for q in questions])
        answers = [reply.to_dict() for reply in replies]
        turns = [Turn.of(answer, assistant=self.name, conversation_id=q.conversation_id, question=q.text)
                 for q, answer in zip(questions, answers, strict=True)]  # fmt: skip
        try:
            self.conversations.record(turns)
        except Exception as exc:  # a full disk must not stop the answers; the log line and the metric say it
            self.counters.log_failures.labels(self.name).inc(len(turns))
            log.event("support_log_failed", level=40, assistant=self.name, turns=len(turns), error=one_line(exc))
        return answers, loaded

    async def answer(self, question: str, *, context: dict[str, Any] | None, conversation_id: str) -> dict[str, Any]:
        """The reply to ``question`` (``Reply.to_dict()``), counted by decision."""
        answers, _ = await self.batcher.submit([Question(question, context, conversation_id)])
        reply: dict[str, Any] = answers[0]
        reason = reply["reason"] if reply["decision"] == "handoff" else None
        self.counters.answers.labels(self.name, reply["decision"], reason or "").inc()
        return reply

    # ------------------------------------------------------------------ what the service asks of a served bundle
    def load_version(self) -> LoadedAssistant:
        return load_assistant(self.path, threads=self.config.threads)

    def info_labels(self, loaded: LoadedAssistant) -> tuple[str, str, str, str, str]:
        facts = assistant_summary(self.name, loaded)
        return self.name, KIND, str(facts["intents"]), "onnx", str(facts["base_model"])

    def summary(self) -> dict[str, Any]:
        return assistant_summary(self.name, self.current)


class Assistants:
    """The assistants one service serves (the support app's bundle group), their conversation log and counters."""

    def __init__(self, service: ModelService, conversations: ConversationLog) -> None:
        self.service, self.conversations = service, conversations
        self.counters = SupportMetrics(service.metrics)
        self.served: dict[str, ServedAssistant] = {}

    @classmethod
    def open(cls, service: ModelService, paths: list[Path]) -> Assistants:
        """Open the conversation log (``config.support_db``, outside every served bundle) for ``service``."""
        where = service.config.support_db
        from slm.privacy import Redactor

        redactor = Redactor() if service.config.redact_stored else None
        conversations = ConversationLog.open(where, not_inside=paths, redactor=redactor)
        log.event("support_log_opened", path=str(where))
        assistants = cls(service, conversations)
        assistants.purge()
        return assistants

    def purge(self) -> int:
        """Delete the logged turns older than ``--support-retention``; how many went."""
        retention = self.service.config.support_retention
        removed = self.conversations.purge(retention)
        if removed:
            log.event("support_log_purged", rows=removed, retention_days=round(retention / 86400, 3))
        return removed

    def load(self, name: str, path: Path) -> None:
        """Load, verify and warm the assistant at ``path``, served as ``name``."""
        started = time.perf_counter()
        service = self.service
        version = load_assistant(path, threads=service.config.threads)
        self.served[name] = ServedAssistant(name, path, version, service.config, service.executor, service.metrics,
                                            self.conversations, self.counters)  # fmt: skip
        log.event("assistant_loaded", model=name, seconds=round(time.perf_counter() - started, 3),
                  intents=len(version.labels))  # fmt: skip

    def usage(self, name: str) -> str:
        return f"a support assistant, not a classification model: POST /v1/support/{name}/answer"

    def close(self) -> None:
        self.conversations.close()
