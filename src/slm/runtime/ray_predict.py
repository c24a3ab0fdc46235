"""Batch prediction on a Ray cluster (``slm predict ... --engine ray``).

Ray Data reads the input files in parallel, a pool of actors (one bundle load each, ONNX Runtime, no
PyTorch) labels batches with :meth:`slm.bundle.Bundle.predict_proba`, and Ray writes one output shard
per block. Ray re-runs the work of a worker that dies (actor restarts and task retries), and every
shard's name comes from its write task, so a retried write overwrites its own file: the output holds
every input row exactly once. Shards are written into a staging folder beside the output, counted
against the input, listed with their sha256 in ``_manifest.json`` and only then moved into place; a
failed job leaves the previous output untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm.errors import ConfigError, DataError, one_line
from slm.runtime.ray_cluster import connect, import_ray

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyarrow import csv as arrow_csv
    from ray.data import Dataset

MANIFEST = "_manifest.json"  # "_" first: Parquet and Arrow readers of the folder skip it
KIND = "slm.predictions"
INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = ("parquet", "jsonl", "csv", "tsv")
SHARD_SUFFIX = {"parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}
SAMPLE_ROWS = 2000


@dataclass(frozen=True)
class RayPredictConfig:
    """How the job runs: ``actors`` model copies of ``threads`` ONNX Runtime threads each."""

    address: str | None = None  # None: start a local Ray; "auto" or "ray://head:10001": join a cluster
    actors: int | None = None  # default: the cluster's CPUs // threads
    threads: int = 1
    batch_size: int = 1024
    component: str | None = None
    text_col: str | None = None
    output_format: str | None = None  # default: from the output folder's suffix, else parquet
    show_progress: bool = True
    force: bool = False  # an -o folder holding files slm did not write is moved aside (never deleted), not refused
    raw_csv: bool = False  # CSV/TSV shards: keep cells that start like a spreadsheet formula as they are

    def validated(self) -> RayPredictConfig:
        for name in ("threads", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"--actors must be at least 1, got {self.actors}")
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"unknown output format '{self.output_format}': choose from {', '.join(OUTPUT_FORMATS)}")
        return self


def input_files(path: Path) -> tuple[list[Path], str]:
    """The input files (one file, or every data file of a folder of shards) and their shared format."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in INPUT_FORMATS)
        if not files:
            raise DataError(f"{path}: the folder holds no {', '.join(sorted(set(INPUT_FORMATS)))} file")
    else:
        files = [path]
    found = {INPUT_FORMATS.get(p.suffix.lower()) for p in files}
    if None in found:
        raise DataError(f"{path}: unknown file type; use {', '.join(sorted(set(INPUT_FORMATS)))}")
    formats = {f for f in found if f is not None}
    if len(formats) > 1:
        raise DataError(f"{path}: the folder mixes formats ({', '.join(sorted(formats))}); keep one per folder")
    empty = [p for p in files if p.stat().st_size == 0]
    if empty:
        raise DataError(f"{empty[0]}: the file is empty")
    return files, formats.pop()


def output_format(output: Path, chosen: str | None) -> str:
    """``chosen``, else the output folder's suffix (``labelled.jsonl/``), else Parquet."""
    if chosen:
        return chosen
    return INPUT_FORMATS.get(output.suffix.lower(), "parquet") if output.suffix else "parquet"


def check_output(output: Path, *, force: bool = False) -> None:
    """Refuse to replace anything but an earlier slm output (``force``: move such a folder aside)."""
    from slm.fileio import claim_output_folder

    if output.is_file():
        raise ConfigError(f"{output} is a file; with --engine ray, -o names a folder of shards")
    claim_output_folder(output, force=force)


def _csv_options(fmt: str) -> arrow_csv.ParseOptions:
    """How Arrow parses the CSV/TSV inputs and shards: the same options for reading, sampling and counting."""
    from pyarrow import csv

    return csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)


def _read(files: list[Path], fmt: str, blocks: int | None = None) -> Dataset:
    """A Ray dataset over ``files`` in about ``blocks`` blocks (Ray splits a file's rows when there are
    fewer files), so every actor gets work. Read tasks reserve no CPU: they never wait for the actors.
    """
    import ray.data

    paths = [str(p.resolve()) for p in files]
    options: dict[str, Any] = {"num_cpus": 0, "override_num_blocks": blocks, "file_extensions": None}  # chosen here
    if fmt == "parquet":
        return ray.data.read_parquet(paths, **options)
    if fmt == "jsonl":
        return ray.data.read_json(paths, lines=True, **options)

    parse = _csv_options(fmt)
    return ray.data.read_csv(paths, parse_options=parse, **options)


