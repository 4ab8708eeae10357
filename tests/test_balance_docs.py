"""The examples of docs/rules.md run as they are written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def test_the_balance_rule_example_in_rules_md_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert any("balance_after" in b for b in blocks)
    for b in blocks:
        exec(compile(b, str(DOC), "exec"), {})  # noqa: S102 - the doc's own example, run as written
