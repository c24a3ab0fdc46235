"""``export_web``: a bundle as a static web folder that classifies in the browser (``slm export --target web``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slm.api.compressing import default_output, read_texts_of
from slm.fileio import claim_output_folder

if TYPE_CHECKING:
    from slm.compression.web import WebExport


def export_web(
    bundle: str | Path,
    output: str | Path | None = None,
    *,
    data: str | Path | None = None,
    text_col: str | None = None,
    tolerance: float = 1e-3,
    force: bool = False,
    cache: str | Path | None = None,
) -> WebExport:
    """Write a static folder (``index.html``, ``slm-classifier.mjs``, the model, the tokenizer, the vendored
    onnxruntime-web and tokenizer) that classifies text in the browser with no server.

    ``bundle``: an ONNX bundle (``slm export``; int8 from ``slm compress --quantize int8`` is 4x smaller) or the
    static tier (``slm compress --static``, exported as plain JavaScript). The npm packages are fetched once with
    ``npm ci`` into ``cache`` (default ``$SLM_CACHE/web-runtime``); node and npm must be installed. The folder is
    refused unless the page's JavaScript, run in node on ``data``'s texts (default: a sample of the training
    file), reproduces the Python tokenizer's ids exactly and slm.runtime's probabilities within ``tolerance``.
    ``output`` defaults to ``BUNDLE-web``; a folder there holding files slm did not write is refused, or with
    ``force`` moved aside.
    """
    from slm.compression.web import export_web_folder

    target = Path(output) if output is not None else default_output(bundle, "web")
    claim_output_folder(target, force=force)
    texts = read_texts_of(data, text_col)
    return export_web_folder(bundle, target, texts=texts, tolerance=tolerance, cache=cache)