def _sample(files: list[Path], fmt: str) -> pd.DataFrame:
    """The first rows of the first file, read here with the same Arrow readers Ray uses (no Ray job)."""
    import pandas as pd

    first = files[0]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(first).iter_batches(batch_size=SAMPLE_ROWS), None)
        return batch.to_pandas() if batch is not None else pd.DataFrame()
    if fmt == "jsonl":
        return pd.read_json(first, lines=True, nrows=SAMPLE_ROWS)
    from pyarrow import csv

    parse = _csv_options(fmt)
    with csv.open_csv(first, parse_options=parse) as reader:
        frame: pd.DataFrame = reader.read_next_batch().to_pandas()
        return frame


def _text_column(sample: pd.DataFrame, path: Path, text_col: str | None) -> str:
    """The text column, chosen from a sample exactly as local ``slm predict`` chooses it."""
    from slm.data.loading import _detect_text_col, _find_column

    if text_col is not None:
        return _find_column(path, [str(c) for c in sample.columns], text_col, "text")
    return _detect_text_col(path, sample, set())


class Predictor:
    """One Ray actor: loads the bundle once, then labels Arrow batches (columnar, no per-row Python dicts)."""

    def __init__(self, bundle: str, component: str | None, threads: int, text_col: str, names: tuple[str, ...],
                 fmt: str, raw_csv: bool = False) -> None:  # fmt: skip
        from slm.runtime.bundle import Bundle

        # One actor per core already fills the machine: tokenizer threads would only contend with it. (Set
        # here, not in a runtime_env: that would make Ray start fresh worker processes for the actors.)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.model = Bundle(bundle, backend="onnx", threads=threads)
        self.component, self.text_col, self.names, self.fmt = component, text_col, names, fmt
        self.neutralise = fmt in ("csv", "tsv") and not raw_csv
        self.thresholds = self.model.thresholds(component) if self.model.multi_label else None

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import numpy as np
        import pyarrow as pa

        from slm.data.loading import cell_text

        texts = [cell_text(v) for v in batch.column(self.text_col).to_pylist()]
        proba = self.model.predict_proba(texts, component=self.component, batch_size=64)
        labels = np.asarray(self.model.labels, dtype=object)
        if self.thresholds is None:
            chosen = pa.array(labels[proba.argmax(axis=1)].tolist(), type=pa.string())
        else:
            chosen = pa.array([labels[row >= self.thresholds].tolist() for row in proba], type=pa.list_(pa.string()))
        scores = pa.array(np.round(proba.max(axis=1).astype(np.float64), 6))
        rounded = np.round(proba.astype(np.float64), 6)
        if self.fmt in ("csv", "tsv"):  # CSV cells hold JSON, as in local 'slm predict'
            keys = self.model.labels
            probs = pa.array([json.dumps(dict(zip(keys, row, strict=True)), ensure_ascii=False)
                              for row in rounded.tolist()])  # fmt: skip
            if self.thresholds is not None:
                chosen = pa.array([json.dumps(v, ensure_ascii=False) for v in chosen.to_pylist()])
        else:  # a struct with one field per label: an object in JSON lines, named columns in Parquet
            probs = pa.StructArray.from_arrays([pa.array(rounded[:, j]) for j in range(proba.shape[1])],
                                               names=self.model.labels)  # fmt: skip
        label, score, prob = self.names
        out = batch.append_column(label, chosen).append_column(score, scores).append_column(prob, probs)
        return _neutralised(out) if self.neutralise else out


