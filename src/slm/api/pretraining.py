"""``pretrain``: continue a base model's pre-training on unlabelled domain text (:mod:`slm.training.pretrain`)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slm.errors import DataError
from slm.fileio import atomic_directory, claim_output_folder
from slm.logs import quiet_transformers

if TYPE_CHECKING:
    from slm.models.registry import ResolvedModel
    from slm.training.pretrain_config import PretrainConfig, PretrainResult

log = logging.getLogger(__name__)

# Texts kept from the corpus (a uniform sample of larger ones). 8 minutes on 2 cores read ~15,000 texts (fin_tweets:
# 484 steps of 32), so 100,000 is hours of pre-training, and the cap bounds memory whatever the corpus size: at most
# 100,000 texts of TEXT_CHARS characters, then 100,000 x max_length token ids.
MAX_TEXTS = 100_000
# Characters kept of a text: more than 512 tokens of English or Chinese.
TEXT_CHARS = 4096
RECORD = "slm_pretrain.json"


def sample_corpus(
    paths: Sequence[str | Path], text_col: str | None, *, limit: int = MAX_TEXTS, seed: int = 42
) -> list[str]:
    """The non-blank texts of one or more files, streamed; a uniform sample of ``limit`` when there are more.

    Reservoir sampling (Algorithm R) over the files in turn keeps memory at ``limit`` texts.
    """
    from slm.data.stream import open_table

    rng = random.Random(seed)
    kept: list[str] = []
    seen = 0
    for path in paths:
        table = open_table(path, text_col)
        try:
            for text in (t.strip()[:TEXT_CHARS] for chunk in table.chunks() for t in chunk.texts):
                if not text:
                    continue
                seen += 1
                if len(kept) < limit:
                    kept.append(text)
                elif (slot := rng.randrange(seen)) < limit:
                    kept[slot] = text
        finally:
            table.close()
    if len(kept) < 20:
        names = ", ".join(str(p) for p in paths)
        raise DataError(f"{names}: {len(kept)} non-blank texts; pre-training needs at least 20 (thousands help)")
    if seen > limit:
        log.info(f"corpus: {seen:,} texts; pre-training reads a uniform sample of {limit:,}")
    return kept


def pretrain(
    corpus: str | Path | Sequence[str | Path],
    *,
    output: str | Path,
    base_model: str = "auto",
    text_col: str | None = None,
    config: PretrainConfig | None = None,
    show_progress: bool = True,
    force: bool = False,
) -> PretrainResult:
    """Continue pre-training ``base_model`` on unlabelled in-domain texts; write a base-model directory.

    ``corpus``: one or more CSV/TSV/JSONL/Parquet files (labelled training files work: only their text
    column is read). ``base_model``: a registry name, a local model directory or a hub id; "auto" chooses
    from the corpus's language as ``slm train`` does. The directory at ``output`` (model, tokenizer and
    ``slm_pretrain.json``) is written atomically and is what ``slm train --base-model OUTPUT`` reads. A
    folder there holding files slm did not write is refused, or with ``force`` moved aside.
    """
    from slm.training.pretrain_config import PretrainConfig

    config = config or PretrainConfig()
    paths = [corpus] if isinstance(corpus, str | Path) else list(corpus)
    if not paths:
        raise DataError("no corpus file given")
    output = Path(output)
    claim_output_folder(output, force=force)
    texts = sample_corpus(paths, text_col, seed=config.seed)
    resolved = _resolve(base_model, texts, config.seed)
    quiet_transformers()
    from slm.training.pretrain import pretrain_model

    with atomic_directory(output) as staging:
        result = pretrain_model(
            texts, resolved.path, staging, config, base_name=resolved.name, show_progress=show_progress
        )
        (staging / RECORD).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    log.info(f"base model written: {output} (use it with slm train --base-model {output})")
    return result


def _resolve(base_model: str, texts: list[str], seed: int) -> ResolvedModel:
    from slm.models.auto import AUTO, check_installed, choose_base_model
    from slm.models.registry import resolve_base_model

    if base_model == AUTO:
        choice = choose_base_model(texts, seed=seed)
        check_installed(choice)
        log.info(choice.message())
        base_model = choice.base_model
    return resolve_base_model(base_model)
