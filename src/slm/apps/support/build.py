"""``slm app support build``: intents + knowledge base (+ templates) → one assistant bundle.

Steps, each reported in the manifest:

1. the intent classifier: trained with ``slm.train`` on the intents file (or an existing intent
   bundle reused), exported to ONNX with its sentence embedding as a second output;
2. out-of-scope detection fitted on validation (``scope.py``) for a target in-scope accuracy;
3. the retriever: the base encoder fine-tuned on question/answer pairs with in-batch negatives,
   kept only when it beats the un-tuned encoder on held-out pairs, exported to ONNX;
4. the knowledge base embedded into a vector index (exact, or HNSW when large) plus BM25.

The bundle is written to a staging directory and swapped in at the end, so a failure leaves the
previous assistant untouched.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slm.apps.common.embedding import embed_with_torch
from slm.apps.support.contrastive import RetrieverTraining
from slm.apps.support.layout import ASSISTANT_FILE, INTENT_BUNDLE_DIR, KNOWLEDGE_DIR, SCOPE_FILE, TASK
from slm.bundle.manifest import now_iso, read_manifest, write_manifest
from slm.bundle.schema import Components, EncoderSpec, KnowledgeSpec, Manifest, ScopeSpec
from slm.console import status
from slm.errors import ConfigError, DataError
from slm.fileio import atomic_directory, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_TARGET_ACCURACY = 0.95
DEFAULT_OOS_LABEL = "oos"
MIN_TUNING_PAIRS = 64
VALIDATION_PAIRS = 0.1
MAX_VALIDATION_PAIRS = 500
GATE_DOCUMENTS = 2000
FAQ_KEEP_SHARE = 0.9  # the automatic FAQ threshold accepts this share of correct validation retrievals
FAQ_THRESHOLD_FLOOR = 0.3
FAQ_THRESHOLD_DEFAULT = 0.5


@dataclass
class SupportConfig:
    """How an assistant is built."""

    base_model: str = "minilm-l6"
    target_accuracy: float = DEFAULT_TARGET_ACCURACY
    oos_label: str = DEFAULT_OOS_LABEL
    faq_threshold: float | None = None  # None: chosen on validation pairs
    retriever: RetrieverTraining = field(default_factory=RetrieverTraining)
    tune_retriever: bool = True
    int8: bool = True
    index_kind: str = "auto"
    generator: str | None = None  # e.g. "smollm2-135m": rewrite FAQ answers (needs PyTorch at run time)
    seed: int = 42

    def validate(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ConfigError("target accuracy must be in (0, 1]")
        if self.faq_threshold is not None and not -1.0 <= self.faq_threshold <= 1.0:
            raise ConfigError("FAQ threshold is a cosine similarity: it must be in [-1, 1]")
        if self.retriever.epochs < 0:
            raise ConfigError("retriever epochs must be >= 0")
        if self.index_kind not in ("auto", "exact", "hnsw"):
            raise ConfigError("index kind must be auto, exact or hnsw")
        if self.generator is not None:
            from slm.apps.support.generation import generator_path

            generator_path(self.generator)  # an unknown name or a missing package fails before any training


# ------------------------------------------------------------------------------- intents


def _labelled(path: str | Path, what: str):
    from slm.pipeline import DataSource

    ds, _ = DataSource(path).load(min_classes=1)
    if ds.multi_label:
        raise DataError(f"{path}: {what} must have one intent per text (multi-label data is not supported)")
    return ds


def _write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    import pandas as pd

    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def _train_intents(intents, validation, work: Path, config, show_progress: bool) -> Path:
    """Train the intent bundle with slm.train; validation doubles as its test split (it is internal)."""
    import slm
    from slm.training.config import TrainConfig

    train_cfg = config if isinstance(config, TrainConfig) else TrainConfig()
    labels = set(intents.label_names)
    keep = [i for i, lab in enumerate(validation.labels) if lab in labels]
    val_file = _write_csv(
        work / "validation.csv", [validation.texts[i] for i in keep], [validation.labels[i] for i in keep]
    )
    train_file = _write_csv(work / "intents.csv", intents.texts, intents.labels)
    out = work / "intent-bundle"
    slm.train(train_file, output=out, validation=val_file, test=val_file, config=train_cfg, show_progress=show_progress)
    return out


def _classifier(bundle: Path):
    from slm.compression.export import _torch_model

    manifest = read_manifest(bundle)
    if manifest.task != "single_label":
        raise ConfigError(f"{bundle} is a {manifest.task} bundle: the assistant needs a single-label intent model")
    return manifest, _torch_model(bundle, manifest)


def build_intent_encoder(
    bundle: Path, staging: Path, check_texts: list[str], int8: bool
) -> tuple[Manifest, EncoderSpec]:
    """Export the intent bundle's classifier with logits + embedding outputs into ``staging/intent``."""
    from transformers import AutoConfig

    from slm.apps.common.encoders import INTENT_OUTPUTS, export_encoder, intent_graph

    manifest, model = _classifier(bundle)
    spec = manifest.components.transformer
    assert spec is not None  # _classifier loaded its weights
    config = AutoConfig.from_pretrained(bundle / spec.config)
    encoder = export_encoder(
        intent_graph(model),
        config,
        bundle / spec.tokenizer,
        staging,
        "intent",
        INTENT_OUTPUTS,
        max_length=int(spec.max_length),
        check_texts=check_texts,
        int8=int8,
    )
    return manifest, encoder


