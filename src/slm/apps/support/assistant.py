"""The assistant at run time: one question in, one answer with its decision path out.

Runs on ONNX Runtime, tokenizers and numpy (plus bm25s, py3langid and, for big knowledge bases,
faiss): no PyTorch, transformers or scikit-learn. Decisions, in order:

1. a question in a language or script the assistant was not built for → ``handoff``;
2. an in-scope intent with a template → ``intent`` (the filled template, or the question for a
   missing slot), or ``handoff`` when the template says so;
3. a knowledge-base entry scoring at least the FAQ threshold → ``faq`` (with its id and score);
4. otherwise → ``handoff``, with the reason (out of scope, or no answer found).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm.apps.support.language import LanguageProfile
from slm.apps.support.layout import ASSISTANT_FILE, TASK
from slm.apps.support.scope import ScopeModel
from slm.apps.support.templates import templates_from_dict
from slm.bundle.manifest import read_manifest
from slm.errors import BundleError, ConfigError

DECISIONS = ("intent", "faq", "handoff")
# Questions go through the encoders one at a time: dynamic int8 quantization scales activations over
# the whole batch, so a batched question's scores would depend on the other questions beside it.
QUESTIONS_PER_RUN = 1


@dataclass
class Reply:
    """An answer and how it was reached."""

    decision: str
    answer: str | None
    reason: str | None
    intent: dict
    faq: dict | None
    path: list[str]

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "answer": self.answer,
            "reason": self.reason,
            "intent": self.intent,
            "faq": self.faq,
            "path": self.path,
        }


class Assistant:
    """A loaded assistant bundle (``slm app support build``)."""

    def __init__(self, path: str | Path, *, threads: int | None = None, verify: bool = True) -> None:
        from safetensors.numpy import load_file

        from slm.apps.common.encoders import Encoder

        self.path = Path(path)
        self.manifest = read_manifest(self.path, verify=verify)
        if self.manifest.task != TASK:
            raise BundleError(f"{self.path} is not a support assistant bundle (task: {self.manifest.task})")
        components = self.manifest.components
        if components.intent is None or components.scope is None:
            raise BundleError(f"{self.path}: the assistant bundle lacks its intent or scope component")
        self.labels: list[str] = list(self.manifest.labels or [])
        try:
            settings = json.loads((self.path / ASSISTANT_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"{self.path}: cannot read {ASSISTANT_FILE}: {exc}") from None
        self.intent = Encoder(self.path, components.intent, threads=threads)
        self.scope = ScopeModel.from_parts(settings["scope"], load_file(str(self.path / components.scope.file)))
        self.templates = templates_from_dict(settings["templates"])
        self.language = LanguageProfile.from_dict(settings["language"])
        self.oos_label: str = settings["oos_label"]
        self.faq_threshold = settings.get("faq_threshold")
        self.generator = None
        if settings.get("generator"):
            from slm.apps.support.generation import GroundedGenerator

            self.generator = GroundedGenerator(settings["generator"]["name"], threads=threads)
        self.retriever = None
        self.knowledge = None
        if components.retriever is not None:
            from slm.apps.support.retrieval import Retriever

            if components.knowledge is None:
                raise BundleError(f"{self.path}: the assistant bundle has a retriever but no knowledge base")
            self.retriever = Encoder(self.path, components.retriever, threads=threads)
            self.knowledge = Retriever.load(self.path / components.knowledge.dir)

    def __repr__(self) -> str:
        entries = 0 if self.knowledge is None else len(self.knowledge.kb)
        return f"Assistant({str(self.path)!r}, intents={len(self.labels)}, faq_entries={entries})"

    # ------------------------------------------------------------------ scoring
    def classify(self, questions: list[str]) -> dict[str, np.ndarray]:
        """Intent predictions and in-scope scores (``ScopeModel.score``) for ``questions``."""
        logits, embeddings = self.intent.outputs(questions, batch_size=QUESTIONS_PER_RUN)
        out = self.scope.score(logits, embeddings)
        if self.oos_label in self.labels:
            out["in_scope"] = out["in_scope"] & (out["predicted"] != self.labels.index(self.oos_label))
        return out

    def retrieve(self, questions: list[str], k: int = 5):
        """Top-``k`` knowledge-base hits per question (empty lists without a knowledge base)."""
        if self.retriever is None or self.knowledge is None or not questions:
            return [[] for _ in questions]
        vectors = self.retriever.embed(questions, batch_size=QUESTIONS_PER_RUN)
        return self.knowledge.search(vectors, questions, k=k)

    # ------------------------------------------------------------------ answering
    def answer(self, question: str, *, context: dict | None = None) -> Reply:
        """Answer one question (``context`` fills template slots, e.g. the customer's name)."""
        return self.answer_many([question], contexts=[context])[0]

    def answer_many(self, questions: list[str], *, contexts: list[dict | None] | None = None) -> list[Reply]:
        """Answer a batch of questions (one model pass each for intents and retrieval)."""
        questions = [str(q) for q in questions]
        if any(not q.strip() for q in questions):
            raise ConfigError("questions must be non-empty text")
        contexts = contexts if contexts is not None else [None] * len(questions)
        if len(contexts) != len(questions):
            raise ConfigError("give one context per question")
        if not questions:
            return []
        scored = self.classify(questions)
        replies: list[Reply | None] = [None] * len(questions)
        pending: list[tuple[int, Reply]] = []  # handed off unless the knowledge base answers
        for i, question in enumerate(questions):
            intent = self._intent_info(scored, i)
            path = [f"intent {intent['label']} (p={intent['confidence']:.2f}, scope score {intent['score']:.2f})"]
            foreign = self.language.check(question)
            if foreign is not None:
                path.append(f"language check: {foreign}")
                replies[i] = Reply("handoff", None, "unsupported_language", intent, None, path)
                continue
            template = self.templates.get(intent["label"]) if intent["in_scope"] else None
            if template is not None:
                path.append(f"in scope: template for {intent['label']}")
                replies[i] = self._from_template(template, question, contexts[i], intent, path)
                continue
            path.append("in scope, no template: searching the knowledge base" if intent["in_scope"]
                        else "out of scope for the intents: searching the knowledge base")  # fmt: skip
            reply = Reply("handoff", None, None, intent, None, path)
            replies[i] = reply
            pending.append((i, reply))
        if pending:
            hits = self.retrieve([questions[i] for i, _ in pending], k=3)
            for (i, reply), found in zip(pending, hits, strict=True):
                self._from_knowledge(reply, found, questions[i])
        answered = [reply for reply in replies if reply is not None]
        assert len(answered) == len(replies)  # every question got its reply above
        return answered

    def _intent_info(self, scored: dict, i: int) -> dict:
        return {
            "label": self.labels[int(scored["predicted"][i])],
            "confidence": round(float(scored["confidence"][i]), 4),
            "score": round(float(scored["score"][i]), 4),
            "distance": round(float(scored["distance"][i]), 3),
            "in_scope": bool(scored["in_scope"][i]),
        }

    def _from_template(self, template, question: str, context: dict | None, intent: dict, path: list[str]) -> Reply:
        if template.handoff:
            path.append(f"intent {template.intent} is configured to go to a person")
            return Reply("handoff", None, "intent_requires_human", intent, None, path)
        text, missing = template.fill(question, context)
        if missing is None:
            path.append("template filled")
            return Reply("intent", text, None, intent, None, path)
        if text is not None:
            path.append(f"slot '{missing}' missing: asking for it")
            return Reply("intent", text, f"missing_slot:{missing}", intent, None, path)
        path.append(f"slot '{missing}' missing and the template has no prompt for it")
        return Reply("handoff", None, f"missing_slot:{missing}", intent, None, path)

    def _from_knowledge(self, reply: Reply, hits, question: str | None = None) -> None:
        if self.knowledge is None:
            reply.path.append("no knowledge base")
            reply.reason = "out_of_scope" if not reply.intent["in_scope"] else "no_answer"
            return
        threshold = float(self.faq_threshold)
        if not hits or hits[0].dense < threshold:
            best = f"{hits[0].dense:.2f}" if hits else "none"
            reply.path.append(f"best knowledge-base match {best} < threshold {threshold:.2f}")
            reply.reason = "out_of_scope" if not reply.intent["in_scope"] else "no_answer"
            return
        top = hits[0]
        reply.decision, reply.answer, reply.reason = "faq", top.entry.answer, None
        reply.faq = {
            "id": top.entry.id,
            "question": top.entry.question,
            "score": round(float(top.score), 4),
            "similarity": round(float(top.dense), 4),
            "lexical": round(float(top.lexical), 4),
        }
        reply.path.append(f"knowledge base: {top.entry.id} (similarity {top.dense:.2f} >= {threshold:.2f})")
        if self.generator is not None and question is not None:
            rewrite = self.generator.rewrite(question, top.entry.answer)
            reply.faq["generated"] = rewrite.grounded
            if rewrite.grounded:
                reply.faq["source_answer"] = top.entry.answer
                reply.answer = rewrite.text
                reply.path.append(f"rewritten by {self.generator.name} ({rewrite.tokens_per_second:.0f} tokens/s)")
            else:
                reply.path.append(f"{self.generator.name}'s rewrite strayed from the answer: the answer is given as is")


def load_assistant(path: str | Path, *, threads: int | None = None) -> Assistant:
    """Open and verify an assistant bundle."""
    return Assistant(path, threads=threads)
