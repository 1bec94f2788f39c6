"""The one door from clusterrun's core into adapters: what a worker needs to load an app and serve it.

Imports between the two run one way. The core (clusterrun.worker.runtime, clusterrun.worker.serving, clusterrun.api)
reaches adapters through this module only, and imports it lazily, so that the core stays importable without
uvicorn. Adapters use no more of the core than its small public pieces: clusterrun.errors,
clusterrun.identity and the version. tests/test_layout.py checks both rules.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from typing import Any

from clusterrun.adapters.admission import Admission
from clusterrun.adapters.deadline import RequestStamp
from clusterrun.adapters.engine.reactor import SelectorLoop
from clusterrun.adapters.headers import ResponseHeaders
from clusterrun.adapters.lifespan import Lifespan
from clusterrun.adapters.limits import Limits
from clusterrun.adapters.loading import LoadedApp, check_module_exists, load_app, put_app_dir_first
from clusterrun.adapters.proxy import ForwardedApp, Forwarding
from clusterrun.adapters.stack.deadline import with_deadline
from clusterrun.adapters.stack.guard import Guard, HeadClock
from clusterrun.adapters.stack.seam import OpenConnection, Stack, WebSocketLimits

from clusterrun.errors import BootError
from clusterrun.identity import WorkerInfo

__all__ = [
    "Admission",
    "ForwardedApp",
    "Forwarding",
    "Guard",
    "HeadClock",
    "Lifespan",
    "Limits",
    "LoadedApp",
    "OpenConnection", "ResponseHeaders",
    "SelectorLoop",
    "Stack",
    "WebSocketLimits",
    "as_asgi",
    "check_module_exists",
    "closing_app",
    "http_stack",
    "inline_engine",
    "inline_engine_available",
    "load_app",
    "preimport",
    "put_app_dir_first",
    "selector_loop",
    "stuck_threads",
    "with_deadline",
]


def stuck_threads(app: Any) -> int:
    """Threads of the WSGI bridge ``app`` still running app code for a request given up (--request-timeout)."""
    return int(getattr(app, "stuck_threads", 0))


def as_asgi(loaded: LoadedApp, *, threads: int, info: WorkerInfo, body_timeout: float | None = None,
            request_clock: RequestStamp | None = None) -> Any:
    """The app as an ASGI callable: an ASGI app as it is, a WSGI app behind the bridge (its reads of a body still
    arriving give up after ``body_timeout`` seconds of silence; with ``request_clock`` and one thread, its app code
    on the loop stamped there, for --request-timeout)."""
    if loaded.interface == "asgi":
        return loaded.app
    from clusterrun.adapters.stack.bridge import WSGIBridge

    return WSGIBridge(loaded.app, threads=threads, extra_environ={"clusterrun.worker": info},
                      body_timeout=body_timeout, request_clock=request_clock)


def inline_engine_available(loaded: LoadedApp, *, threads: int, http: str) -> bool:
    """Whether a worker serves ``loaded`` on the inline engine: a WSGI app called on the worker's thread
    (``--threads 1``), parsed by httptools (``--http h11`` keeps uvicorn's stack)."""
    if loaded.interface != "wsgi" or threads != 1 or http == "h11":
        return False
    try:
        import httptools  # noqa: F401
    except ImportError:
        if http == "httptools":
            raise BootError("--http httptools needs httptools: pip install 'clusterrun[standard]'") from None
        return False
    return True


def selector_loop() -> SelectorLoop:
    """The inline engine's loop: a selectors loop with asyncio's loop API, and no asyncio."""
    return SelectorLoop()


def inline_engine(
    loop: SelectorLoop, loaded: LoadedApp, *, info: WorkerInfo, limits: Limits, keep_alive: float,
    on_close: Callable[[int], object] | None, on_response: Callable[..., object] | None,
    headers: ResponseHeaders, forwarding: Forwarding | None, root_path: str,
    ssl_context: ssl.SSLContext | None = None, request_clock: RequestStamp | None = None,
) -> Any:
    """The inline WSGI engine (adapters.wsgi_engine.WSGIEngine) serving ``loaded`` on ``loop``; with
    ``ssl_context``, HTTPS (the handshake in this worker, adapters.tls_conn); with ``request_clock``, each
    stretch of app code stamped in it (--request-timeout, adapters.deadline)."""
    from clusterrun.adapters.engine.server import WSGIEngine

    return WSGIEngine(loop, loaded.app, limits=limits, keep_alive=keep_alive,
                      extra_environ={"clusterrun.worker": info}, on_close=on_close, on_response=on_response,
                      headers=headers, forwarding=forwarding, root_path=root_path, ssl_context=ssl_context,
                      request_clock=request_clock)


def http_stack(app: Any, *, http: str, access_log: bool, timeout_keep_alive: int, backlog: int,
               headers: ResponseHeaders | None = None, root_path: str = "",
               ws: WebSocketLimits | None = None) -> Stack:
    """uvicorn's HTTP protocols set up to serve ``app``; --http httptools without httptools is a BootError."""
    if http == "httptools":
        try:
            import httptools  # noqa: F401
        except ImportError:
            raise BootError("--http httptools needs httptools: pip install 'clusterrun[standard]'") from None
    fixed = (headers or ResponseHeaders()).fixed()
    return Stack(app, http=http, access_log=access_log, timeout_keep_alive=timeout_keep_alive, backlog=backlog,
                 headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in fixed],
                 root_path=root_path, ws=ws)


def preimport(http: str) -> None:
    """Import what serving needs in the primary before forking: workers start faster and share the pages."""
    from clusterrun.adapters.stack import bridge as wsgi  # noqa: F401

    with contextlib.suppress(ImportError):
        from clusterrun.adapters.engine import server as wsgi_engine  # noqa: F401

    http_stack(_NoApp(), http=http, access_log=False, timeout_keep_alive=5, backlog=1)  # the protocol classes


class _NoApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("placeholder app")


def closing_app(app: Any) -> Any:
    """The app, with ``Connection: close`` on every response: uvicorn then closes after responding."""

    async def closing(scope: Any, receive: Any, send: Any) -> None:
        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_closing)

    return closing