def fit_scope_model(
    staging: Path,
    encoder_spec: EncoderSpec,
    labels: list[str],
    intents,
    validation,
    config: SupportConfig,
    *,
    show_progress: bool = True,
):
    """Embed training and validation intents with the exported encoder and fit out-of-scope detection."""
    from slm.apps.common.encoders import Encoder
    from slm.apps.support.assistant import QUESTIONS_PER_RUN
    from slm.apps.support.scope import fit_scope

    index = {label: k for k, label in enumerate(labels)}
    oos_class = index.get(config.oos_label)
    encoder = Encoder(staging, encoder_spec)
    with status("embedding the intents for out-of-scope detection…", enabled=show_progress):
        # One text per run, as the assistant answers (int8 activation scales depend on the batch).
        _, train_emb = encoder.outputs(intents.texts, batch_size=QUESTIONS_PER_RUN)
        val_logits, val_emb = encoder.outputs(validation.texts, batch_size=QUESTIONS_PER_RUN)
    train_targets = np.array([index[lab] for lab in intents.labels])
    val_targets = np.array(
        [index.get(lab, -1) if lab != config.oos_label or oos_class is not None else -1 for lab in validation.labels]
    )
    unknown = {lab for lab in validation.labels if lab not in index and lab != config.oos_label}
    if unknown:
        raise DataError(
            f"validation has intents the training intents lack: {', '.join(sorted(unknown)[:5])} "
            f"(label out-of-scope examples '{config.oos_label}', or set --oos-label)"
        )
    return fit_scope(
        train_emb, train_targets, val_logits, val_emb, val_targets,
        n_classes=len(labels), target_accuracy=config.target_accuracy, oos_class=oos_class,
    )  # fmt: skip


# ------------------------------------------------------------------------------- retriever


def _recall_at_1(encoder, tokenizer, val_pairs, documents: list[str], settings: RetrieverTraining) -> float:
    """Question → answer Recall@1 on held-out pairs, among ``documents`` (which hold every gold answer)."""
    q = embed_with_torch(encoder, tokenizer, [p[0] for p in val_pairs], settings.query_max_length)
    d = embed_with_torch(encoder, tokenizer, documents, settings.document_max_length)
    position = {text: i for i, text in enumerate(documents)}
    gold = np.array([position[a] for _, a in val_pairs])
    return float(((q @ d.T).argmax(1) == gold).mean())


def split_pairs(pairs: list[tuple[str, str]], seed: int) -> tuple[list, list]:
    """Held-out validation pairs (grouped by answer, so a held-out answer was never trained on)."""
    answers = sorted({a for _, a in pairs})
    rng = np.random.default_rng(seed)
    n_val = min(MAX_VALIDATION_PAIRS, max(1, int(len(answers) * VALIDATION_PAIRS)))
    held = set(rng.choice(len(answers), n_val, replace=False).tolist()) if len(answers) > 1 else set()
    held_answers = {answers[i] for i in held}
    return [p for p in pairs if p[1] not in held_answers], [p for p in pairs if p[1] in held_answers]


