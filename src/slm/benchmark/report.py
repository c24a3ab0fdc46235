"""The benchmark's Markdown table, its accuracy-vs-latency plot and the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from rich.markup import escape
from rich.table import Table

from slm.fileio import write_bytes_atomic


def _valid(value: float | None) -> TypeGuard[float]:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the points no other point dominates, by increasing x.

    x is a cost (latency: lower is better), y a score (accuracy: higher is better). A point is
    dominated when another is at least as good on both and strictly better on one; points with a
    missing coordinate are never on the front.
    """
    valid = [(i, x, y) for i, (x, y) in enumerate(points) if _valid(x) and _valid(y)]
    front = []
    for i, xi, yi in valid:
        dominated = any(xj <= xi and yj >= yi and (xj < xi or yj > yi) for j, xj, yj in valid if j != i)
        if not dominated:
            front.append((i, xi, yi))
    return [i for i, _, _ in sorted(front, key=lambda point: (point[1], -point[2]))]


# ---------------------------------------------------------------- Markdown


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if not _valid(value) else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if not _valid(value) else f"{100 * value:.2f}%"


def _times(value: float | None) -> str:
    return "–" if not _valid(value) else f"{value:.2f}×"


def _versus(ratio: dict | None) -> str:
    if not ratio:
        return "–"
    p50, b32, size = (_times(ratio.get(k)) for k in ("p50_short_ms", "texts_per_s", "size_mb"))
    return f"p50 {p50} · b32 {b32} · size {size}"


