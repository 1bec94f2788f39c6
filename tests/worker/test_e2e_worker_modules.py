"""What a worker loads: a WSGI worker on the inline engine imports neither uvicorn nor asyncio (issue 23, item 4).

The real CLI serves tests/apps/engine_modules.py, whose apps answer whether ``uvicorn`` and ``asyncio`` are in
their worker's ``sys.modules``; the apps import neither. What the primary imports before forking is in every
worker too, so this covers the primary's warm-up (adapters.entry.preimport) as well as the worker's own imports.
A worker on uvicorn's stack (--threads N, or an ASGI app) reports both: the probe can tell the difference.
The last test runs an async message callback the inline engine's way, which imports asyncio only then.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from clusterrun.adapters.entry import SelectorLoop

from clusterrun.worker.runtime import _scheduler

from helpers import DEADLINE, Cluster, get, start


@pytest.mark.parametrize("args", [(), ("--preload",), ("--interface", "wsgi")],
                         ids=["default", "preload", "interface-wsgi"])
def test_a_wsgi_worker_on_the_inline_engine_loads_no_uvicorn_nor_asyncio(
    run_cli: Callable[..., Cluster], args: tuple[str, ...],
) -> None:
    cluster = start(run_cli, "engine_modules:wsgi", "--workers", "1", *args)
    url = cluster.wait_ready()
    assert "inline WSGI engine" in cluster.output()
    loaded = get(url).json()
    assert loaded["uvicorn"] is False and loaded["asyncio"] is False, loaded


@pytest.mark.parametrize("app, args", [("engine_modules:wsgi", ("--threads", "4")), ("engine_modules:asgi", ())],
                         ids=["wsgi-threads", "asgi"])
def test_a_worker_on_uvicorns_stack_loads_both(
    run_cli: Callable[..., Cluster], app: str, args: tuple[str, ...],
) -> None:
    cluster = start(run_cli, app, "--workers", "1", *args)
    url = cluster.wait_ready()
    assert "serving with the clusterrun http1 (httptools, " in cluster.output()
    loaded = get(url).json()
    assert loaded["uvicorn"] is True and loaded["asyncio"] is True, loaded


def test_once_a_worker_says_asgi_the_primary_imports_the_stack_for_the_forks_after_it(
    run_cli: Callable[..., Cluster],
) -> None:
    # --interface auto, no --preload: the primary cannot know the app is ASGI before the first fork, so that worker
    # imports uvicorn's stack itself; once it says ASGI, the primary imports the stack and a respawned worker
    # inherits it (its pages shared, its start as fast as with --interface asgi).
    cluster = start(run_cli, "engine_modules:asgi", "--workers", "1")
    first = get(cluster.wait_ready()).json()
    assert first["uvicorn"] is True and first["uvicorn_at_import"] is False, first
    os.kill(first["pid"], signal.SIGKILL)
    cluster.wait_status(lambda status: any(worker["state"] == "ready" and worker["pid"] != first["pid"]
                                           for worker in status["workers"]), "a respawned worker serving")
    second = get(cluster.urls()[0]).json()
    assert second["pid"] != first["pid"] and second["uvicorn_at_import"] is True, second


def test_an_async_message_callback_on_the_inline_engine_runs_to_its_end() -> None:
    # The inline engine has no asyncio loop: an app's async on_message callback runs to its end on a loop of its
    # own, and asyncio is imported for it then (the runtime no longer imports it when it loads).
    done: list[int] = []

    async def callback() -> None:
        done.append(1)

    loop = SelectorLoop()
    try:
        _scheduler(loop)(callback())
    finally:
        loop.close()
    assert done == [1]


def test_the_inline_path_imports_no_uvicorn_nor_asyncio(tmp_path: Path) -> None:
    # What a worker on the inline engine imports, in a fresh interpreter: the entry, the runtime, the inline
    # serving and the engine itself. The e2e tests above see the whole worker; this names the modules to look at.
    # Run away from the checkout: `python -c` puts the current folder first on sys.path, and at the checkout's
    # root its clusterrun/ source folder (which holds no clusterrun.adapters) would shadow the installed package.
    code = ("import sys, clusterrun.adapters.entry, clusterrun.worker.runtime, clusterrun.worker.inline_serving, "
            "clusterrun.adapters.engine.server; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('uvicorn', 'asyncio')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE,
                           check=False, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]", found.stdout


@pytest.mark.parametrize("app", ["engine_modules:wsgi", "engine_modules:asgi"])
def test_the_static_files_module_is_loaded_only_with_static(run_cli: Callable[..., Cluster], app: str,
                                                            tmp_path: Path) -> None:
    """Without --static a worker does not even import it (nor email.utils and mimetypes): off costs nothing."""
    assert get(start(run_cli, app, "--workers", "1").wait_ready()).json()["static"] is False
    cluster = start(run_cli, app, "--workers", "1", "--static", f"/assets={tmp_path}", "--name", "with-static")
    assert get(cluster.wait_ready()).json()["static"] is True