def tune_retriever(pairs, documents: list[str], config: SupportConfig, show_progress: bool):
    """The base encoder, fine-tuned on ``pairs`` when that beats the un-tuned one on held-out pairs.

    Returns ``(encoder, tokenizer, resolved base model, report)``.
    """
    from transformers import AutoModel, AutoTokenizer

    from slm.apps.support.contrastive import fine_tune
    from slm.models.registry import resolve_base_model

    base = resolve_base_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    encoder = AutoModel.from_pretrained(base.path, add_pooling_layer=False).eval()
    report: dict = {"base_model": base.name, "pairs": len(pairs), "tuned": False}
    if not config.tune_retriever or config.retriever.epochs == 0:
        report["reason"] = "fine-tuning switched off"
        return encoder, tokenizer, base, report
    if len(pairs) < MIN_TUNING_PAIRS:
        report["reason"] = f"only {len(pairs)} question/answer pairs (fine-tuning needs {MIN_TUNING_PAIRS})"
        log.warning(f"note: retriever not fine-tuned: {report['reason']}")
        return encoder, tokenizer, base, report
    train_pairs, val_pairs = split_pairs(pairs, config.seed)
    rng = np.random.default_rng(config.seed)
    gold = sorted({a for _, a in val_pairs})
    others = [d for d in dict.fromkeys(documents) if d not in set(gold)]
    extra = [others[i] for i in rng.permutation(len(others))[: max(0, GATE_DOCUMENTS - len(gold))]]
    candidates = gold + extra
    before = _recall_at_1(encoder, tokenizer, val_pairs, candidates, config.retriever)
    untuned = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    training = fine_tune(encoder, tokenizer, train_pairs, config.retriever, show_progress=show_progress)
    after = _recall_at_1(encoder, tokenizer, val_pairs, candidates, config.retriever)
    report.update(
        training=training,
        validation={"pairs": len(val_pairs), "documents": len(candidates), "recall_at_1_untuned": round(before, 4),
                    "recall_at_1_tuned": round(after, 4)},
    )  # fmt: skip
    if after > before:
        report["tuned"] = True
        log.info(f"retriever fine-tuned: validation Recall@1 {before:.1%} → {after:.1%}")
    else:
        encoder.load_state_dict(untuned)
        report["reason"] = f"fine-tuning did not help on held-out pairs (Recall@1 {before:.1%} → {after:.1%})"
        log.warning(f"note: keeping the un-tuned retriever: {report['reason']}")
    return encoder, tokenizer, base, report


