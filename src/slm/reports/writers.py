"""Write an evaluation report as JSON, Markdown, self-contained HTML and a confusion-matrix PNG.

The content is built once as a list of neutral blocks, then rendered to Markdown and to HTML,
so both files always say the same thing. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from slm.fileio import write_bytes_atomic
from slm.reports.plots import plot_confusion

MAX_TEXT = 160
CONFUSION_PNG = "confusion.png"


# ----------------------------------------------------------------------------- blocks


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Quote:
    text: str
    kind: str = ""


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str = ""  # one of "l"/"r" per column; missing columns are left-aligned

    def col_align(self, i: int) -> str:
        return self.align[i] if i < len(self.align) else "l"


@dataclass
class Image:
    file_name: str
    alt: str
    data: bytes = field(default=b"", repr=False)


Block = Heading | Para | Quote | Bullets | Table | Image


# ----------------------------------------------------------------------------- formatting


def _is_num(v: Any) -> TypeGuard[int | float | np.number]:
    return isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(float(v))


def _pct(v: Any) -> str:
    return f"{float(v) * 100:.1f}%" if _is_num(v) else "—"


def _num(v: Any, digits: int = 3) -> str:
    return f"{float(v):.{digits}f}" if _is_num(v) else "—"


def _int(v: Any) -> str:
    return str(int(v)) if _is_num(v) else "—"


def _text(v: Any) -> str:
    """One line, at most MAX_TEXT characters."""
    s = " ".join(str(v).split())
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "…"


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> Sequence[Any]:
    return v if isinstance(v, list | tuple) else []


# ----------------------------------------------------------------------------- content


def _task(report: dict) -> str:
    task = report.get("task")
    if task in ("single_label", "multi_label"):
        return task
    for m in _dict(report.get("models")).values():
        if _dict(m).get("task") in ("single_label", "multi_label"):
            return m["task"]
        if "subset_accuracy" in _dict(m):
            return "multi_label"
    return "single_label"


def _shipped(report: dict) -> tuple[str | None, dict]:
    models = _dict(report.get("models"))
    name = report.get("shipped")
    if name not in models:
        name = next(iter(models), None)
    return name, _dict(models.get(name)) if name is not None else {}


def _label_names(metrics: dict, k: int) -> list[str]:
    names = _list(metrics.get("labels")) or list(_dict(metrics.get("per_class")))
    return [str(x) for x in names] if len(names) == k else [str(i) for i in range(k)]


_MODEL_COLUMNS = {
    "single_label": [
        ("Accuracy", "accuracy", _pct),
        ("Macro-F1", "macro_f1", _pct),
        ("Micro-F1", "micro_f1", _pct),
        ("Weighted-F1", "weighted_f1", _pct),
        ("ECE", "ece", _num),
        ("n", "n", _int),
    ],
    "multi_label": [
        ("Micro-F1", "micro_f1", _pct),
        ("Macro-F1", "macro_f1", _pct),
        ("Samples-F1", "samples_f1", _pct),
        ("Subset accuracy", "subset_accuracy", _pct),
        ("Hamming loss", "hamming_loss", lambda v: _num(v, 4)),
        ("ECE", "ece", _num),
        ("n", "n", _int),
    ],
}


def _models_blocks(report: dict, task: str) -> list[Block]:
    models = _dict(report.get("models"))
    if not models:
        return []
    shipped, _ = _shipped(report)
    cols = _MODEL_COLUMNS[task]
    rows = []
    for name, m in models.items():
        label = f"{name} (shipped)" if name == shipped else str(name)
        rows.append([label] + [fmt(_dict(m).get(key)) for _, key, fmt in cols])
    table = Table(["Model"] + [c[0] for c in cols], rows, "l" + "r" * len(cols))
    return [Heading("Models (test split)"), table]


def _recommendation_blocks(report: dict) -> list[Block]:
    rec = _dict(report.get("recommendation"))
    if not rec.get("message"):
        return []
    return [Quote(str(rec["message"]), kind=str(rec.get("verdict", "")))]


def _meta_blocks(report: dict, task: str) -> list[Block]:
    parts = [f"Task: {task.replace('_', '-')}"]
    shipped, _ = _shipped(report)
    if shipped:
        parts.append(f"Shipped model: {shipped}")
    if report.get("created"):
        parts.append(f"Created: {report['created']}")
    return [Para(" · ".join(parts))]


def _seconds(v: Any) -> str:
    if not _is_num(v):
        return "—"
    s = float(v)
    return f"{s:.1f} s" if s < 120 else f"{s:.0f} s ({s / 60:.1f} min)"


def _yes_no(v: Any) -> str:
    return "—" if v is None else ("yes" if v else "no")


def _base_model_reason(training: dict) -> str:
    """' (--base-model auto: texts are 97% Chinese (Han script))' when the model was chosen from the texts."""
    choice = _dict(training.get("base_model_choice"))
    return f" (--base-model auto: {choice['reason']})" if choice.get("reason") else ""


def _training_blocks(report: dict) -> list[Block]:
    tr, bl = _dict(report.get("training")), _dict(report.get("baseline"))
    if not tr and not bl:
        return []
    items = []
    if tr:
        items += [
            f"Base model: {tr.get('base_model') or '—'}{_base_model_reason(tr)}",
            f"Wall time: {_seconds(tr.get('wall_time_s'))}",
            f"Throughput: {_num(tr.get('examples_per_s'), 1)} examples/s",
            f"Epochs run: {_int(tr.get('epochs_run'))} (best epoch {_int(tr.get('best_epoch'))}, "
            f"stopped early: {_yes_no(tr.get('stopped_early'))})",
        ]
    if bl:
        items.append(f"N-gram baseline fit time: {_seconds(bl.get('fit_seconds'))}")
    blocks: list[Block] = [Heading("Training"), Bullets(items)]
    history = [_dict(h) for h in _list(tr.get("history"))]
    if history:
        rows = [
            [
                _int(h.get("epoch")),
                _num(h.get("train_loss"), 4),
                _pct(h.get("val_macro_f1")),
                _num(h.get("seconds"), 1),
            ]
            for h in history
        ]
        blocks.append(Table(["Epoch", "Train loss", "Val macro-F1", "Seconds"], rows, "rrrr"))
    return blocks


def _privacy_blocks(report: dict) -> list[Block]:
    """The differential-privacy guarantee as accounted (``slm train --dp-epsilon``), and what it does not cover."""
    pr = _dict(report.get("privacy"))
    if not pr:
        return []
    items = [
        f"Spent: epsilon {_num(pr.get('epsilon_spent'), 3)} at delta {pr.get('delta', '—'):.3g} "
        f"(target epsilon {_num(pr.get('epsilon_target'), 3)}; {pr.get('accountant', '—')} accountant)"
        if _is_num(pr.get("delta"))
        else f"Spent: epsilon {_num(pr.get('epsilon_spent'), 3)}",
        f"Recipe: {pr.get('recipe', '—')}; {_int(pr.get('steps'))} noisy steps, noise multiplier "
        f"{_num(pr.get('noise_multiplier'), 3)}, per-example clipping norm {_num(pr.get('max_grad_norm'), 3)}, "
        f"sample rate {_num(pr.get('sample_rate'), 4)}",
        "The n-gram baseline is scored for comparison only: it is not private and not in the bundle.",
    ]
    blocks: list[Block] = [Heading("Differential privacy"), Bullets(items)]
    uncovered = [str(x) for x in _list(pr.get("not_private"))]
    if uncovered:
        blocks += [Para("Not covered by the guarantee:"), Bullets(uncovered)]
    return blocks


def _dataset_blocks(report: dict) -> list[Block]:
    ds = _dict(report.get("dataset"))
    if not ds:
        return []
    items = []
    if ds.get("source"):
        items.append(f"Source: {ds['source']}")
    splits = _dict(ds.get("splits"))
    if splits:
        items.append("Splits: " + ", ".join(f"{k} {_int(v)}" for k, v in splits.items()))
    for key, value in ds.items():
        if key not in ("source", "splits", "warnings") and isinstance(value, str | int | float | bool):
            items.append(f"{key.replace('_', ' ').capitalize()}: {value}")
    blocks: list[Block] = [Heading("Dataset"), Bullets(items)] if items else [Heading("Dataset")]
    warnings = [str(w) for w in _list(ds.get("warnings"))]
    blocks += [Para("Warnings:"), Bullets(warnings)] if warnings else [Para("No dataset warnings.")]
    return blocks


def _per_class_blocks(report: dict, task: str) -> list[Block]:
    name, m = _shipped(report)
    per_class = _dict(m.get("per_class"))
    if not per_class:
        return []
    thresholds = _list(m.get("thresholds"))
    labels = _list(m.get("labels")) or list(per_class)
    threshold_of = dict(zip(labels, thresholds, strict=False)) if task == "multi_label" else {}

    def f1_key(item: tuple[str, Any]) -> tuple[float, str]:
        f1 = _dict(item[1]).get("f1")
        return (float(f1) if _is_num(f1) else -1.0, str(item[0]))

    headers = ["Label", "Precision", "Recall", "F1", "Support"] + (["Threshold"] if threshold_of else [])
    rows = []
    for label, s in sorted(per_class.items(), key=f1_key):
        s = _dict(s)
        row = [
            str(label),
            _pct(s.get("precision")),
            _pct(s.get("recall")),
            _pct(s.get("f1")),
            _int(s.get("support")),
        ]
        if threshold_of:
            row.append(_num(threshold_of.get(label), 2))
        rows.append(row)
    return [Heading(f"Per-class results: {name} (worst F1 first)"), Table(headers, rows, "lrrrrr")]


def _mistake_blocks(report: dict, task: str) -> list[Block]:
    name, m = _shipped(report)
    mistakes = [_dict(x) for x in _list(m.get("confident_mistakes"))]
    if not mistakes:
        return []
    if task == "multi_label":
        headers, align = ["Text", "Label", "Truth", "Probability"], "lllr"
        rows = [
            [
                _text(x.get("text", "—")),
                str(x.get("label", "—")),
                "positive" if x.get("truth") else "negative",
                _num(x.get("probability")),
            ]
            for x in mistakes
        ]
    else:
        headers, align = ["Text", "True", "Predicted", "Confidence"], "lllr"
        rows = [
            [
                _text(x.get("text", "—")),
                str(x.get("true", "—")),
                str(x.get("predicted", "—")),
                _num(x.get("confidence")),
            ]
            for x in mistakes
        ]
    return [Heading(f"Most confident mistakes: {name}"), Table(headers, rows, align)]


def _signed(v: Any) -> str:
    """Points with their sign (a minus sign, not a hyphen): '+1.2', '−3.4'."""
    if not _is_num(v):
        return "—"
    digits = 2 if 0 < abs(float(v)) < 0.05 else 1  # -0.04 is below the overall figure: not shown as 0.0
    return "0.0" if float(v) == 0 else f"{float(v):+.{digits}f}".replace("-", "\u2212")


_SLICE_KINDS = {"length": "Length", "tokens": "Transformer input", "label_frequency": "Label frequency"}


def _robustness_intro(rob: dict, metric: str) -> Para:
    sample = _dict(rob.get("sample"))
    source = rob.get("label_counts_source") or "training"
    return Para(
        f"{metric} on a seeded sample of {_int(sample.get('n'))} of {_int(sample.get('of'))} texts "
        f"(seed {sample.get('seed', '—')}; {rob.get('script', '—')} text), clean and under each perturbation; "
        f"drop = clean − perturbed, in points. Slices cover every text: gap = slice − overall, in points; "
        f"label frequency by {source} label counts. Took {_seconds(rob.get('seconds'))}."
    )


def _perturbation_table(rob: dict, models: dict, metric: str) -> Table:
    headers = ["Perturbation", "Texts changed"]
    for name in models:
        headers += [f"{name} {metric.lower()}", f"{name} drop"]
    rows = [["clean", "—"] + [c for m in models.values() for c in (_pct(_dict(m).get("clean")), "—")]]
    for name, info in _dict(rob.get("perturbations")).items():
        row = [f"{name}: {_dict(info).get('description', '')}", _int(_dict(info).get("changed"))]
        for m in models.values():
            result = _dict(_dict(_dict(m).get("perturbations")).get(name))
            row += [_pct(result.get("score")), _signed(result.get("drop_points"))]
        rows.append(row)
    return Table(headers, rows, "lr" + "rr" * len(models))


def _slice_table(models: dict, metric: str) -> Table | None:
    first = _dict(next(iter(models.values()), {}))
    headers = ["Slice", "n"]
    for name in models:
        headers += [f"{name} {metric.lower()}", f"{name} gap"]
    rows = []
    for kind, label in _SLICE_KINDS.items():
        for i, s in enumerate(_list(_dict(first.get("slices")).get(kind))):
            row = [f"{label}: {_dict(s).get('name', '—')}", _int(_dict(s).get("n"))]
            for m in models.values():
                same = _list(_dict(_dict(m).get("slices")).get(kind))
                other = _dict(same[i]) if i < len(same) else {}
                row += [_pct(other.get("score")), _signed(other.get("gap_points"))]
            rows.append(row)
    return Table(headers, rows, "lr" + "rr" * len(models)) if rows else None


def _worst_slice_items(rob: dict, models: dict) -> list[str]:
    items = []
    for name, m in models.items():
        worst = [_dict(w) for w in _list(_dict(m).get("worst_slices"))]
        listed = "; ".join(
            f"{_SLICE_KINDS.get(str(w.get('slice')), w.get('slice'))} {w.get('name', '—')} "
            f"(n={_int(w.get('n'))}): {_pct(w.get('score'))} ({_signed(w.get('gap_points'))})"
            for w in worst
        )
        none = f"no slice of {_int(rob.get('min_slice'))} or more texts below the overall figure"
        items.append(f"{name}: {listed or none}")
    return items


def _robustness_blocks(report: dict) -> list[Block]:
    """Scores under perturbations, per-slice scores and the worst slices, models side by side."""
    rob = _dict(report.get("robustness"))
    models = {str(k): v for k, v in _dict(rob.get("models")).items()}
    if not models:
        return []
    metric = "Micro-F1" if rob.get("metric") == "micro_f1" else "Accuracy"
    blocks: list[Block] = [Heading("Robustness"), _robustness_intro(rob, metric)]
    blocks.append(_perturbation_table(rob, models, metric))
    slices = _slice_table(models, metric)
    if slices is not None:
        blocks += [Heading("Slices", 3), slices]
    blocks += [Heading("Worst slices", 3), Bullets(_worst_slice_items(rob, models))]
    notes = [str(n) for n in _list(rob.get("notes"))]
    return blocks + ([Para("Notes:"), Bullets(notes)] if notes else [])


_ENV_NAMES = {
    "load_average": "Load average",
    "threads": "Threads",
    "python": "Python",
    "torch": "torch",
    "transformers": "transformers",
}


def _environment_blocks(report: dict) -> list[Block]:
    env = _dict(report.get("environment"))
    if not env:
        return []
    items = []
    for key, value in env.items():
        if isinstance(value, list | tuple):
            value = ", ".join(_num(v, 2) if _is_num(v) else str(v) for v in value)
        items.append(f"{_ENV_NAMES.get(key, key)}: {value}")
    return [Heading("Environment"), Bullets(items)]


def build_blocks(report: dict, confusion_png: bytes | None = None) -> list[Block]:
    """The report's content, in reading order."""
    task = _task(report)
    blocks: list[Block] = [Heading(str(report.get("title") or "slm evaluation report"), 1)]
    blocks += _recommendation_blocks(report)
    blocks += _meta_blocks(report, task)
    blocks += _models_blocks(report, task)
    blocks += _training_blocks(report)
    blocks += _privacy_blocks(report)
    blocks += _dataset_blocks(report)
    blocks += _robustness_blocks(report)
    blocks += _per_class_blocks(report, task)
    if confusion_png:
        blocks += [
            Heading("Confusion matrix (row-normalised)"),
            Image(CONFUSION_PNG, "Confusion matrix", confusion_png),
        ]
    blocks += _mistake_blocks(report, task)
    blocks += _environment_blocks(report)
    return blocks


