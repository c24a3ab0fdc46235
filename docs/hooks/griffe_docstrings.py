"""Griffe extension for the API pages: slm's reST-flavoured docstrings shown as Markdown.

mkdocstrings renders docstrings as Markdown. slm's docstrings are written for ``help()`` and editors:
interactive examples (``>>>`` lines, which Markdown would take for nested quotes) and Sphinx roles
(``:func:`load```). This extension, loaded by mkdocs.yml, fences each run of ``>>>``/``...`` lines
(with the output lines after it) as a ``pycon`` code block and shows each role's target as code.
The source files are not touched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")


def _fence_examples(text: str) -> str:
    out: list[str] = []
    in_example = False
    for line in text.splitlines():
        stripped = line.lstrip()
        starts = stripped.startswith(">>>")
        if starts and not in_example:
            out += ["```pycon"]
            in_example = True
        elif in_example and not stripped:
            out += ["```"]
            in_example = False
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


def markdown_docstring(text: str) -> str:
    return _fence_examples(ROLE.sub(r"``\1``", text))


class MarkdownDocstrings(griffe.Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
