"""The stack's door: what a worker serving on uvicorn's stack takes from adapters, in the one module that loads it.

The core's second and last way into adapters, beside clusterrun.adapters.entry: only clusterrun.worker.serving
imports it, and a worker imports that only once it has chosen the stack (an ASGI app, a WSGI app with
``--threads N`` or ``--http h11``); entry.preimport loads it in the primary where every worker will need it.
Everything uvicorn, and everything that needs asyncio, is reached from here; a WSGI worker on the inline engine
never imports it.
"""

from __future__ import annotations

from typing import Any

from clusterrun.adapters.deadline import RequestStamp
from clusterrun.adapters.headers import ResponseHeaders
from clusterrun.adapters.loading import LoadedApp
from clusterrun.adapters.stack.bridge import WSGIBridge
from clusterrun.adapters.stack.deadline import with_deadline
from clusterrun.adapters.stack.guard import Guard, HeadClock
from clusterrun.adapters.stack.lifespan import Lifespan
from clusterrun.adapters.stack.observing import Done, observed
from clusterrun.adapters.stack.proxied import naming_client
from clusterrun.adapters.stack.seam import OpenConnection, Stack, WebSocketLimits

from clusterrun.errors import BootError
from clusterrun.identity import WorkerInfo

__all__ = [
    "Done",
    "Guard",
    "HeadClock",
    "Lifespan",
    "OpenConnection",
    "Stack",
    "WebSocketLimits",
    "as_asgi",
    "closing_app",
    "http_stack",
    "naming_client",
    "observed",
    "preimport",
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
    return WSGIBridge(loaded.app, threads=threads, extra_environ={"clusterrun.worker": info},
                      body_timeout=body_timeout, request_clock=request_clock)


def http_stack(app: Any, *, http: str, access_log: bool, timeout_keep_alive: int, backlog: int,
               headers: ResponseHeaders | None = None, root_path: str = "",
               ws: WebSocketLimits | None = None, body_timeout: float | None = None,
               send_timeout: float | None = None, h2_max_streams: int = 100,
               h2_max_fields: int = 0) -> Stack:
    """The HTTP protocols --http names, set up to serve ``app``: clusterrun's own (auto and httptools, where
    httptools is installed; adapters.stack.http1), uvicorn's on httptools (uvicorn), uvicorn's on h11 (h11, or
    auto without httptools). --http httptools or uvicorn without httptools is a BootError."""
    protocol = "h11"
    if http != "h11":
        try:
            import httptools  # noqa: F401
        except ImportError:
            if http != "auto":
                raise BootError(f"--http {http} needs httptools: pip install httptools") from None
        else:
            protocol = "httptools" if http == "uvicorn" else "clusterrun"
    fixed = (headers or ResponseHeaders()).fixed()
    return Stack(app, protocol=protocol, access_log=access_log, timeout_keep_alive=timeout_keep_alive, backlog=backlog,
                 headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in fixed],
                 root_path=root_path, ws=ws, body_timeout=body_timeout, send_timeout=send_timeout,
                 h2_max_streams=h2_max_streams, h2_max_fields=h2_max_fields)


def preimport(http: str) -> None:
    """In the primary, before forking: the protocol classes ``http`` names, imported once and shared."""
    http_stack(_NoApp(), http=http, access_log=False, timeout_keep_alive=5, backlog=1)


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