# ----------------------------------------------------------------------------- markdown


def _md_inline(s: str) -> str:
    """Keep user text from turning into HTML or breaking the line structure."""
    return " ".join(str(s).split()).replace("<", "&lt;")


def _md_cell(s: str) -> str:
    return _md_inline(s).replace("\\", "\\\\").replace("|", "\\|")


def _md_table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in t.headers) + " |",
        "|" + "|".join("---:" if t.col_align(i) == "r" else "---" for i in range(len(t.headers))) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def render_markdown(blocks: list[Block]) -> str:
    """Blocks as GitHub-flavoured Markdown."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + _md_inline(b.text))
        elif isinstance(b, Para):
            out.append(_md_inline(b.text))
        elif isinstance(b, Quote):
            out.append("> " + _md_inline(b.text))
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + _md_inline(i) for i in b.items))
        elif isinstance(b, Table):
            out.append(_md_table(b))
        elif isinstance(b, Image):
            out.append(f"![{_md_inline(b.alt)}]({b.file_name})")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;
padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.7rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
blockquote{margin:1rem 0;padding:.8rem 1rem;border-left:5px solid #0969da;background:#f6f8fa}
blockquote.baseline{border-color:#bf8700}blockquote.transformer{border-color:#1a7f37}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;vertical-align:top}
th{background:#f6f8fa}td.r,th.r{text-align:right}td.l{max-width:38rem;overflow-wrap:anywhere}
img{max-width:100%;height:auto}
"""


