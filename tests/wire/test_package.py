"""The package's boundary: what ``wire`` imports, and its public surface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import wire

ROOT = Path(__file__).resolve().parents[2]


def test_wire_imports_only_the_stdlib_msgpack_msgspec_cryptography_and_authz():
    # cryptography: Ed25519; msgspec: the journal's stored JSON bodies read when a row is not
    # packed straight from its text (wire.codec.pack_record_rows)
    allowed = set(sys.stdlib_module_names) | {"msgpack", "msgspec", "cryptography", "authz"}
    for path in sorted((ROOT / "wire").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in allowed, f"{path.name} imports {top}"


def test_importing_wire_loads_neither_terminal_nor_host():
    code = "import sys, wire; print(sorted({m.split('.')[0] for m in sys.modules} & {'terminal', 'host', 'native'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_public_surface_resolves():
    assert len(wire.__all__) == len(set(wire.__all__))
    for name in wire.__all__:
        assert getattr(wire, name) is not None, name
