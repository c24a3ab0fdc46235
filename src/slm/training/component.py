"""The transformer part of a bundle, run with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from slm.bundle.manifest import bundle_path
from slm.bundle.schema import Manifest, TransformerSpec
from slm.errors import BundleError
from slm.models.encoder import classifier_from_config
from slm.training.batching import encode_texts
from slm.training.trainer import predict_logits


class TransformerComponent:
    """Tokenizer + EncoderClassifier restored from bundle files.

    With ``manifest`` (a loaded bundle's) every path goes through :func:`bundle_path`; without it
    (export and compression steps on their own staging folders) paths are joined to ``root`` as given.
    """

    def __init__(self, root: Path, spec: TransformerSpec, num_labels: int, *, manifest: Manifest | None = None) -> None:
        def locate(rel: str) -> Path:
            return Path(root) / rel if manifest is None else bundle_path(root, manifest, rel)

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(locate(spec.tokenizer))
            config = AutoConfig.from_pretrained(locate(spec.config))
            state = load_file(str(locate(spec.weights)))
            head = state.get("head.weight")
            if head is not None and head.shape[0] != num_labels:
                raise BundleError(
                    f"{root}: the PyTorch model has {head.shape[0]} outputs but the manifest lists {num_labels} "
                    "labels: the manifest does not belong to this model (restore the bundle or rebuild it)"
                )
            self.model = classifier_from_config(config, num_labels)
            self.model.load_state_dict(state)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BundleError(f"{root}: cannot load the transformer: {first}") from None
        self.model.eval()
        self.max_length = int(spec.max_length)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)

    def logits(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Raw logits ``(n, num_labels)``."""
        encoded = encode_texts(self.tokenizer, texts, self.max_length)
        with torch.inference_mode():
            return predict_logits(self.model, encoded, self.pad_id, batch_size=batch_size, show_progress=show_progress)