def _h(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_table(t: Table) -> str:
    head = "".join(f'<th class="{t.col_align(i)}">{_h(c)}</th>' for i, c in enumerate(t.headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{t.col_align(i)}">{_h(c)}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in t.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_block(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{_h(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p>{_h(b.text)}</p>"
    if isinstance(b, Quote):
        return f'<blockquote class="{_h(b.kind)}">{_h(b.text)}</blockquote>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_h(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _html_table(b)
    if isinstance(b, Image) and b.data:
        data = base64.b64encode(b.data).decode("ascii")
        return f'<img alt="{_h(b.alt)}" src="data:image/png;base64,{data}">'
    return ""


def render_html(blocks: list[Block], title: str) -> str:
    """Blocks as one self-contained HTML page (inline CSS, embedded images)."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_h(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- files


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy converted, non-finite floats as null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def _write_confusion(report: dict, out_dir: Path) -> Path | None:
    name, metrics = _shipped(report)
    cm = _list(metrics.get("confusion_matrix"))
    if not cm:
        return None
    title = f"{report.get('title') or 'Confusion matrix'}: {name}"
    return plot_confusion(cm, _label_names(metrics, len(cm)), out_dir / CONFUSION_PNG, title)


def write_report(report: dict, out_dir: Path) -> list[Path]:
    """Write report.json, report.md, report.html (and confusion.png when available) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = _write_confusion(report, out_dir)
    blocks = build_blocks(report, png.read_bytes() if png else None)
    title = str(report.get("title") or "slm evaluation report")
    written = [
        write_bytes_atomic(
            out_dir / "report.json",
            json.dumps(_jsonable(report), indent=2, ensure_ascii=False).encode("utf-8"),
        ),
        write_bytes_atomic(out_dir / "report.md", render_markdown(blocks).encode("utf-8")),
        write_bytes_atomic(out_dir / "report.html", render_html(blocks, title).encode("utf-8")),
    ]
    return written + ([png] if png else [])
