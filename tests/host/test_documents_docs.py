"""docs/documents.md stays true: its ```python examples run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "documents.md"


def test_the_documents_doc_examples_run():
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    ns: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/documents.md:python#{i + 1}", "exec"), ns)  # noqa: S102 - our own docs


def test_the_documents_doc_lists_every_cli_command():
    from host.admin import build_parser
    text = DOC.read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("document", "set-requisites", "set-station-address"):
        assert name in sub.choices and f"edgepos host {name}" in text
