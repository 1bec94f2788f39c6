"""The compiled core (setup.py): the engine's hot modules are built all compiled or all pure Python, the worker's
start log says which, and each tox environment tests the build it names.

tox sets ``CLUSTERRUN_EXPECT_ENGINE`` in every test environment ("compiled", or "pure Python" where it also sets
``CLUSTERRUN_PURE_PYTHON=1`` for the install), so that an environment meant to test one build cannot pass while
testing the other. Outside tox the variable is unset and the build found is the one checked.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from helpers import Cluster, start

# setup.py's HOT, as module names.
HOT = [
    "clusterrun.adapters.accepting",
    "clusterrun.adapters.engine.connection",
    "clusterrun.adapters.engine.reactor",
    "clusterrun.adapters.engine.respond",
    "clusterrun.adapters.engine.server",
    "clusterrun.adapters.engine.tls",
    "clusterrun.adapters.wsgi_app",
    "clusterrun.adapters.limits",
    "clusterrun.adapters.proxy",
    "clusterrun.adapters.stack.guard",
    "clusterrun.adapters.stack.http1",
]
BUILDS = ("compiled", "pure Python")


def expected_build() -> str | None:
    expected = os.environ.get("CLUSTERRUN_EXPECT_ENGINE")
    assert expected in (None, *BUILDS), f"CLUSTERRUN_EXPECT_ENGINE={expected!r}: say one of {BUILDS}"
    return expected


def installed_build() -> str:
    """The build of the clusterrun this interpreter imports (the CLI the tests start runs under it too)."""
    pure = {name: str(importlib.import_module(name).__file__).endswith(".py") for name in HOT}
    assert len(set(pure.values())) == 1, f"a mixed build (True: pure Python): {pure}"
    return "pure Python" if all(pure.values()) else "compiled"


def test_hot_modules_are_all_compiled_or_all_pure() -> None:
    build = installed_build()
    expected = expected_build()
    assert expected in (None, build), f"this environment expects the {expected} engine, and has the {build} one"


def test_setup_compiles_what_this_test_checks() -> None:
    """The list above is setup.py's: a module added to one and not the other would go unchecked, or uncompiled."""
    text = (Path(__file__).resolve().parents[3] / "setup.py").read_text(encoding="utf-8")
    listed = [line.strip().strip('",') for line in text.splitlines() if line.strip().startswith('"clusterrun/')]
    assert [path.removesuffix(".py").replace("/", ".") for path in listed] == HOT


def test_worker_log_names_the_build(run_cli: Callable[..., Cluster]) -> None:
    cluster = start(run_cli, "e2e_wsgi_raw:app")
    [match] = cluster.wait_for_line(r"serving with the inline WSGI engine \(httptools, (compiled|pure Python)\)$")
    assert match.group(1) == (expected_build() or installed_build())


def test_asgi_worker_log_names_the_build(run_cli: Callable[..., Cluster]) -> None:
    """The ASGI protocol (adapters/stack/http1.py) is in the same build: its start line says which."""
    cluster = start(run_cli, "e2e_asgi_raw:app")
    [match] = cluster.wait_for_line(r"serving with the clusterrun http1 \(httptools, (compiled|pure Python)\) \+ ")
    assert match.group(1) == (expected_build() or installed_build())
