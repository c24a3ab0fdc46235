"""The command line through a real subprocess: help, listing, and every bad input refused in one line.

No model is trained here: data validation fails before any model is loaded, so each case takes
about a second (the cost of starting Python and importing pandas/scikit-learn).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from slm.fileio import record_output
from tests.conftest import DATA, SLM_TRAIN_STARTUP

TIMEOUT = 120


def _data(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (expected the shared data folder beside the repo)")
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SLM_DEBUG"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"})
    env.update(extra)
    return env


def slm(*args: str | Path, cwd: Path | None = None, stdin: str | None = None, **env: str):
    """Run ``python -m slm ARGS`` and return the CompletedProcess (text mode)."""
    return subprocess.run(
        [sys.executable, "-m", "slm", *map(str, args)],
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=TIMEOUT,
    )


def python(code: str, **env: str):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input="",
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=TIMEOUT,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, phrase: str, code: int | None = 2) -> str:
    """Failed with ``code``; stderr is exactly one line ``error: ...`` containing ``phrase``."""
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    if code is None:
        assert proc.returncode != 0, both
    else:
        assert proc.returncode == code, f"exit {proc.returncode}, expected {code}: {both}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {proc.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert phrase.lower() in lines[0].lower(), f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------- real data slices


@pytest.fixture(scope="module")
def banking() -> pd.DataFrame:
    """BANKING77 train rows: 4 intents x 12 rows (columns text, category)."""
    df = pd.read_csv(_data("banking77/train.csv"), dtype=str, keep_default_na=False)
    intents = sorted(df["category"].unique())[:4]
    return df[df["category"].isin(intents)].groupby("category").head(12).reset_index(drop=True)


@pytest.fixture(scope="module")
def banking_test() -> pd.DataFrame:
    """BANKING77 test rows of other intents than the ``banking`` slice."""
    df = pd.read_csv(_data("banking77/test.csv"), dtype=str, keep_default_na=False)
    intents = sorted(df["category"].unique())[-2:]
    return df[df["category"].isin(intents)].groupby("category").head(5).reset_index(drop=True)


def _csv(path: Path, df: pd.DataFrame) -> Path:
    df.to_csv(path, index=False)
    return path


# Each builder writes a bad input from real rows and returns (train arguments, key phrase).
Case = Callable[[Path, pd.DataFrame, pd.DataFrame], tuple[list[str], str]]


def _missing_file(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(d / "nope.csv")], "file not found"


def _directory(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    (d / "folder").mkdir()
    _csv(d / "folder" / "inside.csv", df)
    return [str(d / "folder")], "is a directory"


def _missing_text_col(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df)), "--text-col", "utterance"], "text column 'utterance' not found"


def _missing_label_col(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df)), "--label-col", "intent"], "label column 'intent' not found"


def _missing_label_cols(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df)), "--label-cols", "card,cash"], "label column 'card' not found"


def _ambiguous_columns(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    two = df.rename(columns={"text": "query"}).assign(question=df["text"].str.upper())
    return [str(_csv(d / "d.csv", two))], "cannot tell which column holds the text"


def _empty_file(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    (d / "d.csv").write_bytes(b"")
    return [str(d / "d.csv")], "file is empty"


def _header_only(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df.head(0)))], "has no data rows"


def _blank_texts(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df.assign(text="   ")))], "are blank"


def _blank_label(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    bad = df.copy()
    bad.loc[5, "category"] = ""
    return [str(_csv(d / "d.csv", bad))], "blank or missing label"


def _single_class(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    one = df[df["category"] == df["category"].iloc[0]]
    return [str(_csv(d / "d.csv", one))], "only one label"


def _too_few_per_class(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    rare = df["category"].iloc[-1]
    few = pd.concat([df[df["category"] != rare], df[df["category"] == rare].head(2)])
    return [str(_csv(d / "d.csv", few))], "at least 3"


def _split_too_small(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    # 4 classes x 4 rows: a 5% test split would hold 1 row, fewer than the 4 classes.
    small = df.groupby("category").head(4)
    return [str(_csv(d / "d.csv", small)), "--test-size", "0.05"], "fewer than the 4 classes"


def _not_utf8(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    bad = df.copy()
    bad.loc[3, "text"] = bad.loc[3, "text"] + " at the café"
    (d / "d.csv").write_bytes(bad.to_csv(index=False).encode("latin-1"))
    return [str(d / "d.csv")], "not valid UTF-8"


def _utf16(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    (d / "d.csv").write_bytes(df.to_csv(index=False).encode("utf-16"))
    return [str(d / "d.csv")], "looks like UTF-16"


def _extra_field(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    lines = df.to_csv(index=False).splitlines()
    lines[7] = lines[7] + ",surplus"
    (d / "d.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [str(d / "d.csv")], "malformed CSV row"


def _unclosed_quote(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    lines = df.to_csv(index=False).splitlines()
    lines[-1] = '"' + lines[-1]
    (d / "d.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [str(d / "d.csv")], "unclosed quote"


def _bad_json_line(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    lines = [json.dumps({"text": t, "label": c}) for t, c in zip(df["text"], df["category"], strict=True)]
    lines[4] = lines[4][:-1]  # cut the closing brace
    (d / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [str(d / "d.jsonl")], "line 5 is not valid JSON"


def _corrupt_parquet(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    (d / "d.parquet").write_bytes(df.to_csv(index=False).encode("utf-8"))
    return [str(d / "d.parquet")], "cannot be read as Parquet"


def _spreadsheet(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    (d / "d.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    return [str(d / "d.xlsx")], "unsupported file type .xlsx"


def _not_zero_one(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    flags = pd.DataFrame({"text": df["text"], "card": "1", "cash": "0"})
    flags.loc[2, "cash"] = "maybe"
    return [str(_csv(d / "d.csv", flags)), "--label-cols", "card,cash"], "must hold 0 or 1"


def _unseen_test_label(d: Path, df: pd.DataFrame, t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df)), "--test", str(_csv(d / "t.csv", t))], "not seen in training"


def _missing_test_file(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df)), "--test", str(d / "gone.csv")], "file not found"


def _sizes_sum(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    args = [str(_csv(d / "d.csv", df)), "--val-size", "0.5", "--test-size", "0.5"]
    return args, "leaves nothing for training"


def _bad_epochs(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    return [str(_csv(d / "d.csv", df)), "--epochs", "0"], "epochs must be at least 1"


def _col_and_cols(d: Path, df: pd.DataFrame, _t: pd.DataFrame) -> tuple[list[str], str]:
    args = [str(_csv(d / "d.csv", df)), "--label-col", "category", "--label-cols", "a,b"]
    return args, "not both"


CASES: dict[str, Case] = {
    "missing-file": _missing_file,
    "directory": _directory,
    "missing-text-column": _missing_text_col,
    "missing-label-column": _missing_label_col,
    "missing-label-columns": _missing_label_cols,
    "ambiguous-text-column": _ambiguous_columns,
    "empty-file": _empty_file,
    "header-only": _header_only,
    "all-blank-texts": _blank_texts,
    "blank-label": _blank_label,
    "single-class": _single_class,
    "too-few-per-class": _too_few_per_class,
    "split-too-small": _split_too_small,
    "non-utf8": _not_utf8,
    "utf16": _utf16,
    "extra-field-row": _extra_field,
    "unclosed-quote": _unclosed_quote,
    "bad-json-line": _bad_json_line,
    "corrupt-parquet": _corrupt_parquet,
    "spreadsheet": _spreadsheet,
    "label-cols-not-0-1": _not_zero_one,
    "unseen-test-label": _unseen_test_label,
    "missing-test-file": _missing_test_file,
    "split-sizes-sum": _sizes_sum,
    "bad-epochs": _bad_epochs,
    "label-col-and-cols": _col_and_cols,
}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


# In the fast lane: a refusal of the file, of its contents, of its labels and of an option. The others are slow
# (SLM_TRAIN_STARTUP); tests/test_data.py checks the data loading and validation behind them in-process.
FAST_CASES = {"missing-file", "non-utf8", "single-class", "bad-epochs"}


@pytest.mark.parametrize(
    "case",
    [c if c in FAST_CASES else pytest.param(c, marks=pytest.mark.slow(reason=SLM_TRAIN_STARTUP)) for c in CASES],
)
def test_train_refuses_bad_input_in_one_line(
    case: str, tmp_path: Path, banking: pd.DataFrame, banking_test: pd.DataFrame
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    args, phrase = CASES[case](inputs, banking, banking_test)
    runs = tmp_path / "runs"
    output = runs / "model"
    proc = slm("train", *args, "-o", output, cwd=tmp_path)
    assert_one_line_error(proc, phrase)
    assert not output.exists(), "a failed train left a bundle behind"
    # nothing else either: no staging directory, no checkpoint folder, no half-written report
    assert _leftovers(runs) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_failed_train_leaves_existing_bundle_untouched(tmp_path: Path, banking: pd.DataFrame) -> None:
    runs = tmp_path / "runs"
    bundle = runs / "model"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "manifest.json").write_text('{"keep": "me"}\n', encoding="utf-8")
    (bundle / "sub" / "weights.bin").write_bytes(b"\x00\x01\x02")
    record_output(bundle, ["manifest.json", "sub/weights.bin"])  # an earlier output of slm's: it may be replaced
    one_class = banking[banking["category"] == banking["category"].iloc[0]]
    data = _csv(tmp_path / "one.csv", one_class)

    proc = slm("train", data, "-o", bundle, cwd=tmp_path)
    assert_one_line_error(proc, "only one label")
    assert _leftovers(runs) == ["model"]
    assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")) == [
        ".slm-output.json",
        "manifest.json",
        "sub",
        "sub/weights.bin",
    ]
    assert (bundle / "manifest.json").read_text(encoding="utf-8") == '{"keep": "me"}\n'
    assert (bundle / "sub" / "weights.bin").read_bytes() == b"\x00\x01\x02"


# ---------------------------------------------------------------- help and listings


HELP = {
    None: ["train", "evaluate", "predict", "models", "info", "quickstart", "--version"],
    "train": [
        "--output", "--text-col", "--label-col", "--label-cols", "--label-sep", "--validation", "--test",
        "--val-size", "--test-size", "--base-model", "--epochs", "--batch-size", "--lr", "--head-lr",
        "--weight-decay", "--dropout", "--max-length", "--patience", "--seed", "--max-minutes",
        "--class-weight", "--no-ensemble", "--margin", "--threads", "--resume", "--quiet",
    ],
    "evaluate": ["--output", "--text-col", "--label-col", "--label-cols", "--label-sep", "--margin"],
    "predict": ["--output", "--text-col", "--component", "--batch-size", "--quiet", "stdin"],
    "models": ["--base-model"],
    "info": ["--json"],
    "quickstart": ["--output", "--max-minutes", "--epochs", "BANKING77"],
}  # fmt: skip


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "slm")
def test_help(command: str | None) -> None:
    proc = slm(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for word in HELP[command]:
        assert word in proc.stdout, f"{word!r} missing from 'slm {command or ''} --help'"


def test_version() -> None:
    proc = slm("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("slm ")


def test_models_lists_the_default_base_model() -> None:
    proc = slm("models")
    assert proc.returncode == 0, proc.stderr
    assert "minilm-l6" in proc.stdout
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- predict / evaluate / info errors


def test_predict_on_missing_bundle(tmp_path: Path, banking: pd.DataFrame) -> None:
    texts = _csv(tmp_path / "new.csv", banking[["text"]].head(3))
    proc = slm("predict", tmp_path / "no-such-bundle", texts, cwd=tmp_path)
    assert_one_line_error(proc, "no-such-bundle", code=None)
    assert proc.stdout == ""


def test_predict_stdin_on_missing_bundle(tmp_path: Path) -> None:
    proc = slm("predict", tmp_path / "no-such-bundle", "-", stdin='{"text": "where is my card?"}\n')
    assert_one_line_error(proc, "no-such-bundle", code=None)
    assert proc.stdout == ""


def test_predict_refuses_missing_input_before_loading(tmp_path: Path) -> None:
    proc = slm("predict", tmp_path / "no-such-bundle", tmp_path / "missing.csv")
    assert_one_line_error(proc, "file not found")


def test_predict_refuses_unknown_output_format(tmp_path: Path, banking: pd.DataFrame) -> None:
    texts = _csv(tmp_path / "new.csv", banking[["text"]].head(3))
    proc = slm("predict", tmp_path / "no-such-bundle", texts, "-o", tmp_path / "out.xlsx")
    assert_one_line_error(proc, "cannot tell the output format")
    assert not (tmp_path / "out.xlsx").exists()


def test_predict_text_column_must_exist(tmp_path: Path, banking: pd.DataFrame) -> None:
    texts = _csv(tmp_path / "new.csv", banking.head(3))
    proc = slm("predict", tmp_path / "no-such-bundle", texts, "--text-col", "body")
    assert_one_line_error(proc, "text column 'body' not found")


@pytest.mark.parametrize("command", ["evaluate", "info"])
def test_bundle_commands_on_missing_bundle(command: str, tmp_path: Path, banking: pd.DataFrame) -> None:
    extra = [_csv(tmp_path / "d.csv", banking)] if command == "evaluate" else []
    proc = slm(command, tmp_path / "no-such-bundle", *extra)
    assert_one_line_error(proc, "no-such-bundle", code=4)


def test_info_on_a_directory_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello", encoding="utf-8")
    proc = slm("info", tmp_path / "notes")
    assert_one_line_error(proc, "manifest.json", code=4)


# ---------------------------------------------------------------- global error handling


_PATCHED = """
    import slm.runtime.bundle
    def boom(*args, **kwargs):
        raise {exc}
    slm.runtime.bundle.Bundle = boom
    from slm.cli import app
    app(["info", "somewhere"], prog_name="slm")
"""


def test_unexpected_error_is_one_line_without_traceback() -> None:
    proc = python(_PATCHED.format(exc="ZeroDivisionError('division by zero')"))
    line = assert_one_line_error(proc, "internal error: ZeroDivisionError: division by zero", code=1)
    assert "SLM_DEBUG" in line


def test_unexpected_error_shows_traceback_with_slm_debug() -> None:
    proc = python(_PATCHED.format(exc="ZeroDivisionError('division by zero')"), SLM_DEBUG="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


def test_keyboard_interrupt_exits_130_in_one_line() -> None:
    proc = python(_PATCHED.format(exc="KeyboardInterrupt()"))
    assert_one_line_error(proc, "interrupted", code=130)


def test_slm_error_keeps_its_exit_code() -> None:
    code = _PATCHED.format(exc="ModelError('base model is gone\\nsecond line')").replace(
        "import slm.runtime.bundle", "import slm.runtime.bundle\n    from slm.errors import ModelError"
    )
    proc = python(code)
    assert_one_line_error(proc, "error: base model is gone second line", code=3)
