"""docs/cabinets.md stays true: its python example runs; the commands and routes it names exist."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "cabinets.md"


def test_the_cabinets_doc_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/cabinets.md:python#1", "exec"), {})  # noqa: S102 - our own docs


def test_the_cabinets_doc_names_real_commands_and_api_paths() -> None:
    from host.admin import build_parser
    from host.web.openapi import document
    text = DOC.read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("serve", "link-code", "replace-club-card", "register-club-member", "block-fleet-user"):
        assert name in sub.choices and f"edgepos host {name}" in text
    for path in document()["paths"]:
        short = re.sub(r"\{[a-z_]+\}", "{", path)
        assert any(re.sub(r"\{[a-z_]+\}", "{", p) == short for p in re.findall(r"`(/api/v1/[^`?]*)", text)) or \
            path.endswith(("/block", "/unblock", "/openapi.json")), path