COLUMNS = (
    ("size MB", "size_mb", 1),
    ("load s", "load_s", 2),
    ("peak RSS MB", "peak_rss_mb", 0),
    ("p50 short ms", "p50_short_ms", 2),
    ("p95 short ms", "p95_short_ms", 2),
    ("p50 64-tok ms", "p50_long_ms", 2),
    ("p95 64-tok ms", "p95_long_ms", 2),
    ("batch-32 texts/s", "texts_per_s", 1),
)
RATIO_COLUMNS = (
    ("size", "size_mb"),
    ("load", "load_s"),
    ("peak RSS", "peak_rss_mb"),
    ("p50 short", "p50_short_ms"),
    ("p95 short", "p95_short_ms"),
    ("p50 64-tok", "p50_long_ms"),
    ("p95 64-tok", "p95_long_ms"),
    ("batch-32 texts/s", "texts_per_s"),
)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: dict) -> str:
    """The results as Markdown: the main table, ratio tables, then how it was measured."""
    env, data, settings = results["environment"], results["data"], results["settings"]
    rows = results["variants"]
    batch = settings["batch_size"]
    lines = [
        f"# {results['title']}",
        "",
        f"{env['cpu']['model']} ({env['cpu']['logical_cpus']} logical CPUs; {', '.join(env['cpu']['flags'])}), "
        f"{settings['threads']} threads per variant, {settings['rounds']} interleaved rounds; load average "
        f"{env['load_average_start']} at start, {env['load_average_end']} at end; {results['started']}.",
        "",
    ]
    header = ["variant", *(label.replace("batch-32", f"batch-{batch}") for label, _, _ in COLUMNS), "accuracy",
              "agreement", "vs PyTorch fp32", "vs Optimum int8"]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        name = _cell(row["name"]) + (" ★" if row.get("pareto") else "")
        if not row["ok"]:
            lines.append(f"| {name} | failed: {_cell(row['error'])} |" + " |" * (len(header) - 2))
            continue
        s, r = row["summary"], row.get("ratios") or {}
        cells = [_num(s[key], digits) for _, key, digits in COLUMNS]
        cells += [_pct(s["accuracy"]), _pct(s["agreement"]), _versus(r.get("vs_torch_fp32")),
                  _versus(r.get("vs_optimum_int8"))]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f'★ on the Pareto front of {data["accuracy_axis"]} vs p50 short latency. Ratios are "times better" '
        "(> 1 is better: reference/variant for sizes and times, variant/reference for texts/s).",
    ]
    for label, title in (("vs_torch_fp32", "PyTorch fp32"), ("vs_optimum_int8", "Optimum ORT dynamic int8")):
        present = [row for row in rows if row["ok"] and (row.get("ratios") or {}).get(label)]
        if not present:
            continue
        head = ["variant", *(c.replace("batch-32", f"batch-{batch}") for c, _ in RATIO_COLUMNS), "accuracy Δ pts"]
        lines += ["", f"## Times better than {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in present:
            ratio = row["ratios"][label]
            cells = [_times(ratio.get(key)) for _, key in RATIO_COLUMNS]
            delta = ratio.get("accuracy_delta_points")
            cells.append("–" if delta is None else f"{delta:+.2f}")
            lines.append(f"| {_cell(row['name'])} | " + " | ".join(cells) + " |")
    lines += ["", "## How this was measured", ""]
    lines += [
        f"- Data: {data['source'] or 'built-in sample texts (no labels)'}; {data['n_eval']} texts for accuracy "
        f"and agreement (argmax vs {results['reference'] or 'no PyTorch fp32 reference'}).",
        f"- Latency: batch 1, {settings['latency_texts']} texts per round and variant; short texts average "
        f"{data['short_tokens_mean']} tokens, the 64-token texts (real texts joined) {data['long_tokens_mean']}.",
        f"- Throughput: {settings['throughput_texts']} texts (avg {data['throughput_tokens_mean']} tokens) in "
        f"consecutive batches of {batch}, one call per batch; median over rounds.",
        f"- Load: process start to model ready, median of {settings['load_rounds']} fresh processes per variant. "
        "Peak RSS: ru_maxrss of the variant's worker after loading and predicting every text.",
        f"- Interleaving: {settings['interleaving']}.",
    ]
    for row in rows:
        engine = row.get("engine") or "–"
        files = ", ".join(Path(f).name for f in row.get("weights_files", [])) or "–"
        lines.append(f"- {_cell(row['name'])}: {_cell(engine)}; size counts {files}.")
        quantization = (row.get("setup") or {}).get("quantization")
        if quantization:
            lines.append(f"  Optimum quantization: `{quantization['call']}` (optimum {quantization.get('optimum')}).")
    optimum = env.get("optimum")
    if optimum:
        lines.append(f"- Optimum venv: {', '.join(optimum['requirements'])}.")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines += [f"- Versions: {versions}; Python {env['python']}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def plot(results: dict, path: Path) -> Path:
    """Accuracy (or agreement) against p50 short latency, a bar to p95, the Pareto front joined.

    Each variant has its own colour in the legend; Pareto-optimal ones are stars. The latency axis
    is logarithmic when the variants span more than a factor of 10.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = results["data"]["accuracy_axis"]
    rows = [r for r in results["variants"] if r["ok"]]
    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
    colours = plt.get_cmap("tab10")
    front, xs = [], []
    for i, row in enumerate(rows):
        s = row["summary"]
        x, y = s["p50_short_ms"], s[axis]
        if not (_valid(x) and _valid(y)):
            continue
        on_front = bool(row.get("pareto"))
        p95 = s["p95_short_ms"] if _valid(s["p95_short_ms"]) else x
        xs += [x, p95]
        label = f"{row['name']}{' ★' if on_front else ''}: {x:.1f} ms, {100 * y:.2f}%"
        ax.errorbar(
            x, 100 * y, xerr=[[0.0], [max(p95 - x, 0.0)]], fmt="*" if on_front else "o",
            markersize=14 if on_front else 8, capsize=3, color=colours(i % 10), label=label, alpha=0.9,
        )  # fmt: skip
        if on_front:
            front.append((x, 100 * y))
    if len(front) > 1:
        front.sort()
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", alpha=0.6,
                linestyle="--", label="Pareto front")  # fmt: skip
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    if rows:
        ax.legend(loc="best", fontsize=7, framealpha=0.85)
    ax.set_xlabel("p50 latency, batch 1, short texts (ms; bar to p95)")
    ax.set_ylabel(f"{axis} (%)")
    settings = results["settings"]
    cpu = results["environment"]["cpu"]["model"]
    ax.set_title(f"{axis} vs latency: {settings['threads']} threads, {cpu}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes_atomic(Path(path), buffer.getvalue())


def results_table(results: dict[str, Any]) -> Table:
    """The benchmark's variants as a Rich table (the CLI and bench scripts print it); ★ marks the Pareto front."""
    table = Table(title=results["title"], title_justify="left")
    columns = (("size MB", "size_mb", 1), ("load s", "load_s", 2), ("RSS MB", "peak_rss_mb", 0),
               ("p50 ms", "p50_short_ms", 2), ("p95 ms", "p95_short_ms", 2), ("p50 64t", "p50_long_ms", 2),
               ("texts/s", "texts_per_s", 1))  # fmt: skip
    table.add_column("variant")
    for label, _, _ in columns:
        table.add_column(label, justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("agree", justify="right")
    for row in results["variants"]:
        name = escape(row["name"]) + (" ★" if row.get("pareto") else "")
        if not row["ok"]:
            table.add_row(name, f"[red]failed[/]: {escape(str(row['error']))}")
            continue
        s = row["summary"]
        cells = ["–" if s[key] is None else f"{s[key]:,.{d}f}" for _, key, d in columns]
        cells += ["–" if s[k] is None else f"{100 * s[k]:.2f}%" for k in ("accuracy", "agreement")]
        table.add_row(name, *cells)
    return table
