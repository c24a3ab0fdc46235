"""The transformer run by ONNX Runtime with the raw ``tokenizers`` library: no PyTorch, no transformers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slm.errors import BundleError

if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from slm.bundle.schema import EncoderSpec, Manifest, OnnxSpec

DEFAULT_THREADS = min(os.cpu_count() or 1, 4)
# Padding tokens a batch may carry before the longest text is run in a batch of its own (length_chunks).
PAD_BUDGET_TOKENS = 16
# Characters tokenized per call in OnnxComponent.encode: about 40 MB of encodings at most.
ENCODE_CHARS = 1 << 20
# Texts from which OnnxComponent.encode hands a call to the tokenizers library's thread pool (encode_batch,
# unless TOKENIZERS_PARALLELISM turns the pool off); fewer are encoded one at a time on the calling thread.
# Measured side by side (bench/results/profile_runtime.md, 2 shared cores, int8 MiniLM, BANKING77): one by one
# was never slower below 1,024 texts (32 texts: 1.5 ms against 3.4 ms with the pool, which also slowed the
# session run after it, 255 against 236 ms), while on 4,096 texts the pool was 1.5x faster in one run and
# 1.2x slower in another, as a core happened to be free or not. Tokenizing is 1-1.5% of a prediction either way.
POOL_TEXTS = 1024


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options for a small CPU: fixed intra-op threads, no busy-waiting between runs, all graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or DEFAULT_THREADS)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Worker threads spin inside a run (measured here: batch-1 p50 1.05 ms against 1.87 ms with
    # spinning off, 2 threads, int8 MiniLM) but stop spinning when a run ends, so an idle server
    # burns no CPU between requests (measured: 0.00 CPU-s per idle second).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3  # errors only: graph-cleanup notices are not the user's business
    return options


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """A fast tokenizer with truncation at ``max_length`` and padding switched off (we pad per batch).

    The packaged MiniLM ``tokenizer.json`` pads every text to 128 tokens: left on, that costs 4-5x.
    """
    from tokenizers import Tokenizer

    file = path / "tokenizer.json" if path.is_dir() else path
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise BundleError(f"cannot read the tokenizer {file}: {str(exc).splitlines()[0]}") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def pad_id(tokenizer: Tokenizer) -> int:
    for token in ("[PAD]", "<pad>", "<PAD>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


class OnnxComponent:
    """Tokenizer + ONNX Runtime session for a bundle's ``onnx`` component spec."""

    def __init__(
        self,
        root: Path,
        spec: OnnxSpec | EncoderSpec,
        *,
        threads: int | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        """With ``manifest`` (a loaded bundle's) files are opened only through ``bundle_path``; without it
        (export, quantization and build steps on their own staging files) paths are joined to ``root`` as given.
        ``output_widths`` holds each output's last dimension where the graph declares it (else None)."""
        from slm.bundle.manifest import bundle_path

        root = Path(root)

        def locate(rel: str) -> Path:
            return root / rel if manifest is None else bundle_path(root, manifest, rel)

        self.max_length = int(spec.max_length)
        self.tokenizer = load_tokenizer(locate(spec.tokenizer), self.max_length)
        self.pad_id = pad_id(self.tokenizer)
        self.input_names: set[str] = set()
        self.output_widths: dict[str, int | None] = {}
        self.open_model(root, spec, locate, threads)

    def open_model(
        self, root: Path, spec: OnnxSpec | EncoderSpec, locate: Callable[[str], Path], threads: int | None
    ) -> None:
        """Load the graph and fill ``input_names`` and ``output_widths``: the one step another engine
        (slm.runtime.openvino) replaces, with :meth:`run_feeds`; tokenizing and batching stay shared.
        ``locate`` turns a bundle-relative name into a path (through ``bundle_path`` for a loaded bundle)."""
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(
                str(locate(spec.file)), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{root}: cannot load the ONNX model: {str(exc).splitlines()[0]}") from None
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_widths = {
            o.name: o.shape[-1] if o.shape and isinstance(o.shape[-1], int) else None
            for o in self.session.get_outputs()
        }

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, tokenized ENCODE_CHARS characters at a time.

        The tokenizer keeps a whole call's encodings, overflow included, until it returns (measured:
        64 texts of 51,300 characters held 124 MB), so a list of long texts is tokenized in slices;
        ordinary batches are one slice. Fewer than POOL_TEXTS texts are encoded one by one, without the
        tokenizer's thread pool.
        """
        if len(texts) < POOL_TEXTS:  # no thread pool: see POOL_TEXTS
            return [self.tokenizer.encode(text).ids for text in texts]
        ids: list[list[int]] = []
        start = 0
        while start < len(texts):
            end, chars = start, 0
            while end < len(texts) and (end == start or chars + len(texts[end]) <= ENCODE_CHARS):
                chars += len(texts[end])
                end += 1
            ids.extend(e.ids for e in self.tokenizer.encode_batch(texts[start:end]))
            start = end
        return ids

    def feeds(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        """The model's inputs for one batch of token id lists, padded to the longest."""
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return feeds

    def run(self, ids: list[list[int]], outputs: tuple[str, ...] = ("logits",)) -> list[np.ndarray]:
        """The named outputs (default: logits) for one batch of token id lists."""
        return self.run_feeds(self.feeds(ids), outputs)

    def run_feeds(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        """The named outputs for ready-made inputs (ONNX Runtime's session is safe to share between threads)."""
        values: list[np.ndarray] = self.session.run(list(outputs), feeds)
        return values

    def logits(self, texts: list[str], *, batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Raw logits ``(n, num_labels)``; texts are grouped by length so padding stays small."""
        return self.infer(texts, ("logits",), batch_size=batch_size, show_progress=show_progress)[0]

    def infer(
        self,
        texts: list[str],
        outputs: tuple[str, ...],
        *,
        batch_size: int = 32,
        show_progress: bool = False,
        description: str = "predicting",
    ) -> list[np.ndarray]:
        """Each named output ``(n, width)`` for ``texts``, grouped by length so padding stays small."""
        ids = self.encode(texts)
        order = np.argsort([len(row) for row in ids], kind="stable")
        out: list[np.ndarray] | None = None
        chunks: Iterable[slice] = length_chunks([len(ids[i]) for i in order], batch_size)
        if show_progress:
            from rich.progress import track

            from slm.console import console

            chunks = track(chunks, description=description, console=console, transient=True)
        for chunk in chunks:
            rows = order[chunk]
            values = self.run([ids[i] for i in rows], outputs)
            if out is None:
                out = [np.empty((len(ids), v.shape[1]), dtype=np.float32) for v in values]
            for target, value in zip(out, values, strict=True):
                target[rows] = value
        return out if out is not None else [np.zeros((0, 0), dtype=np.float32) for _ in outputs]


def length_chunks(lengths: list[int], batch_size: int, pad_budget: int = PAD_BUDGET_TOKENS) -> list[slice]:
    """Consecutive runs of ascending ``lengths``: at most ``batch_size`` each, and at most ``pad_budget``
    padding tokens each, since a padded token costs as much as a real one.

    On a CPU one run costs about as much as a dozen tokens (int8 MiniLM here: 0.6-0.7 ms fixed, then
    0.07 ms a token), so a text much longer than the rest of its batch is better run in a batch of
    its own. Measured on batches of 32 random BANKING77 test texts, 2 threads: 660 texts/s against
    280 for one padded run of 32.
    """
    chunks, start, total = [], 0, 0
    for i, length in enumerate(lengths):
        count = i - start
        if count and (count >= batch_size or (count + 1) * length - (total + length) > pad_budget):
            chunks.append(slice(start, i))
            start, total = i, 0
        total += length
    if start < len(lengths):
        chunks.append(slice(start, len(lengths)))
    return chunks
