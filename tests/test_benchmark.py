"""slm bench: a small real interleaved run (runtime + PyTorch baselines, no Optimum) and the helpers."""

from __future__ import annotations

import json

import pytest

from slm.benchmark import pareto_front, run_benchmark
from slm.benchmark.harness import _long_texts, ratios
from slm.benchmark.report import markdown
from slm.compression.export import export_bundle
from slm.pipeline import DataSource

METRICS = ("size_mb", "load_s", "model_load_s", "peak_rss_mb", "p50_short_ms", "p95_short_ms", "p50_long_ms",
           "p95_long_ms", "texts_per_s", "accuracy", "agreement")  # fmt: skip


@pytest.fixture(scope="module")
def exported(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny-onnx"
    export_bundle(tiny_bundle, out, texts=["my card has not arrived", "I want a refund", "change my pin"])
    return out


@pytest.fixture(scope="module")
def results(exported, tiny_bundle, banking_test_csv, tmp_path_factory):
    output = tmp_path_factory.mktemp("bench-out")
    # The PyTorch-only tiny bundle cannot run on the torch-free runtime: that variant must fail alone.
    result = run_benchmark(
        [exported, tiny_bundle], DataSource(banking_test_csv, "text", "category"), output, baselines=True,
        optimum=False, threads=1, rounds=2, load_rounds=1, latency_texts=4, throughput_texts=16, batch_size=8,
        max_eval=24, show_progress=False,
    )  # fmt: skip
    return output, result


def test_writes_json_markdown_and_png(results) -> None:
    output, result = results
    on_disk = json.loads((output / "benchmark.json").read_text(encoding="utf-8"))
    assert on_disk["variants"][0]["name"] == result["variants"][0]["name"]
    assert (output / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (output / "benchmark.md").read_text(encoding="utf-8")
    for row in result["variants"]:
        assert row["name"] in md
    assert "vs PyTorch fp32" in md and "failed" in md
    env = result["environment"]
    assert env["cpu"]["model"] and env["load_average_start"] is not None and env["versions"]["torch"]
    assert result["settings"]["threads"] == 1 and result["data"]["n_eval"] == 24
    assert 55 <= result["data"]["long_tokens_mean"] <= 64


def test_every_variant_is_measured(results) -> None:
    _, result = results
    rows = {row["role"] + ":" + row["name"]: row for row in result["variants"]}
    ok = [row for row in result["variants"] if row["ok"]]
    assert [row["role"] for row in ok] == ["bundle", "torch_fp32", "torch_int8"]
    for row in ok:
        summary = row["summary"]
        missing = [key for key in METRICS if summary[key] is None]
        assert not missing, f"{row['name']} lacks {missing}"
        assert summary["p95_short_ms"] >= summary["p50_short_ms"] > 0
        assert summary["peak_rss_mb"] > 50 and summary["load_s"] >= summary["model_load_s"] > 0
        assert row["latency_short_ms"]["n"] == 2 * 4 and len(row["throughput_by_round"]) == 2
        assert 0.0 <= summary["accuracy"] <= 1.0
    fp32 = next(row for row in ok if row["role"] == "torch_fp32")
    assert fp32["summary"]["agreement"] == 1.0
    assert fp32["ratios"]["vs_torch_fp32"]["p50_short_ms"] == 1.0 and fp32["ratios"]["vs_optimum_int8"] is None
    runtime = ok[0]
    assert runtime["info"]["torch_imported"] is False and runtime["info"]["tokenizer_padding"] is None
    assert runtime["weights_files"][0].endswith("model.onnx")
    # The exported ONNX graph predicts what PyTorch predicts.
    assert runtime["summary"]["agreement"] >= 0.95
    failed = [row for key, row in rows.items() if not row["ok"]]
    assert len(failed) == 1 and "ONNX" in failed[0]["error"] and failed[0]["summary"]["p50_short_ms"] is None


def test_pareto_front_on_a_hand_made_example() -> None:
    # (latency ms, accuracy): lower latency and higher accuracy are better.
    points = [
        (10.0, 0.90),  # 0: fastest
        (20.0, 0.93),  # 1: slower but more accurate: on the front
        (25.0, 0.92),  # 2: dominated by 1
        (40.0, 0.95),  # 3: most accurate: on the front
        (40.0, 0.94),  # 4: dominated by 3 (same latency, lower accuracy)
        (5.0, None),  # 5: no accuracy: never on the front
        (10.0, 0.90),  # 6: ties with 0: neither dominates the other
    ]
    assert pareto_front(points) == [0, 6, 1, 3]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5)]) == [0]


def test_ratios_read_as_times_better() -> None:
    variant = {"size_mb": 25.0, "p50_short_ms": 5.0, "texts_per_s": 300.0, "accuracy": 0.93, "load_s": None}
    reference = {"size_mb": 100.0, "p50_short_ms": 10.0, "texts_per_s": 100.0, "accuracy": 0.94, "load_s": 1.0}
    out = ratios(variant, reference)
    assert out["size_mb"] == 4.0 and out["p50_short_ms"] == 2.0 and out["texts_per_s"] == 3.0
    assert out["load_s"] is None and out["accuracy_delta_points"] == -1.0


def test_long_texts_join_real_texts_to_about_64_tokens() -> None:
    import numpy as np

    pool = ["my card has not arrived yet", "why was I charged twice", "how do I reset my pin code"]
    texts = _long_texts(pool, 3, lambda t: len(t.split()) + 2, np.random.default_rng(0))
    assert all(len(t.split()) + 2 == 64 for t in texts)
    assert all(set(t.split()) <= {w for p in pool for w in p.split()} for t in texts)


def test_markdown_shows_a_failed_variant_as_one_row(results) -> None:
    _, result = results
    md = markdown(result)
    failed = [line for line in md.splitlines() if "failed:" in line]
    assert len(failed) == 1 and failed[0].startswith("| tiny")


@pytest.mark.parametrize(
    ("flags", "machine", "preset"),
    [
        ({"avx2", "fma", "avx512f", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "avx512f"}, "x86_64", "avx512"),
        ({"avx2", "fma"}, "x86_64", "avx2"),
        (set(), "aarch64", "arm64"),
    ],
)
def test_optimum_recipe_matches_the_cpu(flags: set[str], machine: str, preset: str) -> None:
    """The Optimum peer is quantized with the preset its guide gives for the CPU the bench runs on."""
    from slm.benchmark.optimum_env import quantization_recipe

    recipe = quantization_recipe(frozenset(flags), machine)
    assert recipe == {"preset": preset, "is_static": False, "per_channel": False}
