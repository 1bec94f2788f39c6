"""Build step: compile the hot modules of the inline WSGI engine and the ASGI protocol with mypyc, or leave them
pure Python.

Everything else about the package is declared in pyproject.toml. Only the compiled core lives here, because it
needs code: which modules, where mypyc reads them from, and what happens when it cannot build.

- The modules in ``HOT`` are compiled; every other module stays Python. They are the ones a WSGI request runs
  through on the inline engine, and an ASGI request through clusterrun's HTTP/1.1 protocol (adapters/stack/http1.py)
  (docs/wsgi-engine.md, "The compiled core", has the numbers).
- ``CLUSTERRUN_PURE_PYTHON=1`` builds pure Python: the same code, interpreted. So does a machine where mypyc or a
  C compiler is missing, with a warning: the package works either way, only slower.
- mypyc names a module after its path, and the checkout keeps ``clusterrun.adapters`` in ``adapters/`` (see
  ``package-dir``). So the package is copied, laid out as it is installed, into ``build/mypyc-src``, and mypyc
  compiles that copy.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# What a WSGI request runs through on the inline engine, then what an ASGI request runs through on clusterrun's
# HTTP/1.1 protocol, as installed module paths (clusterrun/adapters/ is adapters/ in the checkout). Not
# adapters/stack/flow.py: the HTTP/2 protocol, which stays Python, subclasses its WriteFlow, and Python classes
# cannot subclass compiled ones.
HOT = [
    "clusterrun/adapters/accepting.py",
    "clusterrun/adapters/engine/connection.py",
    "clusterrun/adapters/engine/reactor.py",
    "clusterrun/adapters/engine/respond.py",
    "clusterrun/adapters/engine/server.py",
    "clusterrun/adapters/engine/tls.py",
    "clusterrun/adapters/wsgi_app.py",
    "clusterrun/adapters/limits.py",
    "clusterrun/adapters/proxy.py",
    "clusterrun/adapters/stack/guard.py",
    "clusterrun/adapters/stack/http1.py",
]
# mypyc puts the compiled code of all of them in one shared library; named here, it sits inside the package
# (clusterrun/adapters/engine/_core__mypyc*.so), not as a hash-named module at the top of site-packages.
GROUP = "clusterrun.adapters.engine._core"
PURE_ENV = "CLUSTERRUN_PURE_PYTHON"


def _warn(message: str) -> None:
    print(f"clusterrun build: {message}; installing the pure-Python engine", file=sys.stderr)


def _stage(root: Path) -> Path:
    """Copy the package as it is installed (adapters/ inside clusterrun/) to where mypyc reads it."""
    stage = root / "build" / "mypyc-src"
    shutil.rmtree(stage, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(root / "clusterrun", stage / "clusterrun", ignore=ignore)
    shutil.copytree(root / "adapters", stage / "clusterrun" / "adapters", ignore=ignore)
    return stage


# The setuptools commands that build extensions (a wheel, an editable install, a build in place). The others
# (metadata, the sdist) compile nothing, so they need not wait for mypyc.
_BUILDS = {"bdist_wheel", "editable_wheel", "build", "build_ext", "install", "develop", "bdist_egg"}


def compiled_extensions() -> list[Any]:
    if not _BUILDS & set(sys.argv[1:]):
        return []
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        print(f"clusterrun build: {PURE_ENV} is set: installing the pure-Python engine", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a build without isolation, where mypy is not installed
        _warn("mypyc is not installed")
        return []
    root = Path(__file__).resolve().parent
    stage = _stage(root)
    here = Path.cwd()
    # mypyc type-checks what it compiles and what that imports. Third-party modules it cannot see (the build
    # environment holds only the build requirements) are Any, which compiles to generic, checked calls.
    os.chdir(stage)
    try:
        return list(
            mypycify(
                ["--ignore-missing-imports", "--follow-imports=silent", *HOT],
                opt_level="3",
                group_name=GROUP,
                target_dir=str(stage / "c"),
            )
        )
    except (Exception, SystemExit) as error:  # mypyc exits on a type error it cannot compile past
        _warn(f"mypyc could not compile the engine ({error})")
        return []
    finally:
        os.chdir(here)


class OptionalBuildExt(build_ext):
    """A C compiler that fails (or is missing) leaves the pure-Python engine, not a failed install.

    All or nothing: the compiled modules import one shared library, and an extension module wins over the .py
    beside it, so one module built without the library would break the import that the .py would have served.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            _warn(f"the compiled engine did not build ({error})")
            for inplace in (0, 1):
                self.inplace = inplace
                for ext in self.extensions:
                    Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
