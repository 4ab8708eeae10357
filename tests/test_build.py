"""The native evaluator is not optional: a machine without a working C compiler gets a clear
error at install time (setup.py), and a missing compiled module is a clear ImportError."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_build_without_a_compiler_fails_with_a_clear_message(tmp_path):
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for pkg in ("native", "wire"):  # setup.py builds native._evaluator and wire._wirecheck
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    env = dict(os.environ, CC="/bin/false", LDSHARED="/bin/false")
    out = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "could not compile the native evaluator" in out.stdout + out.stderr
    assert "apt-get install -y gcc python3-dev" in out.stdout + out.stderr


def test_missing_native_module_is_a_clear_import_error(tmp_path):
    shutil.copytree(ROOT / "native", tmp_path / "native",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "authz", tmp_path / "authz", ignore=shutil.ignore_patterns("__pycache__"))
    # -S: no site-packages, so an editable install's import hook cannot supply the built module
    out = subprocess.run([sys.executable, "-S", "-c", "import native"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert out.returncode != 0
    assert "the native evaluator (native._evaluator) is not built" in out.stderr