def _neutralised(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Text columns with spreadsheet formulas neutralised, as local ``slm predict`` writes CSV/TSV."""
    import pyarrow as pa

    from slm.cells import neutralise_formula

    for index, column in enumerate(batch.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = [None if v is None else neutralise_formula(v) for v in column.to_pylist()]
            batch = batch.set_column(index, batch.schema.field(index), pa.array(values, type=column.type))
    return batch


def _write(dataset: Dataset, folder: Path, fmt: str) -> None:
    """One shard per block. Write tasks take a CPU like any Ray task: while the actors hold every CPU, the
    labelled blocks wait in Ray's object store (spilled to disk when it fills) and are written as actors
    finish. Zero-CPU write tasks would run at once, but then Ray starts a fresh worker process for
    nearly every block (about 2 CPU-seconds each), because it reaps idle workers above the CPU count."""
    remote: dict[str, Any] = {}
    if fmt == "parquet":
        dataset.write_parquet(str(folder), **remote)
    elif fmt == "jsonl":
        dataset.write_json(str(folder), force_ascii=False, **remote)
    else:
        from pyarrow import csv

        options = csv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
        dataset.write_csv(str(folder), arrow_csv_args={"write_options": options}, **remote)


def shard_rows(path: Path, fmt: str) -> int:
    """Rows in one written shard."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows: int = pq.ParquetFile(path).metadata.num_rows
        return rows
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    from pyarrow import csv

    parse = _csv_options(fmt)
    rows = csv.read_csv(path, parse_options=parse).num_rows
    return rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _name_shards(folder: Path, fmt: str) -> list[dict[str, Any]]:
    """Rename Ray's ``<dataset>_<write>_<task>`` files to ``part-00000``... in dataset order; describe them."""
    suffix = SHARD_SUFFIX[fmt]
    written = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    shards = []
    for index, path in enumerate(written):
        target = folder / f"part-{index:05d}{suffix}"
        os.replace(path, target)
        shards.append({"file": target.name, "rows": shard_rows(target, fmt), "sha256": _sha256(target)})
    return shards


def _cause(exc: BaseException) -> str:
    """The first line of what went wrong in a Ray task, without Ray's traceback."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}" if len(text) > 1 else one_line(cause)


def predict_on_ray(bundle: str | Path, source: str | Path, output: str | Path,
                   config: RayPredictConfig | None = None) -> dict[str, Any]:  # fmt: skip
    """Label every row of ``source`` (a file or a folder of shards) into the folder ``output``.

    Returns the output manifest (also written as ``output/_manifest.json``).
    """
    from slm.fileio import atomic_directory, write_json_atomic
    from slm.runtime.bundle import Bundle

    config = (config or RayPredictConfig()).validated()
    bundle, source, output = Path(bundle).resolve(), Path(source), Path(output)
    model = Bundle(bundle)  # verifies the files and refuses non-classifiers, before Ray starts
    component = model._check_component(config.component)
    if component in ("ensemble", "transformer") and model.manifest.components.onnx is None:
        raise ConfigError(f"{bundle} has no ONNX model; --engine ray predicts with ONNX Runtime: "
                          f"run 'slm export {bundle} OUT' and predict with OUT")  # fmt: skip
    files, in_fmt = input_files(source)
    fmt = output_format(output, config.output_format)
    if config.raw_csv and fmt not in ("csv", "tsv"):
        raise ConfigError(f"--raw-csv applies to CSV and TSV shards only (these would be {fmt})")
    check_output(output, force=config.force)
    try:
        sample = _sample(files, in_fmt)
    except Exception as exc:  # pyarrow's and pandas' parse errors: a bad file, not a bug
        raise DataError(f"{files[0]}: cannot read it ({one_line(exc)})") from None
    text_col = _text_column(sample, source, config.text_col)
    existing = [str(c) for c in sample.columns]
    names = ("label", "score", "probabilities")
    if any(n in existing for n in names):
        names = ("predicted_label", "predicted_score", "predicted_probabilities")
    ray = import_ray("data")
    connect(ray, config.address)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = config.show_progress
    context.print_on_execution_start = False
    started = time.perf_counter()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = config.actors or max(1, cpus // config.threads)
    dataset = _read(files, in_fmt, blocks=max(len(files), 8 * actors))
    predicted = dataset.map_batches(
        Predictor,
        fn_constructor_args=(str(bundle), component, config.threads, text_col, names, fmt, config.raw_csv),
        batch_size=config.batch_size,
        batch_format="pyarrow",
        udf_modifying_row_count=False,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=config.threads,
    )
    with atomic_directory(output) as staging:
        try:
            _write(predicted, staging, fmt)
            expected = _read(files, in_fmt).count()
        except ray.exceptions.RayError as exc:  # a bad row in a later file, a lost cluster: one line
            raise DataError(f"the Ray job failed: {_cause(exc)}") from None
        shards = _name_shards(staging, fmt)
        rows = sum(s["rows"] for s in shards)
        if rows != expected:
            raise DataError(f"the output holds {rows} rows but the input has {expected}; nothing was written")
        manifest = {
            "kind": KIND,
            "bundle": {"path": str(bundle), "task": model.task, "labels": len(model.labels),
                       "manifest_sha256": _sha256(bundle / "manifest.json")},
            "input": {"path": str(source.resolve()), "files": [p.name for p in files], "format": in_fmt,
                      "text_col": text_col},
            "component": component,
            "columns": {"label": names[0], "score": names[1], "probabilities": names[2]},
            "format": fmt,
            "rows": rows,
            "shards": shards,
            "engine": {"name": "ray", "version": ray.__version__, "address": config.address or "local",
                       "actors": actors, "threads_per_actor": config.threads, "batch_size": config.batch_size,
                       "cluster_cpus": cpus},
            "seconds": round(time.perf_counter() - started, 2),
        }  # fmt: skip
        write_json_atomic(staging / MANIFEST, manifest)
    return manifest