def build_retriever(kb, pairs, staging: Path, config: SupportConfig, show_progress: bool) -> tuple[EncoderSpec, dict]:
    """Fine-tune (maybe), export, embed the knowledge base and save the index under ``staging``."""
    from slm.apps.common.encoders import RETRIEVER_OUTPUTS, Encoder, embedding_graph, export_encoder
    from slm.apps.support.retrieval import Retriever, index_texts

    documents = [e.answer for e in kb.entries]
    encoder, tokenizer, base, report = tune_retriever(pairs, documents, config, show_progress)
    with tempfile.TemporaryDirectory(prefix="slm-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        sample = [q for q, _ in pairs[:200]] + documents[:100]
        spec = export_encoder(
            embedding_graph(encoder), encoder.config, Path(tmp), staging, "retriever", RETRIEVER_OUTPUTS,
            max_length=config.retriever.query_max_length, check_texts=sample, int8=config.int8,
        )  # fmt: skip
    runtime = Encoder(staging, spec)
    texts, row_entry = index_texts(kb)
    # index_texts lists each entry's question row (if any) and then its answer row.
    is_answer = np.append(row_entry[1:] != row_entry[:-1], True) if len(row_entry) else np.zeros(0, dtype=bool)
    vectors = np.zeros((len(texts), spec.dim), dtype=np.float32)
    log.info(f"embedding {len(kb):,} knowledge-base entries ({len(texts):,} texts)…")
    # Answers in batches; questions one at a time, exactly as a customer's question is embedded at run time.
    settings = config.retriever
    passes = ((is_answer, settings.document_max_length, 32), (~is_answer, settings.query_max_length, 1))
    for mask, length, batch in passes:
        rows = np.flatnonzero(mask)
        if len(rows):
            chosen = [texts[i] for i in rows]
            vectors[rows] = runtime.embed(chosen, max_length=length, batch_size=batch, show_progress=show_progress)
    question_rows = np.flatnonzero(~is_answer)
    report["faq_threshold"] = _faq_threshold(vectors, row_entry, question_rows, kb, config)
    report["hybrid"] = _hybrid_weight(kb, texts, vectors, row_entry, is_answer, config)
    retriever = Retriever.build(kb, vectors, row_entry, weight=report["hybrid"]["weight"], kind=config.index_kind)
    retriever.save(staging / KNOWLEDGE_DIR)
    spec.base_model = base.name
    return spec, report


def _sample(rows: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(rows)[:MAX_VALIDATION_PAIRS]


def _faq_threshold(vectors, row_entry, question_rows, kb, config: SupportConfig) -> dict:
    """The FAQ threshold: given, or the cosine that keeps ``FAQ_KEEP_SHARE`` of correct leave-one-out matches.

    Each sampled knowledge-base question is searched for with its own question row left out; a match is
    correct when the best entry has the same answer (its own answer, or a paraphrase's entry).
    """
    if config.faq_threshold is not None:
        return {"value": config.faq_threshold, "chosen": "given"}
    rows = _sample(question_rows, config.seed)
    scores = vectors[rows] @ vectors.T
    scores[np.arange(len(rows)), rows] = -np.inf
    correct = []
    for i, row in enumerate(rows):
        best = int(row_entry[int(np.argmax(scores[i]))])
        if kb.entries[best].answer == kb.entries[int(row_entry[row])].answer:
            correct.append(float(scores[i].max()))
    if len(correct) < 5:
        return {"value": FAQ_THRESHOLD_DEFAULT, "chosen": "default (too few knowledge-base questions to choose one)"}
    value = max(FAQ_THRESHOLD_FLOOR, float(np.quantile(correct, 1 - FAQ_KEEP_SHARE)))
    return {
        "value": round(value, 4),
        "chosen": f"keeps {FAQ_KEEP_SHARE:.0%} of correct leave-one-out matches",
        "questions": len(rows),
        "leave_one_out_accuracy": round(len(correct) / len(rows), 4),
    }


def _hybrid_weight(kb, texts, vectors, row_entry, is_answer, config: SupportConfig) -> dict:
    """The dense/BM25 mix with the best MRR@10 of knowledge-base questions searched against the answers alone."""
    from slm.apps.support.knowledge import Entry, KnowledgeBase
    from slm.apps.support.retrieval import Retriever, choose_weight

    rows = _sample(np.flatnonzero(~is_answer), config.seed)
    if len(rows) < 5:
        return {"weight": 1.0, "chosen": "dense only (too few knowledge-base questions to choose a mix)"}
    answers_only = KnowledgeBase([Entry(id=e.id, answer=e.answer) for e in kb.entries], [], None)
    retriever = Retriever.build(answers_only, vectors[is_answer], row_entry[is_answer], weight=1.0, kind="exact")
    same_answer: dict[str, set[str]] = {}
    for e in kb.entries:
        same_answer.setdefault(e.answer, set()).add(e.id)
    gold = [same_answer[kb.entries[int(row_entry[r])].answer] for r in rows]
    weight = choose_weight(retriever, vectors[rows], [texts[int(r)] for r in rows], gold)
    chosen = "best MRR@10 of knowledge-base questions against the answers"
    return {"weight": weight, "chosen": chosen, "questions": len(rows)}


# ------------------------------------------------------------------------------- build


def _generator_record(name: str | None) -> dict | None:
    """What the assistant needs to find and check its generator at run time (the GGUF stays in its package)."""
    if name is None:
        return None
    from slm.apps.support.generation import GENERATORS, generator_path
    from slm.models.registry import sha256_file

    path = generator_path(name)
    return {"name": name, "package": GENERATORS[name]["package"], "file": path.name, "sha256": sha256_file(path)}


@dataclass
class _Inputs:
    """Every input file read and checked, before any model is loaded."""

    train: Any  # TextDataset: the intents trained on
    val: Any  # TextDataset: the intents out-of-scope detection is fitted on
    kb: Any  # KnowledgeBase
    templates: dict
    qa_pairs: list[tuple[str, str]]  # the retriever's fine-tuning pairs


def build_assistant(
    intents: str | Path,
    knowledge: str | Path | None,
    *,
    output: str | Path,
    templates: str | Path | None = None,
    validation: str | Path | None = None,
    intent_bundle: str | Path | None = None,
    pairs: str | Path | None = None,
    config: SupportConfig | None = None,
    train_config=None,
    show_progress: bool = True,
) -> Manifest:
    """Build an assistant bundle at ``output``; returns its manifest."""
    from slm.apps.support.language import LanguageProfile

    config = config or SupportConfig()
    config.validate()
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a directory")
    inputs = _read_inputs(intents, knowledge, templates, validation, pairs, config)
    train, val, kb = inputs.train, inputs.val, inputs.kb

    from slm.logs import quiet_transformers

    quiet_transformers()
    with atomic_directory(output) as staging, tempfile.TemporaryDirectory(prefix="slm-support-") as tmp:
        work = Path(tmp)
        if intent_bundle is None:
            bundle_path = _train_intents(train, val, work, train_config, show_progress)
        else:
            bundle_path = Path(intent_bundle)
        intent_manifest, intent_spec = build_intent_encoder(bundle_path, staging, val.texts[:500], config.int8)
        labels = list(intent_manifest.labels or [])
        missing = sorted(set(train.label_names) - set(labels))
        if missing:
            raise DataError(f"the intent bundle {bundle_path} does not know the intents {', '.join(missing[:5])}")
        scope = fit_scope_model(staging, intent_spec, labels, train, val, config, show_progress=show_progress)
        # The intent bundle itself (PyTorch weights, n-gram baseline, report) travels inside, for reuse
        # (--intent-bundle ASSISTANT/intent_bundle) and further training; it verifies its own files.
        shutil.copytree(bundle_path, staging / INTENT_BUNDLE_DIR)
        from safetensors.numpy import save_file

        save_file(scope.arrays(), str(staging / SCOPE_FILE))
        if len(kb):
            retriever_spec, retrieval = build_retriever(kb, inputs.qa_pairs, staging, config, show_progress)
        else:
            retriever_spec, retrieval = None, {"reason": "empty knowledge base: unmatched questions are handed off"}
            log.warning("note: the knowledge base is empty, so the assistant has no FAQ answers")
        profile = LanguageProfile.fit(train.texts + [e.answer for e in kb.entries[:2000]])
        write_json_atomic(
            staging / ASSISTANT_FILE,
            {
                "templates": {k: t.to_dict() for k, t in inputs.templates.items()},
                "language": profile.to_dict(),
                "scope": scope.spec(),
                "oos_label": config.oos_label,
                "faq_threshold": retrieval.get("faq_threshold", {}).get("value"),
                "generator": _generator_record(config.generator),
            },
        )
        components = Components(intent=intent_spec, scope=ScopeSpec(file=SCOPE_FILE))
        if retriever_spec is not None:
            components.retriever = retriever_spec
            components.knowledge = KnowledgeSpec(dir=KNOWLEDGE_DIR, entries=len(kb))
        reused_from = str(Path(bundle_path).resolve()) if intent_bundle is not None else None
        manifest = write_manifest(
            staging,
            _manifest(intent_manifest, components, reused_from, scope, retrieval, inputs, knowledge, templates,
                      profile),
        )  # fmt: skip
    log.info(f"assistant written to {output}")
    return manifest


def _read_inputs(
    intents: str | Path,
    knowledge: str | Path | None,
    templates: str | Path | None,
    validation: str | Path | None,
    pairs: str | Path | None,
    config: SupportConfig,
) -> _Inputs:
    """Read and check every input (intents, knowledge base, templates, validation, extra pairs)."""
    from slm.apps.support.knowledge import KnowledgeBase, read_knowledge_base
    from slm.apps.support.templates import read_templates
    from slm.data.splitting import split_dataset

    data = _labelled(intents, "the intents file")
    kb = read_knowledge_base(knowledge) if knowledge is not None else KnowledgeBase([], [], None)
    for warning in kb.warnings:
        log.warning(f"warning: {warning}")
    answer_templates = read_templates(templates) if templates is not None else {}
    extra_pairs = read_knowledge_base(pairs) if pairs is not None else None
    if validation is not None:
        val = _labelled(validation, "the validation file")
        train = data
    else:
        train, val, _ = split_dataset(data, val_size=0.1, test_size=0.0, seed=config.seed)
        log.info(f"validation: {len(val):,} intents held out of {Path(intents).name} (pass --validation FILE)")
    unknown = sorted(set(answer_templates) - set(train.label_names))
    if unknown:
        raise DataError(f"{templates}: templates for intents the intents file lacks: {', '.join(unknown[:5])}")
    qa_pairs = [(e.question, e.answer) for e in kb.entries if e.question]
    if extra_pairs is not None:
        qa_pairs += [(e.question, e.answer) for e in extra_pairs.entries if e.question]
    return _Inputs(train, val, kb, answer_templates, qa_pairs)


def _manifest(
    intent_manifest: Manifest,
    components: Components,
    reused_from: str | None,
    scope,
    retrieval: dict,
    inputs: _Inputs,
    knowledge: str | Path | None,
    templates: str | Path | None,
    profile,
) -> Manifest:
    kb = inputs.kb
    return Manifest(
        task=TASK,
        labels=list(intent_manifest.labels or []),
        created=now_iso(),
        base_model=intent_manifest.base_model,
        components=components,
        default_component="assistant",
        extra={  # the assistant's own sections
            "intent_bundle": {"dir": INTENT_BUNDLE_DIR, "reused_from": reused_from, "metrics": intent_manifest.metrics},
            "scope": scope.report,
            "retrieval": retrieval,
            "knowledge_base": {"source": None if knowledge is None else str(knowledge), "entries": len(kb),
                               "warnings": kb.warnings},
            "templates": {"source": None if templates is None else str(templates), "intents": len(inputs.templates)},
            "languages": profile.languages,
        },
    )  # fmt: skip
