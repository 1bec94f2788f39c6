"""The one door from clusterrun's core into adapters: what a worker needs to load an app and serve it.

Imports between the two run one way. The core (clusterrun.worker.runtime, clusterrun.worker.serving, clusterrun.api)
reaches adapters through this module only, and imports it lazily, so that the core stays importable without
uvicorn. Adapters use no more of the core than its small public pieces: clusterrun.errors,
clusterrun.identity and the version. tests/test_layout.py checks both rules.

What this module imports when it loads is engine-neutral (no uvicorn, no asyncio): the inline engine's loop,
the limits, the loading of an app. uvicorn's stack has a door of its own, adapters.stack.serving, which only
clusterrun.worker.serving imports, and the worker's runtime imports that only where it chooses the stack: a
worker on the inline engine never loads uvicorn nor asyncio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import socket
from typing import Any

from clusterrun.adapters.accepting import ACCEPT_BATCH, ACCEPT_REST, accept
from clusterrun.adapters.admission import Admission
from clusterrun.adapters.edge.proxy_protocol import HeaderReader, ProxyProtocol
from clusterrun.adapters.engine.reactor import SelectorLoop
from clusterrun.adapters.engine.settings import EngineSettings
from clusterrun.adapters.headers import ResponseHeaders
from clusterrun.adapters.limits import Limits
from clusterrun.adapters.loading import LoadedApp, check_module_exists, load_app, put_app_dir_first
from clusterrun.adapters.proxy import ForwardedApp, Forwarding

from clusterrun.errors import BootError

__all__ = [
    "ACCEPT_BATCH",
    "ACCEPT_REST",
    "AcceptedSocket",
    "Admission",
    "EngineSettings",
    "ForwardedApp",
    "Forwarding",
    "HeaderReader",
    "Limits",
    "LoadedApp",
    "ProxyProtocol",
    "ResponseHeaders",
    "SelectorLoop",
    "accept",
    "check_module_exists",
    "engine_build",
    "inline_engine",
    "inline_engine_available",
    "load_app",
    "preimport",
    "put_app_dir_first",
    "selector_loop",
    "static_asgi",
    "static_files",
    "static_wsgi",
]


class AcceptedSocket(socket.socket):
    """An accepted connection, passed by the primary or taken by the stack's own accept (balanced,
    --proxy-protocol). Its ``family`` and ``type`` read as plain numbers, as the kernel gives them: socket.socket
    makes an enum of each on every read, and uvloop, asyncio and the inline engine read them for every connection
    (uvloop's connect_accepted_socket three times), which cost more Python calls than the rest of wrapping the
    descriptor. The numbers compare equal to the enums. Here, not in accepting: that module is compiled, and this
    class only overrides two properties of an interpreted one."""

    __slots__ = ()

    @property
    def family(self) -> int:  # type: ignore[override]
        return super(socket.socket, self).family

    @property
    def type(self) -> int:  # type: ignore[override]
        return super(socket.socket, self).type

def inline_engine_available(loaded: LoadedApp, *, threads: int, http: str) -> bool:
    """Whether a worker serves ``loaded`` on the inline engine: a WSGI app called on the worker's thread
    (``--threads 1``), parsed by httptools (``--http h11`` and ``--http uvicorn`` keep uvicorn's stack)."""
    if loaded.interface != "wsgi" or threads != 1 or http in ("h11", "uvicorn"):
        return False
    try:
        import httptools  # noqa: F401
    except ImportError:
        if http == "httptools":
            raise BootError("--http httptools needs httptools: pip install httptools") from None
        return False
    return True


def selector_loop() -> SelectorLoop:
    """The inline engine's loop: a selectors loop with asyncio's loop API, and no asyncio."""
    return SelectorLoop()


def engine_build() -> str:
    """How the inline engine was installed: "compiled" (mypyc, the default of a build with a C compiler) or "pure
    Python" (``CLUSTERRUN_PURE_PYTHON=1`` at install, or no compiler; setup.py). The engine's hot modules are built
    all or none, so its loop says for all of them."""
    from clusterrun.adapters.engine import reactor

    return "pure Python" if reactor.__file__.endswith(".py") else "compiled"


def inline_engine(loop: SelectorLoop, loaded: LoadedApp, settings: EngineSettings) -> Any:
    """The inline WSGI engine (adapters.engine.server.new_engine) serving ``loaded`` on ``loop`` as ``settings``
    say: with an ``ssl_context``, HTTPS (the handshake in this worker, adapters.engine.tls); with a
    ``request_clock``, each stretch of app code stamped in it (--request-timeout, adapters.deadline)."""
    # Here, not at the top: the engine needs httptools, an optional dependency ('clusterrun[standard]').
    from clusterrun.adapters.engine.server import new_engine

    if settings.http2 is None and importlib.util.find_spec("h2") is not None:
        settings = dataclasses.replace(settings, http2=functools.partial(_inline_h2, settings))
    return new_engine(loop, loaded.app, settings)


def _inline_h2(settings: EngineSettings, engine: Any) -> Any:
    """The inline engine's HTTP/2 side (adapters.stack.inline_h2), made at its first HTTP/2 connection: a worker
    that never gets one imports neither asyncio nor h2."""
    from clusterrun.adapters.stack.http2 import H2Limits
    from clusterrun.adapters.stack.inline_h2 import H2Side

    limits = settings.limits
    return H2Side(engine, limits=H2Limits(max_concurrent_streams=settings.h2_max_streams,
                                          max_header_list_size=limits.head, max_fields=limits.header_count,
                                          max_field_size=limits.header_field, head_timeout=limits.head_timeout,
                                          max_body=limits.body),
                  admission=engine.admission,
                  root_path=settings.root_path, keep_alive=settings.keep_alive, headers=settings.headers,
                  forwarding=settings.forwarding, extra_environ=dict(settings.extra_environ),
                  body_timeout=limits.body_timeout, on_response=settings.on_response is not None)


def static_files(mounts: tuple[tuple[str, str], ...], max_age: int, fallthrough: bool) -> Any:
    """--static's mounts (adapters.edge.static.StaticFiles), imported only by a worker that serves static files: the
    module and what it needs (email.utils, mimetypes) cost a worker without --static nothing, not even import time."""
    from clusterrun.adapters.edge.static import StaticFiles

    return StaticFiles(mounts, max_age=max_age, fallthrough=fallthrough)


def static_wsgi(app: Any, files: Any) -> Any:
    """The WSGI app with the static mounts in front (the inline engine: sendfile through wsgi.file_wrapper)."""
    from clusterrun.adapters.edge.static import StaticWSGI

    return StaticWSGI(app, files)


def static_asgi(app: Any, files: Any) -> Any:
    """The ASGI app with the static mounts in front (uvicorn's stack and clusterrun's own protocol)."""
    from clusterrun.adapters.edge.static import StaticASGI

    return StaticASGI(app, files)


def preimport(http: str, *, threads: int = 1, interface: str = "auto") -> None:
    """Import what serving needs in the primary before forking: workers start faster and share the pages.

    The inline engine whenever a worker may serve on it; uvicorn's stack only where every worker will (an ASGI
    app, ``--threads N``, ``--http h11`` or ``uvicorn``): what the primary imports is in every forked worker, and a
    WSGI worker on the inline engine must not carry uvicorn, nor asyncio. With ``--interface auto`` and no
    --preload, the app decides in each worker: one that then serves on the stack imports it there.
    """
    if http in ("httptools", "uvicorn"):
        try:
            import httptools  # noqa: F401
        except ImportError:
            raise BootError(f"--http {http} needs httptools: pip install httptools") from None
    if interface == "asgi" or threads != 1 or http in ("h11", "uvicorn"):
        from clusterrun.adapters.stack import serving  # every worker serves on the stack: share it

        serving.preimport(http)
        return
    with contextlib.suppress(ImportError):  # no httptools: no worker serves on the inline engine
        from clusterrun.adapters.engine import server  # noqa: F401
