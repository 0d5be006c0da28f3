"""Build of the compiled IPC fast path (kernel/core/_fastpath.pyx) and the task library's
compiled frames (kernel/user/_callpath.pyx), optional by design.

Everything else is declared in pyproject.toml. The extension is compiled when Cython and a C
compiler are at hand; when they are not, or the compile fails, the install goes on without it
and the kernel runs its Python fast path (kernel/core/fastpath.py says which runs), the
task library pyzmq's own calls (kernel/user/client.py, `CALLPATH`).
"""
from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
PYX = os.path.join("kernel", "core", "_fastpath.pyx")
CALLPATH_PYX = os.path.join("kernel", "user", "_callpath.pyx")


class OptionalBuildExt(build_ext):
    """build_ext whose failure is a warning: the extension is an accelerator, not a part."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any failure: no extension
            _warn(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            _warn(e)


def _warn(e: BaseException) -> None:
    print(f"l4py: the compiled fast path was not built ({type(e).__name__}: {e}); "
          f"the kernel will run the Python fast path", file=sys.stderr)


def _extensions() -> list[Extension]:
    if os.environ.get("L4PY_FASTPATH") == "python":
        return []
    try:
        from Cython.Build import cythonize
    except Exception as e:  # noqa: BLE001
        _warn(e)
        return []
    try:
        return cythonize([Extension("kernel.core._fastpath", [PYX], extra_compile_args=["-O2"]),
                          Extension("kernel.user._callpath", [CALLPATH_PYX],
                                    extra_compile_args=["-O2"])],
                         compiler_directives={"language_level": "3"}, quiet=True,
                         include_path=[os.path.join(HERE, "kernel")])   # _libzmq.pxi
    except Exception as e:  # noqa: BLE001
        _warn(e)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
