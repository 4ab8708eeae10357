"""Build the Cython evaluator and the wire record check; everything else is declared in
pyproject.toml.

The native evaluator is not optional: the daemon uses it. A machine without a
working C compiler gets a clear error here, at install time, instead of a
silently slow daemon later.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - pip installs Cython as a build requirement
    sys.exit("edgepos: Cython is required to build the native evaluator (pip installs it "
             "from pyproject.toml's build requirements; for setup.py use: pip install Cython)")


class BuildNative(build_ext):
    """build_ext that turns a missing or broken C compiler into one clear error."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            raise SystemExit(
                "edgepos: could not compile the native evaluator (native/_evaluator.pyx), its row loader "
                "(native/_rowload.pyx), wire's record check (wire/_wirecheck.pyx), its snapshot-part "
                "scanner (wire/_partscan.pyx) and its row packer (wire/_jsonpack.pyx).\n"
                "A C compiler and the Python headers are required: on Debian run\n"
                "    apt-get install -y gcc python3-dev\n"
                f"then install again. The compiler said: {exc}"
            ) from exc


extensions = [
    Extension(
        "native._evaluator",
        ["native/_evaluator.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "wire._wirecheck",
        ["wire/_wirecheck.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(  # a snapshot part's rows checked where they lie, kept as the bytes received
        "wire._partscan",
        ["wire/_partscan.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(  # the edge's journal rows, stored JSON text straight to MessagePack
        "wire._jsonpack",
        ["wire/_jsonpack.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(  # stored fuel-card rows straight into the evaluator's columns
        "native._rowload",
        ["native/_rowload.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
    cmdclass={"build_ext": BuildNative},
)
